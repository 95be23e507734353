/** @odoo-module */
// Keeps a job, restore, drill or run form up to date while the backup worker
// works on it: the worker and Odoo post "spp_backup.run" notifications on the
// bus channel "spp_backup_runs"; a slow poll covers a missed notification.

import { registry } from "@web/core/registry";
import { useBus, useService } from "@web/core/utils/hooks";
import { standardWidgetProps } from "@web/views/widgets/standard_widget_props";
import { Component, EventBus, onWillUnmount, xml } from "@odoo/owl";

const POLL_MS = 5000;

const runLiveService = {
    dependencies: ["bus_service"],
    start(env, { bus_service }) {
        const bus = new EventBus();
        let listening = false;
        return {
            bus,
            listen() {
                if (listening) {
                    return;
                }
                listening = true;
                bus_service.addChannel("spp_backup_runs");
                bus_service.subscribe("spp_backup.run", (payload) => bus.trigger("run", payload));
            },
        };
    },
};
registry.category("services").add("spp_backup_run_live", runLiveService);

export class RunLive extends Component {
    static template = xml`<span class="o_spp_backup_run_live d-none"/>`;
    static props = { ...standardWidgetProps };

    setup() {
        const live = useService("spp_backup_run_live");
        live.listen();
        useBus(live.bus, "run", (ev) => this.onRun(ev.detail));
        this.timer = setInterval(() => this.reload(), POLL_MS);
        onWillUnmount(() => clearInterval(this.timer));
    }

    get inProgress() {
        const data = this.props.record.data;
        return ["queued", "running"].includes(data.state) || data.verify_state === "verifying" || data.step === "checking";
    }

    onRun(payload) {
        const record = this.props.record;
        const mine =
            (payload.res_model === record.resModel && payload.res_id === record.resId) ||
            (record.resModel === "spp.backup.run" && payload.id === record.resId);
        if (mine || this.inProgress) {
            this.reload(true);
        }
    }

    async reload(force = false) {
        const record = this.props.record;
        if (!record.resId || (!force && !this.inProgress)) {
            return;
        }
        if (await record.isDirty()) {
            return;
        }
        await record.load();
    }
}

registry.category("view_widgets").add("spp_backup_run_live", { component: RunLive });
