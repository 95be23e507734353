"""The benchmark's PostgreSQL: libpq's settings (or dev/pg.sh's cluster), queries, dropping a database."""

import os
import subprocess

from . import REPO


def pg_environment():
    """libpq settings; starts dev/pg.sh's cluster when none are given."""
    env = dict(os.environ)
    if not env.get("PGHOST"):
        subprocess.run(["bash", os.path.join(REPO, "dev", "pg.sh"), "start"], check=True, stdout=subprocess.DEVNULL)
        out = subprocess.run(
            ["bash", os.path.join(REPO, "dev", "pg.sh"), "env"], check=True, capture_output=True, text=True
        ).stdout
        for word in out.replace("export", " ").split():
            key, _, value = word.partition("=")
            if key.startswith("PG"):
                env[key] = value
    os.environ.update({k: v for k, v in env.items() if k.startswith("PG")})
    return env


def conn_kwargs():
    return {
        k: os.environ[v] for k, v in (("host", "PGHOST"), ("port", "PGPORT"), ("user", "PGUSER")) if os.environ.get(v)
    }


def connect(dbname="postgres"):
    import psycopg2

    conn = psycopg2.connect(dbname=dbname, **conn_kwargs())
    conn.autocommit = True
    return conn


def query(sql, params=None, dbname="postgres"):
    conn = connect(dbname)
    try:
        with conn.cursor() as cr:
            cr.execute(sql, params)
            return cr.fetchall() if cr.description else None
    finally:
        conn.close()


def database_exists(name):
    return bool(query("SELECT 1 FROM pg_database WHERE datname = %s", (name,)))


def drop_database(name):
    from psycopg2 import sql

    conn = connect()
    try:
        with conn.cursor() as cr:
            cr.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (name,))
            cr.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(name)))
    finally:
        conn.close()
