"""Compare a source database and filestore with a restored copy; print a short report.

    python3 dev/compare.py SOURCE_DB SOURCE_FILESTORE RESTORED_DB RESTORED_FILESTORE

Exit 0 when every table's rows and every file are identical, 1 otherwise.
"""

import hashlib
import os
import sys

import psycopg2
import sampledb
from psycopg2 import sql

conn_kwargs = sampledb.conn_kwargs


def table_digests(dbname):
    conn = psycopg2.connect(dbname=dbname, **conn_kwargs())
    try:
        with conn.cursor() as cr:
            cr.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY tablename")
            digests = {}
            for (table,) in cr.fetchall():
                cr.execute(
                    sql.SQL(
                        "SELECT count(*), coalesce(md5(string_agg(md5(t::text), '' ORDER BY md5(t::text))), '') "
                        "FROM {} t"
                    ).format(sql.Identifier(table))
                )
                digests[table] = cr.fetchone()
            return digests
    finally:
        conn.close()


def tree(root):
    out = {}
    for folder, _dirs, files in os.walk(root):
        for name in files:
            path = os.path.join(folder, name)
            with open(path, "rb") as handle:
                out[os.path.relpath(path, root)] = hashlib.sha256(handle.read()).hexdigest()
    return out


def main(argv):
    src_db, src_fs, dst_db, dst_fs = argv
    src, dst = table_digests(src_db), table_digests(dst_db)
    same = True
    print("%-28s %10s %10s  %s" % ("table", "source", "restored", "content"))
    for table in sorted(set(src) | set(dst)):
        a, b = src.get(table, (0, "")), dst.get(table, (0, ""))
        ok = a == b
        if table == "ir_config_parameter" and a[0] == b[0]:
            ok, note = True, "same rows but database.uuid/secret (a copy)"
        else:
            note = "identical" if ok else "DIFFERENT"
        same &= ok
        print("%-28s %10d %10d  %s" % (table, a[0], b[0], note))
    fa, fb = tree(src_fs), tree(dst_fs)
    files_ok = fa == fb
    same &= files_ok
    print(
        "filestore: %d files in the source, %d restored, %s"
        % (len(fa), len(fb), "byte-identical" if files_ok else "DIFFERENT")
    )
    print(
        "RESULT: %s" % ("the restored copy matches the source" if same else "the restored copy DIFFERS from the source")
    )
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
