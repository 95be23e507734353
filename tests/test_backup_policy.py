import datetime
import os
from unittest.mock import patch

from odoo import fields, release
from odoo.exceptions import UserError, ValidationError
from odoo.tests import tagged
from odoo.tools import config as odoo_config

from ..engine.core import states
from ..engine.io import crypto
from ..models.backup_policy import LOCK_NAMESPACE, next_slot
from .common import BackupCase


@tagged("post_install", "-at_install")
class TestBackupPolicy(BackupCase):
    def test_defaults(self):
        """A new policy backs up this database, everything included, and has never run."""
        policy = self.Policy.create(
            {"name": "Defaults", "destination_ids": [(6, 0, self.destination.ids)], "age_recipients": self.recipient}
        )
        self.assertEqual(policy.database, self.env.cr.dbname)
        self.assertTrue(policy.encrypt, "encryption is on by default")
        self.assertIsNone(policy._retention_dict(), "a new policy deletes nothing")
        self.assertTrue(policy.include_database)
        self.assertTrue(policy.include_filestore)
        self.assertTrue(policy.include_application)
        self.assertEqual((policy.interval_number, policy.interval_type), (1, "days"))
        self.assertEqual(policy.state, "never")
        self.assertFalse(policy.last_success_at)

    def test_next_run_computed_on_create(self):
        """next_run is the first slot after now at the policy's time of day (its time zone here is UTC)."""
        before = fields.Datetime.now()
        self.assertGreater(self.policy.next_run, before - datetime.timedelta(seconds=1))
        self.assertLessEqual(self.policy.next_run, before + datetime.timedelta(days=1))
        self.assertEqual((self.policy.next_run.hour, self.policy.next_run.minute), (2, 30))

    def test_next_run_given_is_kept_and_schedule_change_recomputes(self):
        """A next_run given at creation is kept; changing the schedule recomputes it."""
        wanted = datetime.datetime(2030, 1, 1, 5, 0)
        policy = self.Policy.create(
            {
                "name": "Given",
                "destination_ids": [(6, 0, self.destination.ids)],
                "next_run": wanted,
                "tz": "UTC",
                "encrypt": False,
            }
        )
        self.assertEqual(policy.next_run, wanted)
        policy.write({"time_of_day": 4.0, "interval_type": "hours", "interval_number": 6})
        now = fields.Datetime.now()
        self.assertGreater(policy.next_run, now)
        self.assertLessEqual(policy.next_run, now + datetime.timedelta(hours=6))
        self.assertEqual(policy.next_run.minute, 0)
        self.assertEqual(policy.next_run.hour % 6, 4)

    def test_next_slot(self):
        """The policy's slots are its schedule read in its time zone: weekday, anchor day and DST included."""
        self.policy.write({"tz": "Europe/Berlin", "time_of_day": 1.0})
        # 01:00 in Berlin: 00:00 UTC in winter, 23:00 UTC the day before in summer
        self.assertEqual(self.policy._next_slot(datetime.datetime(2026, 1, 14, 12)), datetime.datetime(2026, 1, 15))
        self.assertEqual(self.policy._next_slot(datetime.datetime(2026, 7, 14, 12)), datetime.datetime(2026, 7, 14, 23))
        self.policy.write({"interval_type": "weeks", "weekday": "6", "schedule_anchor": datetime.date(2026, 7, 1)})
        slot = self.policy._next_slot(datetime.datetime(2026, 7, 14, 12))
        self.assertEqual(slot, datetime.datetime(2026, 7, 18, 23), "Sunday 19 July 01:00 CEST")
        self.assertEqual(slot, next_slot(datetime.datetime(2026, 7, 14, 12), 1, "weeks", 1.0, "Europe/Berlin", None, 6))

    def test_constraint_interval(self):
        """An interval of 0 is refused."""
        with self.assertRaisesRegex(ValidationError, "interval must be at least 1"):
            self.policy.interval_number = 0

    def test_constraint_rpo(self):
        """An RPO of 0 hours is refused."""
        with self.assertRaisesRegex(ValidationError, "RPO must be more than 0"):
            self.policy.rpo_hours = 0

    def test_constraint_time_of_day(self):
        """A time of day outside [0, 24) is refused."""
        with self.assertRaisesRegex(ValidationError, "time of day"):
            self.policy.time_of_day = 24.0
        with self.assertRaisesRegex(ValidationError, "time of day"):
            self.policy.time_of_day = -1.0

    def test_constraint_destination_when_active(self):
        """An active policy needs a destination; an archived one may have none."""
        with self.assertRaisesRegex(ValidationError, "add at least one"):
            self.Policy.create({"name": "Nowhere", "encrypt": False})
        archived = self.Policy.create({"name": "Nowhere, archived", "active": False, "encrypt": False})
        self.assertFalse(archived.destination_ids)
        with self.assertRaisesRegex(ValidationError, "add at least one"):
            archived.active = True

    def test_constraint_includes_something(self):
        """A policy that includes nothing is refused."""
        with self.assertRaisesRegex(ValidationError, "backs up nothing"):
            self.policy.write({"include_database": False, "include_filestore": False, "include_application": False})

    def test_state(self):
        """The badge: never, ok, late (RPO exceeded or run overdue), failing (last finished job failed)."""
        now = fields.Datetime.now()
        policy = self.policy
        self.assertEqual(policy.state, "never")
        policy.write(
            {"last_success_at": now - datetime.timedelta(hours=1), "next_run": now + datetime.timedelta(hours=1)}
        )
        self.assertEqual(policy.state, "ok")
        policy.write({"last_success_at": now - datetime.timedelta(hours=30)})
        self.assertEqual(policy.state, "late", "last success older than the 24 h RPO")
        policy.write(
            {"last_success_at": now - datetime.timedelta(hours=1), "next_run": now - datetime.timedelta(hours=2)}
        )
        self.assertEqual(policy.state, "late", "next run overdue by more than an hour")
        policy.write({"last_failure_at": now, "next_run": now + datetime.timedelta(hours=1)})
        self.assertEqual(policy.state, "failing")
        policy.write({"last_success_at": now + datetime.timedelta(seconds=1)})
        self.assertEqual(policy.state, "ok", "a later success clears the failure")

    def test_to_engine_plan(self):
        """The plan carries the policy's choices, Odoo's connection and version, a per-policy lock, no password."""
        self.policy.include_filestore = False
        with patch.dict(odoo_config.options, {"db_password": "s3cret", "db_port": 55499, "db_host": "dbhost"}):
            plan = self.policy._to_engine_plan()
        self.assertEqual(plan.db_name, self.env.cr.dbname)
        self.assertEqual([d.path for d in plan.destinations], [self.destination.path])
        self.assertFalse(plan.include_filestore)
        self.assertTrue(plan.include_database)
        self.assertEqual(plan.lock_key, LOCK_NAMESPACE + self.policy.id)
        self.assertEqual(plan.label, "Nightly")
        self.assertEqual(plan.odoo_version["major_version"], release.major_version)
        self.assertEqual(plan.pg.host, "dbhost")
        self.assertEqual(plan.pg.port, 55499)
        self.assertEqual(plan.pg.password, "s3cret")
        self.assertNotIn("password", plan.to_dict()["pg"])
        self.assertNotIn("s3cret", str(plan.to_dict()))

    def test_constraint_recipients(self):
        """Encryption needs at least one valid age public key; a wrong key is refused with what it should be."""
        with self.assertRaisesRegex(ValidationError, "has no recipient"):
            self.policy.encrypt = True
        with self.assertRaisesRegex(ValidationError, "is not an age public key"):
            self.policy.write({"encrypt": True, "age_recipients": "age1notakey"})
        with self.assertRaisesRegex(ValidationError, "A private age key"):
            self.policy.write({"encrypt": True, "age_recipients": "AGE-SECRET-KEY-1QQQQ"})
        other = crypto.generate_identity()[1]
        self.policy.write(
            {"encrypt": True, "age_recipients": "# the offline key\n%s\n\n%s\n" % (self.recipient, other)}
        )
        self.assertEqual(self.policy._to_engine_plan().recipients, [self.recipient, other])
        self.policy.encrypt = False
        self.assertEqual(self.policy._to_engine_plan().recipients, [], "no encryption: no recipients in the plan")

    def test_s3_destination_requires_encryption(self):
        """An S3 destination on an unencrypted policy is refused unless unencrypted offsite copies are allowed."""
        bucket = self.Destination.create({"name": "Bucket", "kind": "s3", "bucket": "some-bucket"})
        with self.assertRaisesRegex(ValidationError, "without encryption"):
            self.policy.destination_ids = [(4, bucket.id)]
        # The policy's tick alone is a Backup Manager's say: the server's administrator must allow it too.
        with self.assertRaisesRegex(ValidationError, "allow_unencrypted_offsite = true"):
            self.policy.with_user(self.manager).write(
                {"allow_unencrypted_offsite": True, "destination_ids": [(4, bucket.id)]}
            )
        self.enterContext(patch.dict(os.environ, {"SPP_BACKUP_ALLOW_UNENCRYPTED_OFFSITE": "true"}))
        self.policy.write({"allow_unencrypted_offsite": True, "destination_ids": [(4, bucket.id)]})
        self.assertTrue(self.policy.has_s3_destination)
        with (
            patch.dict(os.environ, {"SPP_BACKUP_ALLOW_UNENCRYPTED_OFFSITE": ""}),
            self.assertRaisesRegex(UserError, "unencrypted backups to S3"),
        ):
            self.policy._to_engine_plan()  # the setting removed later: the next backup does not go
        with self.assertRaisesRegex(ValidationError, "without encryption"):
            self.policy.allow_unencrypted_offsite = False
        self.policy.write({"allow_unencrypted_offsite": False, "encrypt": True, "age_recipients": self.recipient})
        # turning a local destination of an unencrypted policy into S3 is refused as well
        disk = self.Destination.create({"name": "Disk", "path": os.path.join(self.tmp, "disk")})
        self.Policy.create({"name": "Plain", "destination_ids": [(6, 0, disk.ids)], "encrypt": False})
        with self.assertRaisesRegex(ValidationError, "without encryption"):
            disk.write({"kind": "s3", "bucket": "other-bucket"})

    def test_onchange_s3_turns_encryption_on(self):
        """Adding an S3 destination in the form ticks Encrypt."""
        bucket = self.Destination.create({"name": "Bucket", "kind": "s3", "bucket": "some-bucket"})
        policy = self.Policy.new({"name": "Draft", "encrypt": False, "destination_ids": [(6, 0, bucket.ids)]})
        policy._onchange_destination_ids_encrypt()
        self.assertTrue(policy.encrypt)

    def test_retention_rules_into_the_plan(self):
        """The keep counts become the plan's retention dict; all zero means no retention (None)."""
        self.assertIsNone(self.policy._to_engine_plan().retention)
        self.policy.write({"keep_last": 3, "keep_daily": 7, "keep_weekly": 4, "keep_monthly": 12})
        self.assertEqual(
            self.policy._to_engine_plan().retention,
            {"keep_last": 3, "keep_daily": 7, "keep_weekly": 4, "keep_monthly": 12, "keep_yearly": 0},
        )
        with self.assertRaisesRegex(ValidationError, "must be 0 or more"):
            self.policy.keep_yearly = -1

    def test_verified_ids_into_the_plan(self):
        """Backups whose copies verified OK are named in the plan, so retention never drops the newest of them."""
        job = self.make_job()
        job.write(
            {"state": states.DONE, "backup_id": "20261126T030000Z-abc123", "location": "/b/db/20261126T030000Z-abc123"}
        )
        job._ensure_copies()
        self.assertEqual(self.policy._to_engine_plan().verified_ids, [])
        job.copy_ids.verify_state = "ok"
        self.assertEqual(self.policy._to_engine_plan().verified_ids, ["20261126T030000Z-abc123"])

    def test_signing_needs_the_key_file(self):
        """A signing policy without the server's key file is a clear error, at the plan and on the job."""
        self.policy.sign = True
        with patch.dict(os.environ, {"SPP_BACKUP_SIGNING_KEY_FILE": ""}):
            with self.assertRaisesRegex(UserError, "odoo.conf names no signing key file"):
                self.policy._to_engine_plan()
            job = self.Job.create({"policy_id": self.policy.id, "trigger": "manual"})
            with self.assertLogs("odoo.addons.spp_backup.models.backup_job", level="ERROR"):
                job._queue_run()
        self.assertEqual(job.state, states.FAILED)
        self.assertIn("signing_key_file", job.error_message)
        key_file = os.path.join(self.tmp, "signing.pem")
        with patch.dict(os.environ, {"SPP_BACKUP_SIGNING_KEY_FILE": key_file}):
            with self.assertRaisesRegex(UserError, "does not exist yet"):
                self.policy._to_engine_plan()
            public = crypto.write_signing_key(key_file)
            self.assertEqual(self.policy._to_engine_plan().signing_key_file, key_file)
            self.assertTrue(self.env["spp.backup.signing.key"].search([("public_key", "=", public)]))
            with open(key_file, "w", encoding="ascii") as handle:
                handle.write("garbage")
            with self.assertRaisesRegex(UserError, "cannot sign its backups: The signing key file"):
                self.policy._to_engine_plan()
        self.policy.sign = False
        self.assertIsNone(self.policy._to_engine_plan().signing_key_file)

    def test_bad_values_over_rpc_are_sentences_not_tracebacks(self):
        """A choice that is not one or a date that is not one, written as a manager would over RPC, is refused in
        words before the ORM converts it (it raised a bare ValueError)."""
        for values in (
            {"tz": "Not/AZone"},
            {"weekday": "9"},
            {"interval_type": "bogus"},
            {"schedule_anchor": "garbage"},
            {"next_run": "notadate"},
        ):
            with self.subTest(values=values), self.assertRaises(ValidationError):
                self.policy.with_user(self.manager).write(values)
        with self.assertRaises(ValidationError):
            self.Policy.with_user(self.manager).create({"name": "X", "tz": "Not/AZone", "encrypt": False})
        self.policy.with_user(self.manager).write(
            {"tz": "Europe/Paris", "weekday": "3", "schedule_anchor": "2026-01-01"}
        )
        self.assertEqual(self.policy.tz, "Europe/Paris")

    def test_archived_policy_cannot_back_up_now(self):
        """Back up now is refused on an archived policy."""
        self.policy.active = False
        with self.assertRaisesRegex(UserError, "archived"):
            self.policy.action_backup_now()

    def test_failed_verification_of_newest_success_shows_on_policy(self):
        """When the newest successful backup fails verification, the policy says so."""
        job = self.make_job()
        now = fields.Datetime.now()
        job.write({"state": states.DONE, "backup_id": "20261126T030000Z-abc123", "finished_at": now})
        self.policy.write(
            {"last_success_at": now, "last_success_job_id": job.id, "next_run": now + datetime.timedelta(hours=1)}
        )
        self.assertEqual(self.policy.state, "ok")
        job.verify_state = states.FAILED
        self.assertEqual(self.policy.state, "verify_failed")
