/** @odoo-module */
// An administrator's first week, through the web client only: a destination
// tested, a first encrypted policy, a backup watched to Done, verified,
// restored into a new database, drilled, and the dashboard.
//
// The same steps as the Odoo 17 tour (static/tests/tours/first_week.js at the
// repository root), in Odoo 19's tour language: a step does nothing unless it
// says "run" (no default click), extra_trigger is gone (a check of its own
// comes first), inputs are filled with "edit", and no step waits more than
// 60 s (a worker's round is awaited by the step that asks for it).
//
// The test (tests/test_backup_tour.py) gives the values in
// window.sppBackupTour and answers two signals logged on the console:
// "screenshot <name>" (it saves the page, then sets
// document.body.dataset.sppTourShot to <name>) and "work" (its worker runs
// what is queued while this page stays open, then sets
// document.body.dataset.sppTourWorked to the number of rounds done).

import { registry } from "@web/core/registry";

const SIGNAL = "spp_backup_tour:";
const STEP_TIMEOUT = 60000;
const WORKER_ROUND = 55000;

/**
 * The test's values. Odoo 19 builds the steps once to tell that the tour is ready, before the test sets
 * them, and again when the tour starts: only the steps of the second time run, and they check it.
 */
function params() {
    return window.sppBackupTour || {};
}

function checkParams() {
    if (!window.sppBackupTour) {
        // Set by the test before the tour starts: gone only if the page was reloaded.
        console.error("The tour's values are gone: the page was reloaded.");
    }
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

function click(content, trigger) {
    return { content, trigger, run: "click" };
}

function check(content, trigger) {
    return { content, trigger };
}

/** A screenshot of the page once ``trigger`` is visible; the next step waits until it is saved. */
function screenshot(name, trigger) {
    return {
        content: `Screenshot ${name}`,
        trigger,
        async run() {
            signal(`screenshot ${name}`);
            await waitFor(() => document.body.dataset.sppTourShot === name, `screenshot ${name}`);
        },
    };
}

/** The dialog that just opened has a body that shows ``selector`` (an error or empty dialog fails). */
function dialogShows(content, selector) {
    return check(content, `.modal-content:not(.o_error_dialog) .modal-body:not(:empty) ${selector}`);
}

// A step that runs code on its trigger needs an enabled element: the current stage of a status bar is a disabled
// button, so such steps look for the form that shows it.

let rounds = 0;

/** Let the worker run what is queued, once the page shows ``trigger`` (the state before the worker). */
function work(content, trigger) {
    return {
        content,
        trigger,
        async run() {
            rounds += 1;
            const round = rounds;
            signal("work");
            await waitFor(
                () => Number(document.body.dataset.sppTourWorked || 0) >= round,
                `the worker's round ${round}`,
                WORKER_ROUND
            );
        },
    };
}

/** The page was not reloaded since the tour began: the open form followed the worker by itself. */
function notReloaded() {
    checkParams();
}

/** A menu of the app: in the navbar, or in the dropdown Odoo 19 opens in an overlay outside it. */
function menu(xmlid) {
    return `[data-menu-xmlid="spp_backup.${xmlid}"]`;
}

registry.category("web_tour.tours").add("spp_backup_first_week", {
    url: "/odoo",
    steps: () => {
        const { destination, policy, path, recipient, restoreDb, database } = params();
        rounds = 0;
        return [
            {
                content: "Fail at once on any error dialog (a traceback or a refused action)",
                trigger: ".o_main_navbar",
                run() {
                    checkParams();
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
            click("Open the apps menu", ".o_navbar_apps_menu button"),
            click("Open Backup & Recovery", '.o_app[data-menu-xmlid="spp_backup.menu_spp_backup_root"]'),
            // 0. Point-in-time recovery: the server the worker protects (its report is written by the test), and
            // the window that restores a database to a second (opened and closed: no archive here to restore from).
            click("Point-in-time recovery", menu("menu_spp_backup_pitr")),
            click("Open the protected server", `.o_list_view .o_data_row .o_data_cell:contains(${params().pitrServer})`),
            screenshot("00_pitr_server", '.o_form_view div[name="window_text"]:contains(any second from)'),
            click("Restore a database to a second", '.o_statusbar_buttons button[name="action_restore_to_second"]'),
            dialogShows("The window shows the restorable seconds", 'div[name="window_text"]:contains(any second from)'),
            screenshot("00_pitr_restore_to_a_second", '.modal-content div[name="to_time"]'),
            click("Close it", ".modal-footer button:contains(Cancel)"),
            check("Closed", "body:not(:has(.modal-content))"),
            click("Configuration", menu("menu_spp_backup_config")),
            click("Destinations", menu("menu_spp_backup_destination")),
            check("The destinations are listed", ".o_breadcrumb:contains(Destinations)"),
            click("New destination", ".o_list_button_add"),
            { content: "Name it", trigger: 'div[name="name"] input', run: `edit ${destination}` },
            {
                content: "Local folder is the default kind",
                trigger: 'div[name="kind"] input',
                run() {
                    if (this.anchor.value !== "Local or mounted directory") {
                        console.error(`The destination kind is ${this.anchor.value}, not local`);
                    }
                },
            },
            { content: "The folder the backups go to", trigger: 'div[name="path"] input', run: `edit ${path}` },
            click("Save", ".o_form_button_save"),
            click("Test", '.o_form_saved .o_statusbar_buttons button[name="action_test"]'),
            check(
                "The test says the destination works",
                ".o_notification:contains(works):contains(Wrote, read back and deleted a probe file)"
            ),
            screenshot("01_destination_tested", ".o_notification:contains(works)"),
            // 2. The first policy, encrypted to the administrator's age key.
            click("Policies", menu("menu_spp_backup_policy")),
            check("The policies are shown", ".o_breadcrumb:contains(Backup policies)"),
            click("New policy", ".o-kanban-button-new"),
            { content: "Name it", trigger: 'div[name="name"] input', run: `edit ${policy}` },
            {
                content: "The database is this Odoo's",
                trigger: 'div[name="database"] input',
                run() {
                    if (this.anchor.value !== database) {
                        console.error(`The policy's database is ${this.anchor.value}, not ${database}`);
                    }
                },
            },
            click("Destinations tab", '.o_notebook a.nav-link[name="destinations"]'),
            click("Add a destination", 'div[name="destination_ids"] .o_field_x2many_list_row_add a'),
            dialogShows("The destinations to choose from", `.o_data_row:contains(${destination})`),
            click("Choose the tested destination", `.o_data_row:contains(${destination}) td.o_data_cell[name="name"]`),
            check("The dialog closed", "body:not(:has(.o_dialog))"),
            check("The destination is on the policy", `div[name="destination_ids"] .o_data_row:contains(${destination})`),
            click("Encryption & signing tab", '.o_notebook a.nav-link[name="encryption"]'),
            check("Encryption is on by default", 'div[name="encrypt"] input:checked'),
            {
                content: "Paste the age public key made on the host that restores",
                trigger: 'div[name="age_recipients"] textarea',
                run: `edit ${recipient}`,
            },
            check("Sign is on: odoo.conf names the server's signing key file", 'div[name="sign"] input:checked'),
            check(
                "The policy says the server has no signing key yet",
                'div[name="signing_status"]:contains(no signing key yet)'
            ),
            screenshot("02_policy_encryption", 'div[name="age_recipients"] textarea'),
            click("Save", ".o_form_button_save"),
            // The server's signing key, made by the server into the file odoo.conf names.
            click("Open the server's signing key", '.o_form_saved button[name="action_open_signing_key"]'),
            dialogShows("The signing key dialog says it is not made yet", ".o_spp_signing_missing"),
            click("Make the signing key", '.modal-footer button[name="action_make_key"]'),
            dialogShows("The dialog shows the new public key", ".o_spp_signing_public_key:contains(=)"),
            dialogShows("The policy is listed as signing with it", `.o_data_row:contains(${policy})`),
            screenshot("03_signing_key_made", ".modal-body .o_spp_signing_public_key"),
            click("Close the dialog", ".modal-footer button.btn-secondary:contains(Close)"),
            check("The dialog is closed", "body:not(:has(.modal))"),
            check("Back on the policy", ".o_form_saved"),
            // 3. Back up now, watched to Done on the open form.
            click("Back up now", '.o_form_saved .o_statusbar_buttons button[name="action_backup_now"]'),
            dialogShows(
                "The confirmation says what is backed up and how",
                "p:contains(Encrypted with age to 1 recipient key):contains(The manifest is signed)"
            ),
            screenshot("04_back_up_now", ".modal-body p:contains(Encrypted with age)"),
            click("Confirm", '.modal-footer button[name="action_confirm"]'),
            {
                content: "The job is queued and the form follows it",
                trigger: '.o_form_view:has(.o_arrow_button_current[data-value="queued"])',
                run() {
                    if (!document.querySelector(".o_form_view .o_spp_backup_run_live")) {
                        console.error("The job form has no live widget.");
                    }
                    window.sppBackupTourJobForm = document.querySelector(".o_form_view");
                },
            },
            screenshot("05_job_queued", ".o_form_view .alert-info:contains(The backup worker runs this)"),
            work("The worker takes the backup", '.o_form_view:has(.o_arrow_button_current[data-value="queued"])'),
            {
                content: "The same open form reaches Done",
                trigger: '.o_form_view:has(.o_arrow_button_current[data-value="done"])',
                timeout: STEP_TIMEOUT,
                run() {
                    notReloaded();
                    if (!document.contains(window.sppBackupTourJobForm)) {
                        console.error("The job form was replaced instead of following the job.");
                    }
                },
            },
            screenshot("06_job_done", '.o_form_view div[name="total_size_human"]'),
            // 4. Verify.
            click("Verify", '.o_statusbar_buttons button[name="action_verify"]'),
            work("The worker verifies", '.o_form_view div[name="verify_state"] .badge:contains(Verifying)'),
            {
                content: "The job is verified",
                trigger: '.o_form_view div[name="verify_state"] .badge:contains(Verified)',
                timeout: STEP_TIMEOUT,
                run: notReloaded,
            },
            click("Verification tab", '.o_notebook a.nav-link[name="verification"]'),
            check(
                "Every artifact was decrypted and decompressed",
                'div[name="verify_report"]:contains(every artifact was decrypted and decompressed)'
            ),
            screenshot("07_job_verified", 'div[name="verify_report"]'),
            // 5. Restore into a new database.
            click("Restore…", '.o_statusbar_buttons button[name="action_restore"]'),
            dialogShows("The restore wizard", 'div[name="target_db"] input'),
            check("A new database is the default", 'div[name="target_mode"] input[data-value="new"]:checked'),
            { content: "Name the new database", trigger: 'div[name="target_db"] input', run: `edit ${restoreDb}` },
            screenshot("08_restore_wizard", 'div[name="target_db"] input'),
            click("Check", '.modal-footer button[name="action_check"]'),
            dialogShows(
                "The wizard says the worker reads the backup back",
                ".alert-info:contains(reading the whole backup back)"
            ),
            screenshot("09_restore_checking", ".alert-info:contains(reading the whole backup back)"),
            work("The worker reads the backup back", ".alert-info:contains(reading the whole backup back)"),
            {
                content: "Every check passed, in the same open window",
                trigger: ".alert-success:contains(Every check passed)",
                timeout: STEP_TIMEOUT,
                run: notReloaded,
            },
            check(
                "The identity on this host can decrypt",
                'div[name="check_report"]:contains(identity file configured on this server is readable)'
            ),
            screenshot("10_restore_checked", ".alert-success:contains(Every check passed)"),
            click("Restore", '.modal-footer button[name="action_run"]:contains(Restore)'),
            work("The worker restores", '.o_form_view:has(.o_arrow_button_current[data-value="queued"])'),
            check("The restore names the new database", `.o_form_view div[name="target_db"]:contains(${restoreDb})`),
            {
                content: "The restore is done",
                trigger: '.o_form_view:has(.o_arrow_button_current[data-value="done"])',
                timeout: STEP_TIMEOUT,
                run: notReloaded,
            },
            screenshot("11_restore_done", '.o_form_view div[name="duration_text"]'),
            // 6. A restore drill.
            click("Policies", menu("menu_spp_backup_policy")),
            click("Open the policy", `.o_kanban_record:contains(${policy})`),
            click("Drill now", '.o_statusbar_buttons button[name="action_drill_now"]'),
            dialogShows("The drill asks for confirmation", ":contains(Restore the newest good backup)"),
            click("Confirm the drill", ".modal-footer .btn-primary"),
            work("The worker drills", '.o_form_view:has(.o_arrow_button_current[data-value="queued"])'),
            {
                content: "The drill passed",
                trigger: ".o_form_view .ribbon:contains(Passed)",
                timeout: STEP_TIMEOUT,
                run: notReloaded,
            },
            screenshot("12_drill_passed", ".o_form_view .ribbon:contains(Passed)"),
            // 7. The dashboard.
            click("Policies", menu("menu_spp_backup_policy")),
            check(
                "The policy's card: backups OK, RPO and RTO met, last drill passed",
                [
                    `.o_kanban_record:contains(${policy})`,
                    ':has(div[name="state"] .badge:contains(OK))',
                    ':has(div[name="rpo_status"] .badge:contains(Met))',
                    ':has(div[name="rto_status"] .badge:contains(Met))',
                    ':has(div[name="last_drill_state"] .badge:contains(Passed))',
                ].join("")
            ),
            screenshot("13_dashboard", `.o_kanban_record:contains(${policy})`),
        ];
    },
});
