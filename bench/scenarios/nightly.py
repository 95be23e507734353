"""The nightly scenario of the incremental filestore: a first backup, 1 % more attachments and 20,000 chatter
rows, a second backup, a third with no change; against the database artifact alone."""

import hashlib
import os
import shutil
import statistics

from measure.dataset import FILE_SIZE, Dataset, scale_tag, warm_up
from measure.engine_cli import engine_backup, incremental_args, make_keys, secure_backup_args
from measure.moto import S3_DEST, S3_PREFIX, MotoServer, s3_pack_bytes, store_pack_bytes
from measure.pg import drop_database, query
from measure.report import MB, environment, mib, note_engine_change, write_json
from measure.timing import log, tree_bytes


class NightlyCopy:
    """A copy of the dataset that the nightly scenario may change: its own database (a template copy) and a
    filestore of hard links to the dataset's files (Odoo never changes a stored file)."""

    def __init__(self, ds, rundir):
        self.db = ds.db + "_nightly"
        self.data_dir = os.path.join(rundir, "data")
        self.filestore = os.path.join(self.data_dir, "filestore", self.db)
        drop_database(self.db)
        query('CREATE DATABASE "%s" TEMPLATE "%s"' % (self.db, ds.db))
        shutil.rmtree(self.data_dir, ignore_errors=True)
        shutil.copytree(ds.filestore, self.filestore, copy_function=os.link)

    def change(self, files, rows):
        """``files`` new attachments of the dataset's file size and ``rows`` new chatter rows."""
        added = 0
        for _ in range(files):
            content = os.urandom(FILE_SIZE)
            sha1 = hashlib.sha1(content).hexdigest()
            folder = os.path.join(self.filestore, sha1[:2])
            os.makedirs(folder, exist_ok=True)
            with open(os.path.join(folder, sha1), "wb") as handle:
                handle.write(content)
            added += len(content)
        query(
            "INSERT INTO mail_message (model, res_id, body) SELECT model, res_id, body FROM mail_message "
            "ORDER BY id LIMIT %s",
            (rows,),
            dbname=self.db,
        )
        return added

    def drop(self):
        drop_database(self.db)
        shutil.rmtree(self.data_dir, ignore_errors=True)


class NightlyTarget:
    """Where one series of the nightly scenario writes: a local folder, or a prefix of a loopback S3 bucket."""

    def __init__(self, rundir, env, server=None):
        self.server, self.env = server, (server.env(env) if server else env)
        if server:
            self.client = server.make_bucket()
            self.dest = S3_DEST
            self.db_only = S3_DEST + "-db-only"
        else:
            self.dest = os.path.join(rundir, "backups")
            self.db_only = os.path.join(rundir, "db_only")
            shutil.rmtree(self.dest, ignore_errors=True)
            os.makedirs(self.dest)

    def pack_bytes(self):
        return s3_pack_bytes(self.client, S3_PREFIX) if self.server else store_pack_bytes(self.dest)

    def backup(self, fake, extra, db_only=False):
        return engine_backup(fake, self.db_only if db_only else self.dest, self.env, extra, fresh=db_only)


def run_nightly(args, env):
    """A first incremental backup, 1 % more attachments and 20,000 chatter rows, a second one; and a third
    with no change. Against the database artifact alone (--no-filestore) in the same round; with --s3, the
    same series to a loopback S3 bucket as well, in the same rounds."""
    ds = Dataset(args.workdir, args.scale)
    facts = ds.ensure(rebuild=args.rebuild)
    info = environment(env)
    rundir = os.path.join(args.workdir, "nightly_s%s" % scale_tag(args.scale))
    shutil.rmtree(rundir, ignore_errors=True)
    os.makedirs(rundir)
    keys = make_keys(os.path.join(rundir, "keys"), env)
    secure = secure_backup_args(keys)
    new_files = max(1, round(facts["filestore_files"] * 0.01))
    series = ["local", "s3"] if args.s3 else ["local"]
    rounds = {name: [] for name in series}
    for number in range(args.repeat):
        log("nightly round %d of %d" % (number + 1, args.repeat))
        copy = NightlyCopy(ds, rundir)
        fake = type("DS", (), {"db": copy.db, "data_dir": copy.data_dir, "filestore": copy.filestore})
        store = incremental_args(rundir)
        server = MotoServer(rundir) if args.s3 else None
        if server:
            server.start(env)
        try:
            targets = {"local": NightlyTarget(rundir, env)}
            if server:
                targets["s3"] = NightlyTarget(rundir, env, server)
            warm_up(fake, rundir, env)
            runs = {name: {} for name in series}
            for name, target in targets.items():
                runs[name]["first"] = target.backup(fake, secure + store)
                runs[name]["after_first"] = target.pack_bytes()
            added = copy.change(new_files, 20000)
            for step in ("second", "third"):
                for name, target in targets.items():
                    runs[name][step] = target.backup(fake, secure + store)
                    runs[name]["after_" + step] = target.pack_bytes()
            for name, target in targets.items():
                runs[name]["db_only"] = target.backup(fake, secure + ("--no-filestore",), db_only=True)
        finally:
            if server:
                server.stop()
        filestore_bytes = tree_bytes(copy.filestore)
        for name, run in runs.items():
            rounds[name].append(
                {
                    "first_seconds": run["first"]["seconds"],
                    "first_store_bytes": run["after_first"],
                    "second_seconds": run["second"]["seconds"],
                    "second_store_bytes": run["after_second"] - run["after_first"],
                    "added_bytes": added,
                    "third_seconds": run["third"]["seconds"],
                    "third_store_bytes": run["after_third"] - run["after_second"],
                    "db_only_seconds": run["db_only"]["seconds"],
                    "filestore_bytes": filestore_bytes,
                    "first_peak_rss_kb": run["first"]["engine_peak_rss_kb"],
                    "second_peak_rss_kb": run["second"]["engine_peak_rss_kb"],
                }
            )
        copy.drop()
    result, met = {}, True
    print(
        "\nnightly scenario, %d round(s), medians (dataset %s, filestore %s in %d files)"
        % (args.repeat, mib(facts["db_size_bytes"]), mib(facts["filestore_bytes"]), facts["filestore_files"])
    )
    for name in series:
        med = {key: statistics.median(r[key] for r in rounds[name]) for key in rounds[name][0]}
        share = med["second_store_bytes"] / med["filestore_bytes"]
        ratio = med["second_seconds"] / med["db_only_seconds"]
        rss_limit = 96 if name == "s3" else 64
        peak = max(med["first_peak_rss_kb"], med["second_peak_rss_kb"]) / 1024
        targets = {
            "second backup stores <= 2 % of the filestore": {"value": round(share * 100, 2), "met": share <= 0.02},
            "second backup <= 1.1x its database artifact alone": {"value": round(ratio, 2), "met": ratio <= 1.1},
            "no change stores < 1 MiB": {"value": med["third_store_bytes"], "met": med["third_store_bytes"] < MB},
            "peak RSS <= %d MB" % rss_limit: {"value": round(peak, 1), "met": peak <= rss_limit},
        }
        print("  %s" % ("to a local folder" if name == "local" else "to S3 on loopback (moto)"))
        print(
            "    first incremental backup   %7.2f s   stored %s of filestore"
            % (med["first_seconds"], mib(med["first_store_bytes"]))
        )
        print(
            "    +%d files (%s), +20,000 rows; second backup %7.2f s   stored %s (%.2f %% of the filestore)"
            % (new_files, mib(med["added_bytes"]), med["second_seconds"], mib(med["second_store_bytes"]), share * 100)
        )
        print("    database artifact alone    %7.2f s   ratio %.2f" % (med["db_only_seconds"], ratio))
        third = (med["third_seconds"], med["third_store_bytes"])
        print("    no change: third backup    %7.2f s   stored %d bytes" % third)
        for label, target in targets.items():
            print("    %-52s %s %s" % (label, target["value"], "met" if target["met"] else "NOT met"))
        met = met and all(t["met"] for t in targets.values())
        result[name] = {"rounds": rounds[name], "median": med, "targets": targets}
    note_engine_change(info)
    if not args.keep:
        shutil.rmtree(rundir, ignore_errors=True)
    path = write_json({"kind": "nightly", "environment": info, "dataset": facts, "series": result}, "-nightly")
    print("written to %s" % path)
    return 0 if met else 1
