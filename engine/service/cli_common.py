"""What the command line's verbs share: settings and keys from the options and odoo.conf, restore options,
progress and step reporting."""

import sys

from ..core.config import Settings, default_data_dir
from ..db.codecheck import read_accepted
from ..io import crypto
from ..ops.restore import RestoreOptions


def settings_for(args):
    settings = Settings.from_config(args.conf)
    pg = settings.pg
    for attr, value in (
        ("host", getattr(args, "db_host", None)),
        ("port", getattr(args, "db_port", None)),
        ("user", getattr(args, "db_user", None)),
    ):
        if value:
            setattr(pg, attr, value)
    data_dir = getattr(args, "data_dir", None) or settings.data_dir or default_data_dir()
    return settings, pg, data_dir


def key_options(args, settings):
    """(identities or [], public key or None) from the options, then odoo.conf / environment."""
    identity_file = getattr(args, "identity", None) or settings.get("identity_file")
    identities = crypto.load_identities(identity_file) if identity_file else []
    public_key = getattr(args, "verify_key", None) or settings.get("verify_key")
    return identities, public_key


def accepted_code(args):
    """The digests of ``--accept-code FILE``; only ever from a person's command line."""
    if not args.accept_code:
        return frozenset()
    return read_accepted(args.accept_code)


def restore_options(args, pg, data_dir, **more):
    """RestoreOptions of the target options restore and import share (the target, replace, copy, neutralize,
    confirm, --accept-code), plus ``more``."""
    return RestoreOptions(
        target_db=args.target,
        pg=pg,
        data_dir=data_dir,
        replace=args.replace,
        include_filestore=not args.no_filestore,
        new_uuid=args.copy,
        neutralize=args.neutralize,
        confirm_name=args.confirm,
        accepted_code=accepted_code(args),
        **more,
    )


def progress_printer(last=None):
    """Print a progress tick when its step changes (a byte counter prints once)."""
    last = last if last is not None else {"message": None}

    def show(fraction, message):
        head = message.split(":")[0]
        if head != last["message"]:
            print("[%3d%%] %s" % (int(fraction * 100), message), file=sys.stderr, flush=True)
            last["message"] = head

    return show


def reporters(args):
    """The progress and log callbacks of a command: where it is, and each step done (none with --json)."""
    if args.json:
        return {}
    last = {"message": None}

    def step(message):
        print("[done] %s" % message, file=sys.stderr, flush=True)
        last["message"] = message.split(":")[0]

    return {"progress": progress_printer(last), "log": step}
