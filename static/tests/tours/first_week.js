/** @odoo-module */
// An administrator's first week, through the web client only: a destination
// tested, a first encrypted policy, a backup watched to Done, verified,
// restored into a new database, drilled, and the dashboard.
//
// The test (tests/test_backup_tour.py) gives the values in
// window.sppBackupTour and answers two signals logged on the console:
// "screenshot <name>" (it saves the page, then sets
// document.body.dataset.sppTourShot to <name>) and "work" (its worker runs
// what is queued while this page stays open).

import { registry } from "@web/core/registry";

const SIGNAL = "spp_backup_tour:";

function params() {
    if (!window.sppBackupTour) {
        // Set by the test before the tour starts: gone only if the page was reloaded.
        console.error("The tour's values are gone: the page was reloaded.");
        return {};
    }
    return window.sppBackupTour;
}

function signal(what) {
    console.log(SIGNAL + what);
}

function waitFor(condition, what, timeout = 20000) {
    const started = Date.now();
    return new Promise((resolve, reject) => {
        (function poll() {
            if (condition()) {
                resolve();
            } else if (Date.now() - started > timeout) {
                reject(new Error(`Timed out waiting for ${what}`));
            } else {
                setTimeout(poll, 50);
            }
        })();
    });
}

/** A screenshot of the page once ``trigger`` is visible; the next step waits until it is saved. */
function screenshot(name, trigger) {
    return {
        content: `Screenshot ${name}`,
        trigger,
        isCheck: true,
        async run() {
            signal(`screenshot ${name}`);
            await waitFor(() => document.body.dataset.sppTourShot === name, `screenshot ${name}`);
        },
    };
}

/**
 * The dialog that just opened has a body that shows ``selector`` (an error or empty dialog fails).
 * While a dialog is open, the tour looks for triggers inside it.
 */
function dialogShows(content, selector) {
    return {
        content,
        trigger: `.modal-content:not(.o_error_dialog) .modal-body:not(:empty) ${selector}`,
        isCheck: true,
    };
}

/** Let the worker run what is queued, once the page shows ``trigger`` (the state before the worker). */
function work(content, trigger) {
    return {
        content,
        trigger,
        isCheck: true,
        run() {
            signal("work");
        },
    };
}

/** The page was not reloaded since the tour began: the open form followed the worker by itself. */
function notReloaded() {
    params();
}

function menu(xmlid) {
    return `.o_main_navbar [data-menu-xmlid="spp_backup.${xmlid}"]`;
}

const WAIT_FOR_WORKER = 240000;

registry.category("web_tour.tours").add("spp_backup_first_week", {
    test: true,
    url: "/web",
    steps: () => {
        const { destination, policy } = params();
        return [
            {
                content: "Fail at once on any error dialog (a traceback or a refused action)",
                trigger: ".o_main_navbar",
                run() {
                    console.log(`spp_backup tour viewport: ${window.innerWidth}x${window.innerHeight}`);
                    new MutationObserver(() => {
                        const error = document.querySelector(".o_error_dialog");
                        if (error && !window.sppBackupTourErrorSeen) {
                            window.sppBackupTourErrorSeen = true;
                            console.error(`An error dialog opened: ${error.innerText}`);
                        }
                    }).observe(document.body, { childList: true, subtree: true });
                },
            },
            // 1. A destination, tested.
            {
                content: "Open the apps menu",
                trigger: ".o_navbar_apps_menu button",
            },
            {
                content: "Open Backup & Recovery",
                trigger: '.o_app[data-menu-xmlid="spp_backup.menu_spp_backup_root"]',
            },
            // 0. Point-in-time recovery: the server the worker protects (its report is written by the test), and
            // the window that restores a database to a second (opened and closed: no archive here to restore from).
            {
                content: "Point-in-time recovery",
                trigger: menu("menu_spp_backup_pitr"),
            },
            {
                content: "Open the protected server",
                trigger: `.o_list_view .o_data_row .o_data_cell:contains(${params().pitrServer})`,
            },
            screenshot("00_pitr_server", '.o_form_view div[name="window_text"]:contains(any second from)'),
            {
                content: "Restore a database to a second",
                trigger: '.o_statusbar_buttons button[name="action_restore_to_second"]',
            },
            dialogShows("The window shows the restorable seconds", 'div[name="window_text"]:contains(any second from)'),
            screenshot("00_pitr_restore_to_a_second", '.modal-content div[name="to_time"]'),
            {
                content: "Close it",
                trigger: ".modal-footer button:contains(Cancel)",
            },
            {
                content: "Closed",
                trigger: "body:not(:has(.modal-content))",
                isCheck: true,
            },
            {
                content: "Configuration",
                trigger: menu("menu_spp_backup_config"),
            },
            {
                content: "Destinations",
                trigger: menu("menu_spp_backup_destination"),
            },
            {
                content: "New destination",
                trigger: ".o_list_button_add",
                extra_trigger: ".o_breadcrumb:contains(Destinations)",
            },
            {
                content: "Name it",
                trigger: 'div[name="name"] input',
                run(actions) {
                    actions.text(params().destination, this.$anchor);
                },
            },
            {
                content: "Local folder is the default kind",
                trigger: 'div[name="kind"] select',
                run() {
                    if (this.$anchor.val() !== '"local"') {
                        console.error(`The destination kind is ${this.$anchor.val()}, not local`);
                    }
                },
            },
            {
                content: "The folder the backups go to",
                trigger: 'div[name="path"] input',
                run(actions) {
                    actions.text(params().path, this.$anchor);
                },
            },
            {
                content: "Save",
                trigger: ".o_form_button_save",
            },
            {
                content: "Test",
                trigger: '.o_form_saved .o_statusbar_buttons button[name="action_test"]',
            },
            {
                content: "The test says the destination works",
                trigger: ".o_notification:contains(works):contains(Wrote, read back and deleted a probe file)",
                isCheck: true,
            },
            screenshot("01_destination_tested", ".o_notification:contains(works)"),
            // 2. The first policy, encrypted to the administrator's age key.
            {
                content: "Policies",
                trigger: menu("menu_spp_backup_policy"),
            },
            {
                content: "New policy",
                trigger: ".o-kanban-button-new",
                extra_trigger: ".o_breadcrumb:contains(Backup policies)",
            },
            {
                content: "Name it",
                trigger: 'div[name="name"] input',
                run(actions) {
                    actions.text(params().policy, this.$anchor);
                },
            },
            {
                content: "The database is this Odoo's",
                trigger: 'div[name="database"] input',
                run() {
                    if (this.$anchor.val() !== params().database) {
                        console.error(`The policy's database is ${this.$anchor.val()}, not ${params().database}`);
                    }
                },
            },
            {
                content: "Destinations tab",
                trigger: '.o_notebook a.nav-link[name="destinations"]',
            },
            {
                content: "Add a destination",
                trigger: 'div[name="destination_ids"] .o_field_x2many_list_row_add a',
            },
            dialogShows("The destinations to choose from", ".o_data_row"),
            {
                content: "Choose the tested destination",
                trigger: `.o_data_row:contains(${destination}) td.o_data_cell[name="name"]`,
                extra_trigger: `.o_data_row:contains(${destination})`,
            },
            {
                content: "The destination is on the policy",
                trigger: `div[name="destination_ids"] .o_data_row:contains(${destination})`,
                extra_trigger: "body:not(:has(.o_dialog))",
                isCheck: true,
            },
            {
                content: "Encryption & signing tab",
                trigger: '.o_notebook a.nav-link[name="encryption"]',
            },
            {
                content: "Encryption is on by default",
                trigger: 'div[name="encrypt"] input:checked',
                isCheck: true,
            },
            {
                content: "Paste the age public key made on the host that restores",
                trigger: 'div[name="age_recipients"] textarea',
                run(actions) {
                    actions.text(params().recipient, this.$anchor);
                },
            },
            {
                content: "Sign is on: odoo.conf names the server's signing key file",
                trigger: 'div[name="sign"] input:checked',
                isCheck: true,
            },
            {
                content: "The policy says the server has no signing key yet",
                trigger: 'div[name="signing_status"]:contains(no signing key yet)',
                isCheck: true,
            },
            screenshot("02_policy_encryption", 'div[name="age_recipients"] textarea'),
            {
                content: "Save",
                trigger: ".o_form_button_save",
            },
            // The server's signing key, made by the server into the file odoo.conf names.
            {
                content: "Open the server's signing key",
                trigger: '.o_form_saved button[name="action_open_signing_key"]',
            },
            dialogShows("The signing key dialog says it is not made yet", ".o_spp_signing_missing"),
            {
                content: "Make the signing key",
                trigger: '.modal-footer button[name="action_make_key"]',
            },
            dialogShows("The dialog shows the new public key", ".o_spp_signing_public_key:contains(=)"),
            dialogShows("The policy is listed as signing with it", `.o_data_row:contains(${policy})`),
            screenshot("03_signing_key_made", ".modal-body .o_spp_signing_public_key"),
            {
                content: "Close the dialog",
                trigger: ".modal-footer button.btn-secondary:contains(Close)",
            },
            {
                content: "Back on the policy",
                trigger: ".o_form_saved",
                extra_trigger: "body:not(:has(.modal))",
                isCheck: true,
            },
            // 3. Back up now, watched to Done on the open form.
            {
                content: "Back up now",
                trigger: '.o_form_saved .o_statusbar_buttons button[name="action_backup_now"]',
            },
            dialogShows(
                "The confirmation says what is backed up and how",
                "p:contains(Encrypted with age to 1 recipient key):contains(The manifest is signed)"
            ),
            screenshot("04_back_up_now", ".modal-body p:contains(Encrypted with age)"),
            {
                content: "Confirm",
                trigger: '.modal-footer button[name="action_confirm"]',
            },
            {
                content: "The job is queued and the form follows it",
                trigger: '.o_form_view .o_arrow_button_current[data-value="queued"]',
                isCheck: true,
                run() {
                    if (!document.querySelector(".o_form_view .o_spp_backup_run_live")) {
                        console.error("The job form has no live widget.");
                    }
                    window.sppBackupTourJobForm = document.querySelector(".o_form_view");
                },
            },
            screenshot("05_job_queued", '.o_form_view .alert-info:contains(The backup worker runs this)'),
            work("The worker takes the backup", '.o_form_view .o_arrow_button_current[data-value="queued"]'),
            {
                content: "The same open form reaches Done",
                trigger: '.o_form_view .o_arrow_button_current[data-value="done"]',
                timeout: WAIT_FOR_WORKER,
                isCheck: true,
                run() {
                    notReloaded();
                    if (!document.contains(window.sppBackupTourJobForm)) {
                        console.error("The job form was replaced instead of following the job.");
                    }
                },
            },
            screenshot("06_job_done", '.o_form_view div[name="total_size_human"]'),
            // 4. Verify.
            {
                content: "Verify",
                trigger: '.o_statusbar_buttons button[name="action_verify"]',
            },
            work("The worker verifies", '.o_form_view div[name="verify_state"] .badge:contains(Verifying)'),
            {
                content: "The job is verified",
                trigger: '.o_form_view div[name="verify_state"] .badge:contains(Verified)',
                timeout: WAIT_FOR_WORKER,
                isCheck: true,
                run: notReloaded,
            },
            {
                content: "Verification tab",
                trigger: '.o_notebook a.nav-link[name="verification"]',
            },
            {
                content: "Every artifact was decrypted and decompressed",
                trigger: 'div[name="verify_report"]:contains(every artifact was decrypted and decompressed)',
                isCheck: true,
            },
            screenshot("07_job_verified", 'div[name="verify_report"]'),
            // 5. Restore into a new database.
            {
                content: "Restore…",
                trigger: '.o_statusbar_buttons button[name="action_restore"]',
            },
            dialogShows("The restore wizard", 'div[name="target_db"] input'),
            {
                content: "A new database is the default",
                trigger: 'div[name="target_mode"] input[data-value="new"]:checked',
                isCheck: true,
            },
            {
                content: "Name the new database",
                trigger: 'div[name="target_db"] input',
                run(actions) {
                    actions.text(params().restoreDb, this.$anchor);
                },
            },
            screenshot("08_restore_wizard", 'div[name="target_db"] input'),
            {
                content: "Check",
                trigger: '.modal-footer button[name="action_check"]',
            },
            dialogShows("The wizard says the worker reads the backup back", ".alert-info:contains(reading the whole backup back)"),
            screenshot("09_restore_checking", ".alert-info:contains(reading the whole backup back)"),
            work("The worker reads the backup back", ".alert-info:contains(reading the whole backup back)"),
            {
                content: "Every check passed, in the same open window",
                trigger: ".alert-success:contains(Every check passed)",
                timeout: WAIT_FOR_WORKER,
                isCheck: true,
                run: notReloaded,
            },
            {
                content: "The identity on this host can decrypt",
                trigger: 'div[name="check_report"]:contains(identity file configured on this server is readable)',
                isCheck: true,
            },
            screenshot("10_restore_checked", ".alert-success:contains(Every check passed)"),
            {
                content: "Restore",
                trigger: '.modal-footer button[name="action_run"]:contains(Restore)',
            },
            work("The worker restores", '.o_form_view .o_arrow_button_current[data-value="queued"]'),
            {
                content: "The restore is done",
                trigger: '.o_form_view .o_arrow_button_current[data-value="done"]',
                extra_trigger: `.o_form_view div[name="target_db"]:contains(${params().restoreDb})`,
                timeout: WAIT_FOR_WORKER,
                isCheck: true,
                run: notReloaded,
            },
            screenshot("11_restore_done", '.o_form_view div[name="duration_text"]'),
            // 6. A restore drill.
            {
                content: "Policies",
                trigger: menu("menu_spp_backup_policy"),
            },
            {
                content: "Open the policy",
                trigger: `.o_kanban_record:contains(${policy})`,
            },
            {
                content: "Drill now",
                trigger: '.o_statusbar_buttons button[name="action_drill_now"]',
            },
            dialogShows("The drill asks for confirmation", ":contains(Restore the newest good backup)"),
            {
                content: "Confirm the drill",
                trigger: ".modal-footer .btn-primary",
            },
            work("The worker drills", '.o_form_view .o_arrow_button_current[data-value="queued"]'),
            {
                content: "The drill passed",
                trigger: ".o_form_view .ribbon:contains(Passed)",
                timeout: WAIT_FOR_WORKER,
                isCheck: true,
                run: notReloaded,
            },
            screenshot("12_drill_passed", ".o_form_view .ribbon:contains(Passed)"),
            // 7. The dashboard.
            {
                content: "Policies",
                trigger: menu("menu_spp_backup_policy"),
            },
            {
                content: "The policy's card: backups OK, RPO and RTO met, last drill passed",
                trigger: [
                    `.o_kanban_record:contains(${policy})`,
                    ':has(div[name="state"] .badge:contains(OK))',
                    ':has(div[name="rpo_status"] .badge:contains(Met))',
                    ':has(div[name="rto_status"] .badge:contains(Met))',
                    ':has(div[name="last_drill_state"] .badge:contains(Passed))',
                ].join(""),
                isCheck: true,
            },
            screenshot("13_dashboard", `.o_kanban_record:contains(${policy})`),
        ];
    },
});
