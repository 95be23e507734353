"""Installing the addon on a new database, with and without Odoo's demo data, as an administrator would."""

import tempfile

from conftest import OdooServer


def install_log(demo):
    """What Odoo logged while installing spp_backup on a new database (with or without demo data)."""
    server = OdooServer(tempfile.mkdtemp(prefix="spp_backup_install_"))
    try:
        if demo:
            # Odoo 17 loads demo data unless told not to; Odoo 19 only when told to.
            server.write_conf(without_demo="False")
        server.install()
        with open(server.log, encoding="utf-8", errors="replace") as handle:
            log = handle.read()
        demo_loaded = server.query("SELECT demo FROM ir_module_module WHERE name = 'base'")[0][0]
    finally:
        server.destroy()
    return log, demo_loaded


def test_install_with_and_without_demo_data_logs_no_warning():
    """Neither install logs a warning, an error or a traceback (Odoo's own or the addon's)."""
    for demo in (False, True):
        log, demo_loaded = install_log(demo)
        assert demo_loaded is demo, "control: demo data loaded as asked"
        assert "Modules loaded." in log or "modules loaded" in log.lower(), log[-2000:]
        problems = [
            line
            for line in log.splitlines()
            if " WARNING " in line or " ERROR " in line or " CRITICAL " in line or line.startswith("Traceback")
        ]
        assert problems == [], "demo=%s:\n%s" % (demo, "\n".join(problems))
