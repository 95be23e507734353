# Plain pytest also imports this package when it collects tests/engine/; the
# Odoo tests are only imported when Odoo loads the addon.
if __name__.startswith("odoo.addons."):
    from . import (  # noqa: F401
        test_backup_alerts,
        test_backup_chatter,
        test_backup_collect,
        test_backup_destination,
        test_backup_drill,
        test_backup_end_to_end,
        test_backup_import_code,
        test_backup_incremental,
        test_backup_inflight,
        test_backup_job,
        test_backup_keys,
        test_backup_metrics,
        test_backup_no_email,
        test_backup_offsite,
        test_backup_policy,
        test_backup_restore,
        test_backup_retention,
        test_backup_rpc,
        test_backup_schedule,
        test_backup_security,
        test_backup_server_fields,
        test_backup_tour,
        test_backup_ui,
        test_backup_unsigned,
    )
