import os
import subprocess
import tempfile

from odoo.tests import TransactionCase, tagged

from ..engine.core.errors import RestoreError
from ..engine.db import pg
from ..engine.ops.odoozip import import_file
from ..engine.ops.restore import RestoreOptions
from .sqlsamples import QUEUE_JOB

MARKER = b"-- PostgreSQL database dump complete"


@tagged("post_install", "-at_install")
class TestImportOfAGenuineDatabase(TransactionCase):
    """This test database is a genuine Odoo 17 database (base, mail, web, this addon, as installed by Odoo): its
    dump, with OCA queue_job's trigger, imports through the guard and the catalog check with nothing refused."""

    def setUp(self):
        super().setUp()
        self.pg = self.env["spp.backup.engine"]._pg()
        self.folder = tempfile.mkdtemp(prefix="spp_backup_genuine_")
        self.target = "%s_genuine_%d" % (self.env.cr.dbname[:30], os.getpid())
        self.addCleanup(self.drop_target)

    def drop_target(self):
        with pg.maintenance(self.pg) as conn, conn.cursor() as cr:
            cr.execute('DROP DATABASE IF EXISTS "%s" WITH (FORCE)' % self.target)
        subprocess.run(["rm", "-rf", self.folder], check=False)

    def dump(self, extra=b""):
        out = subprocess.run(
            [pg.tool(self.pg, "pg_dump"), "--no-owner", "--dbname=%s" % pg.conninfo_dbname(self.env.cr.dbname)],
            capture_output=True,
            check=True,
            env=self.pg.env(),
        ).stdout
        at = out.rindex(MARKER)
        path = os.path.join(self.folder, "dump.sql")
        with open(path, "wb") as handle:
            handle.write(out[:at] + extra + b"\n" + out[at:])
        return path

    def options(self):
        return RestoreOptions(target_db=self.target, pg=self.pg, data_dir=self.folder, include_filestore=False)

    def test_genuine_database_with_queue_job_imports_without_accepting_code(self):
        """Odoo's own objects (trigram indexes, sequences, constraints) and queue_job's notify trigger are known:
        no refusal, no --accept-code needed, the trigger is there afterwards."""
        result = import_file(self.dump(QUEUE_JOB.encode()), self.options())
        self.assertFalse([w for w in result.warnings if "accept-code" in w], result.warnings)
        with pg.cursor(self.pg, self.target) as cr:
            cr.execute("SELECT count(*) FROM pg_trigger WHERE tgname = 'queue_job_notify'")
            self.assertEqual(cr.fetchone()[0], 1)
            cr.execute("SELECT count(*) FROM res_users")
            self.assertGreater(cr.fetchone()[0], 0)

    def test_one_changed_word_in_queue_job_is_refused(self):
        """The allow-list holds queue_job's definition, not its name: the same function notifying another channel
        is another definition, refused by kind and name, and nothing is left."""
        changed = QUEUE_JOB.replace("pg_notify('queue_job', NEW.uuid)", "pg_notify('queue_job', NEW.state)")
        with self.assertRaises(RestoreError) as caught:
            import_file(self.dump(changed.encode()), self.options())
        self.assertIn("function public.queue_job_notify()", str(caught.exception))
        with pg.maintenance(self.pg) as conn, conn.cursor() as cr:
            cr.execute("SELECT count(*) FROM pg_database WHERE datname LIKE %s", (self.target + "%",))
            self.assertEqual(cr.fetchone()[0], 0)
