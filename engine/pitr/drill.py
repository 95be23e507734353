"""Point-in-time drills: restore one database to a random second of the window, check it, time it, drop it.

The copy is made like a restore to a second (restore_database_at) into a scratch database
``<db>_drill_<random>``, neutralized and given its own identity; the checks: the chosen second inside the
window, where recovery stopped, every attachment the database references at that second present with the
SHA-1 Odoo recorded. The restore's time is the measured RTO. The scratch database and filestore are dropped
afterwards, also when a check failed.
"""

import datetime
import os
import random
import time

from ..core.errors import BackupError
from ..core.human import human_duration
from ..db import pg
from ..ops.drill import DrillCheck, DrillResult, check_attachments, clean_up_scratch, drill_name, drill_options
from . import recover


def random_second(win, rng=random):
    """A whole second chosen at random among the seconds the window's ranges reach (ends included)."""
    spans = [(start, max(0, int((end - start).total_seconds()))) for start, end in win.ranges]
    pick = rng.randint(0, sum(span + 1 for _start, span in spans) - 1)
    for start, span in spans:
        if pick <= span:
            return start + datetime.timedelta(seconds=pick)
        pick -= span + 1
    return win.end


def run_pitr_drill(
    storage,
    db_name,
    pg_config,
    data_dir,
    identities,
    public_keys,
    moment=None,
    system_id=None,
    tmp_dir=None,
    neutralize_sql=(),
    rng=random,
    progress=None,
    log=None,
    neutralize_modules=None,
):
    """A DrillResult (never raises): the restore to ``moment`` (None: a random second of the window) checked."""
    progress = progress or (lambda fraction, message: None)
    log = log or (lambda message: None)
    started = time.monotonic()
    scratch = drill_name(db_name, "pitr")
    result = DrillResult(backup_id="", source="%s (WAL archive)" % storage.describe(), scratch_db=scratch)
    fs_root = os.path.join(data_dir, "filestore") if data_dir else None
    try:
        win = recover.window(recover.open_archive(storage, system_id), public_keys)
        if win.start is None:
            raise BackupError("the archive has no base backup with the WAL after it yet")
        moment = recover.parse_time(moment) if moment else random_second(win, rng)
        result.checks.append(
            DrillCheck(
                "window",
                any(start <= moment <= end for start, end in win.ranges),
                "restoring to %s, inside %s to %s%s"
                % (
                    recover.words(moment),
                    recover.words(win.start),
                    recover.words(win.end),
                    "; gaps: %s" % ", ".join("%s to %s" % (a, b) for a, b, _n in win.gaps) if win.gaps else "",
                ),
            )
        )
        options = drill_options(scratch, pg_config, data_dir, identities, neutralize_sql, tmp_dir=tmp_dir)
        t0 = time.monotonic()
        try:
            restored = recover.restore_database_at(
                storage, db_name, moment, options, public_keys, system_id, data_dir, progress, log, neutralize_modules
            )
        except BackupError as exc:
            result.checks.append(DrillCheck("restore", False, str(exc)))
            raise
        result.restore_seconds = round(time.monotonic() - t0, 3)
        result.backup_id = restored.base_backup
        result.checks.append(
            DrillCheck(
                "restore",
                True,
                "base backup %s and %d WAL file(s); %s"
                % (restored.base_backup, restored.wal_files, restored.reached or "replayed the whole archive"),
            )
        )
        log(
            "Restore to %s took %s (the measured RTO)" % (recover.words(moment), human_duration(result.restore_seconds))
        )
        with pg.cursor(pg_config, scratch) as cr:
            check = check_attachments(cr, os.path.join(fs_root, scratch) if fs_root else None)
        result.checks.append(check)
        log("Check %s: %s (%s)" % (check.name, "passed" if check.ok else "FAILED", check.detail))
    except BackupError as exc:
        result.error = str(exc)
    except Exception as exc:  # a drill reports; it never crashes its caller
        result.error = "unexpected %s: %s" % (type(exc).__name__, exc)
    finally:
        result.cleaned_up = clean_up_scratch(pg_config, scratch, fs_root)
        log("Scratch database %s %s" % (scratch, "dropped" if result.cleaned_up else "NOT dropped: drop it by hand"))
    result.ok = result.error is None and all(check.ok for check in result.checks) and result.cleaned_up
    result.total_seconds = round(time.monotonic() - started, 3)
    return result
