import os
import shutil
import tempfile
import xmlrpc.client

from odoo import fields
from odoo.tests import HttpCase, new_test_user, tagged

from ..controllers.metrics import policy_samples
from ..engine.core import states
from ..engine.io import crypto
from ..engine.service.protocol import write_pitr_status
from .common import RealBackupCase

# A date and a number nobody would record.
FORGED_WHEN = "2031-01-01 00:00:00"
FORGED_NUMBER = 4242


@tagged("post_install", "-at_install")
class TestServerFieldsOverRpc(RealBackupCase, HttpCase):
    """Over XML-RPC, as each group, the fields the server records on any model of the addon cannot be given through
    ``create`` (values or ``default_*`` context keys), ``copy()`` defaults or ``write``: nothing stored changes."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.settings_admin = new_test_user(cls.env, login="sppb_settings", groups="base.group_user,base.group_system")
        cls.logins = ("sppb_manager", "sppb_auditor", "sppb_restorer", "sppb_settings")
        cls.drill = cls.env["spp.backup.drill"].create(
            {"policy_id": cls.policy.id, "job_id": cls.job.id, "copy_id": cls.job.copy_ids[:1].id, "backup_id": "x"}
        )
        cls.drill.write(
            {
                "state": states.DONE,
                "is_ok": True,
                "restore_seconds": 1.0,
                "is_rto_measured": True,
                "check_ids": [(0, 0, {"name": "restore", "is_ok": True})],
            }
        )
        cls.restore = cls.env["spp.backup.restore"].create({"target_db": "copy_of_db", "backup_id": "x"})
        cls.alert = cls.env["spp.backup.alert"]._raise(cls.policy, "rpo_breach", "late")
        cls.key = cls.env["spp.backup.signing.key"]._remember(crypto.generate_signing_key()[1], "a test key")
        Wizard = cls.env["spp.backup.restore.wizard"]
        cls.wizard = Wizard.browse(cls.job.with_user(cls.restorer).action_restore()["res_id"])
        browse = cls.env["spp.backup.browse"].browse(
            cls.destination.with_user(cls.restorer).action_browse_backups()["res_id"]
        )
        preview = cls.policy.with_user(cls.manager).action_preview_retention()["res_id"]
        cls.env.flush_all()
        window = [["2026-12-01T00:00:00Z", "2026-12-07T00:00:00Z"]]
        write_pitr_status(
            cls.env.cr,
            {
                "system_id": 7400000000000000002,
                "receiver": {"receiving": True},
                "destinations": {"/srv/pitr": {"ranges": window}},
                "databases": [cls.env.cr.dbname],
            },
        )
        server = cls.env["spp.backup.pitr.server"].search([])
        pitr_wizard = server.with_user(cls.restorer).action_restore_to_second()["res_id"]
        cls.records = {
            "spp.backup.policy": cls.policy,
            "spp.backup.destination": cls.destination,
            "spp.backup.job": cls.job,
            "spp.backup.job.copy": cls.job.copy_ids[:1],
            "spp.backup.run": cls.job.run_id,
            "spp.backup.drill": cls.drill,
            "spp.backup.drill.check": cls.drill.check_ids,
            "spp.backup.restore": cls.restore,
            "spp.backup.alert": cls.alert,
            "spp.backup.signing.key": cls.key,
            "spp.backup.signing": cls.env["spp.backup.signing"].browse(
                cls.env["spp.backup.signing"].with_user(cls.manager).action_open()["res_id"]
            ),
            "spp.backup.run.now": cls.env["spp.backup.run.now"]
            .with_user(cls.manager)
            .create({"policy_id": cls.policy.id}),
            "spp.backup.retention.preview": cls.env["spp.backup.retention.preview"].browse(preview),
            "spp.backup.restore.wizard": cls.wizard,
            "spp.backup.browse": browse,
            "spp.backup.browse.line": browse.line_ids[:1],
            "spp.backup.pitr.server": server,
            "spp.backup.pitr.restore.wizard": cls.env["spp.backup.pitr.restore.wizard"].browse(pitr_wizard),
            "spp.backup.pitr.check": cls.env["spp.backup.pitr.check"].browse(
                server.with_user(cls.manager).action_check_settings()["res_id"]
            ),
        }
        # What a person may give when creating a record of a model they may create.
        cls.create_values = {
            "spp.backup.policy": {"name": "Forged", "destination_ids": [(6, 0, cls.destination.ids)], "encrypt": False},
            "spp.backup.destination": {"name": "Forged", "path": os.path.join(cls.tmp, "dest")},
            "spp.backup.run.now": {"policy_id": cls.policy.id},
            "spp.backup.retention.preview": {"policy_id": cls.policy.id},
        }

    # ----------------------------------------------------------------- helpers

    def rpc(self, login, model, method, *args, **kwargs):
        user = self.env["res.users"].search([("login", "=", login)])
        return self.xmlrpc_object.execute_kw(self.env.cr.dbname, user.id, login, model, method, list(args), kwargs)

    def server_fields(self, model):
        """The stored fields the server records on ``model``."""
        Model = self.env[model]
        return sorted(name for name in Model._server_field_names() if Model._fields[name].store)

    def stored(self, record, name):
        record.invalidate_recordset()
        field = record._fields[name]
        return field.convert_to_write(record[name], record)

    def forged(self, record, name, avoid=()):
        """A value of field ``name`` that is none of ``avoid`` (what it holds, what it would get anyway), or None."""
        field = record._fields[name]
        kind = field.type
        if kind == "boolean":
            value = not any(avoid)
        elif kind in ("char", "text"):
            value = "forged over RPC"
        elif kind == "html":
            value = "<p>forged over RPC</p>"
        elif kind in ("integer", "many2one_reference"):
            value = FORGED_NUMBER
        elif kind == "float":
            value = float(FORGED_NUMBER)
        elif kind == "datetime":
            value = FORGED_WHEN
        elif kind == "date":
            value = FORGED_WHEN[:10]
        elif kind == "selection":
            choices = [key for key, _label in field._description_selection(self.env)]
            value = next((key for key in choices if key not in avoid), None)
        elif kind == "many2one":
            others = self.env[field.comodel_name].sudo().with_context(active_test=False).search([], limit=5)
            value = next((other.id for other in others if other.id not in avoid), None)
        elif kind in ("one2many", "many2many"):
            others = self.env[field.comodel_name].sudo().with_context(active_test=False).search([], limit=1)
            value = [(6, 0, others.ids)] if others else None
        else:
            value = None
        return None if value in avoid else value

    def own_default(self, model, name):
        """What a new record gets from the field's own code, without any context."""
        Model = self.env[model].with_context(active_test=False)
        field = Model._fields[name]
        value = field.default(Model) if field.default else False
        return field.convert_to_write(field.convert_to_cache(value, Model, validate=False), Model)

    def records_of(self, model):
        return self.env[model].sudo().with_context(active_test=False).search([])

    def call(self, login, model, method, *args, **kwargs):
        """The RPC's answer, or None when it was refused (the refusal's words are in ``self.refusal``)."""
        self.refusal = None
        try:
            return self.rpc(login, model, method, *args, **kwargs)
        except xmlrpc.client.Fault as fault:
            self.refusal = fault.faultString
            self.assertNotIn("Traceback", fault.faultString.split("\n")[0])
            return None

    # ------------------------------------------------------------------- tests

    def test_every_model_of_the_addon_is_covered(self):
        """The door is on every model of the addon, each one's list names real fields, and this test has a record
        of every model that holds records."""
        door = self.env.registry["spp.backup.server.fields"]
        ours = self.env["ir.model"].search([("model", "=like", "spp.backup.%")]).mapped("model")
        self.assertEqual({model for model in ours if not self.env[model]._abstract}, set(self.records))
        for model in ours:
            with self.subTest(model=model):
                Model = self.env[model]
                self.assertIsInstance(Model, door)
                declared = Model._server_fields
                self.assertFalse(set(declared) - set(Model._fields), "names that are no field of %s" % model)

    def test_no_group_writes_a_server_field(self):
        """Every stored server field of every model, written over RPC by each group: refused in words, nothing
        changes."""
        tried = 0
        for model, record in self.records.items():
            for name in self.server_fields(model):
                before = self.stored(record, name)
                value = self.forged(record, name, avoid=[before])
                if value is None:
                    continue
                for login in self.logins:
                    with self.subTest(model=model, field=name, user=login):
                        self.assertIsNone(self.call(login, model, "write", record.ids, {name: value}))
                        self.assertIn("the server records these", self.refusal)
                        self.assertEqual(self.stored(record, name), before)
                        tried += 1
        self.assertGreater(tried, 4 * 150, "control: the fields of every model were tried")

    def test_no_group_gives_a_server_field_to_create_or_copy(self):
        """``default_*`` context keys and ``create`` values at create, ``copy()`` defaults: none is kept."""
        checked = 0
        for model, record in self.records.items():
            names = self.server_fields(model)
            defaults = {}
            for name in names:
                value = self.forged(record, name, avoid=[self.own_default(model, name), self.stored(record, name)])
                if value is not None and record._fields[name].type not in ("one2many", "many2many"):
                    defaults[name] = value
            context = {"default_%s" % name: value for name, value in defaults.items()}
            for login in self.logins:
                with self.subTest(model=model, user=login):
                    before = self.records_of(model)
                    values = dict(self.create_values.get(model, {}), **defaults)
                    self.call(login, model, "create", self.create_values.get(model, {}), context=context)
                    self.call(login, model, "create", values)
                    self.call(login, model, "copy", record.ids, defaults)
                    for new in self.records_of(model) - before:
                        for name, value in defaults.items():
                            self.assertNotEqual(self.stored(new, name), value, "%s of a new record" % name)
                            checked += 1
                        new.unlink()
        self.assertGreater(checked, 20, "control: records were made while forged values were offered")

    def test_a_forged_approval_opens_no_folder(self):
        """The attack of issue 21: a destination with a forged approval in the context is outside backup_roots
        as any other; moved there later, neither its Test nor a backup writes there."""
        outside = tempfile.mkdtemp(prefix="spp_backup_outside_")
        self.addCleanup(shutil.rmtree, outside, True)
        forged = {"default_is_path_approved": True, "default_approved_path": "/"}
        for login in ("sppb_manager", "sppb_settings"):
            with self.subTest(user=login):
                self.assertIsNone(
                    self.call(
                        login, "spp.backup.destination", "create", {"name": "Etc", "path": "/etc"}, context=forged
                    )
                )
                dest_id = self.rpc(
                    login,
                    "spp.backup.destination",
                    "create",
                    {"name": "Inside", "path": os.path.join(self.tmp, "dest")},
                    context=forged,
                )
                dest = self.Destination.browse(dest_id)
                self.assertEqual((dest.is_path_approved, dest.approved_path), (False, False))
                self.assertIsNone(self.call(login, "spp.backup.destination", "write", [dest_id], {"path": outside}))
                self.assertIsNone(
                    self.call(
                        login, "spp.backup.destination", "write", [dest_id], {"is_path_approved": True}, context=forged
                    )
                )
                dest.invalidate_recordset()
                self.assertEqual((dest.path, dest.is_path_approved), (os.path.join(self.tmp, "dest"), False))
        # A destination moved outside past Odoo's checks (by hand in the database): Test and the worker refuse it.
        dest = self.Destination.create({"name": "Moved", "path": os.path.join(self.tmp, "dest")})
        self.env.cr.execute("UPDATE spp_backup_destination SET path = %s WHERE id = %s", (outside, dest.id))
        dest.invalidate_recordset()
        self.assertIsNone(self.call("sppb_manager", "spp.backup.destination", "action_test", dest.ids))
        policy = self.Policy.create(
            {"name": "Moved", "destination_ids": [(6, 0, dest.ids)], "encrypt": False, "incremental_filestore": False}
        )
        job = self.Job.browse(
            self.env["spp.backup.run.now"]
            .with_user(self.manager)
            .create({"policy_id": policy.id})
            .action_confirm()["res_id"]
        )
        self.assertIn('"destinations"', job.run_id.plan, "control: the plan is there")
        self.assertNotIn("approved_paths", job.run_id.plan)
        self.wait_for_run(job)
        self.assertEqual(job.state, states.FAILED)
        self.assertIn("outside the folders this server may write backups to", job.error_message)
        self.assertEqual(os.listdir(outside), [])

    def test_a_forged_success_shows_no_success(self):
        """The attack of issue 21: a policy created or copied with forged last_* defaults never ran, and the
        dashboard and the metrics say so."""
        forged = {
            "last_success_at": fields.Datetime.to_string(fields.Datetime.now()),
            "last_success_job_id": self.job.id,
            "last_drill_id": self.drill.id,
            "last_job_id": self.job.id,
        }
        context = {"default_%s" % name: value for name, value in forged.items()}
        values = {"name": "Never ran", "destination_ids": [(6, 0, self.destination.ids)], "encrypt": False}
        made = []
        for login in ("sppb_manager", "sppb_settings"):
            made.append(self.rpc(login, "spp.backup.policy", "create", values, context=context))
            made.append(self.call(login, "spp.backup.policy", "copy", made[-1], forged))
            made.append(self.call(login, "spp.backup.policy", "copy", made[0], {}, context=context))
        # copy() answers an id on Odoo 17 and a list of ids on Odoo 19.
        made = [policy_id for ids in made for policy_id in (ids if isinstance(ids, list) else [ids])]
        policies = self.Policy.browse([policy_id for policy_id in made if policy_id])
        self.assertEqual(len(policies), 6)
        self.assertEqual(self.drill.verdict, "passed", "control: the drill named passed")
        for policy in policies:
            with self.subTest(policy=policy.id):
                read = self.rpc("sppb_manager", "spp.backup.policy", "read", policy.ids, ["state", "last_drill_state"])
                self.assertEqual((read[0]["state"], read[0]["last_drill_state"]), ("never", "none"))
                self.assertEqual(policy.rto_status, "unknown")
                self.assertFalse(policy.last_success_at or policy.last_success_job_id or policy.last_drill_id)
                samples = policy_samples(policy)
                self.assertEqual(
                    (samples["spp_backup_last_drill_success"], samples["spp_backup_rto_compliant"]), (-1, -1)
                )
                self.assertEqual(samples["spp_backup_last_success_timestamp_seconds"], 0)

    def test_onchanges_and_saved_defaults_give_no_server_field(self):
        """An onchange given server facts neither uses nor returns them; a personal default (ir.default) and a
        default_* key fill no server field of a new form or record."""
        spec = {name: {} for name in ("name", "path", "is_path_approved", "approved_path", "where")}
        answer = self.rpc(
            "sppb_manager",
            "spp.backup.destination",
            "onchange",
            [],
            {},
            [],
            spec,
            context={"default_is_path_approved": True, "default_approved_path": "/"},
        )
        self.assertFalse({"is_path_approved", "approved_path"} & set(answer.get("value") or {}), answer)
        # A policy that never ran, given a success in the form: what it computes stays what the server recorded.
        never = self.Policy.create(
            {"name": "Never", "destination_ids": [(6, 0, self.destination.ids)], "encrypt": False}
        )
        spec = {name: {} for name in ("name", "last_success_at", "last_success_job_id", "state", "has_good_backup")}
        values = {"last_success_at": FORGED_WHEN, "last_success_job_id": self.job.id, "name": "Forged"}
        answer = self.rpc(
            "sppb_manager", "spp.backup.policy", "onchange", never.ids, values, ["last_success_at", "name"], spec
        )
        value = answer.get("value") or {}
        self.assertFalse({"last_success_at", "last_success_job_id"} & set(value), answer)
        self.assertEqual((value.get("state", "never"), value.get("has_good_backup", False)), ("never", False), answer)
        # Saved defaults: the manager's own, and one a Settings administrator sets for everybody.
        self.rpc("sppb_manager", "ir.default", "set", "spp.backup.policy", "last_success_at", FORGED_WHEN, True)
        self.rpc("sppb_settings", "ir.default", "set", "spp.backup.policy", "last_drill_id", self.drill.id)
        self.rpc("sppb_settings", "ir.default", "set", "spp.backup.job", "verify_state", "ok")
        self.assertEqual(
            self.env["ir.default"]
            .sudo()
            .search_count([("field_id.model", "in", ("spp.backup.policy", "spp.backup.job"))]),
            3,
            "control: the defaults are saved",
        )
        defaults = self.rpc("sppb_manager", "spp.backup.policy", "default_get", ["last_success_at", "last_drill_id"])
        self.assertFalse(defaults.get("last_success_at") or defaults.get("last_drill_id"), defaults)
        policy = self.Policy.browse(
            self.rpc(
                "sppb_manager",
                "spp.backup.policy",
                "create",
                {"name": "Saved defaults", "encrypt": False, "destination_ids": [(6, 0, self.destination.ids)]},
            )
        )
        self.assertFalse(policy.last_success_at or policy.last_drill_id)
        self.assertEqual(policy.state, "never")
        # The server's own records take their code defaults, whatever was saved.
        job = self.Job.create({"policy_id": policy.id, "trigger": "manual"})
        self.assertEqual(job.verify_state, "not_verified")
