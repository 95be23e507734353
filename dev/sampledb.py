"""Build an OpenSPP-like sample database and filestore (for the demo, tests, benchmark).

    python3 dev/sampledb.py --database demo --data-dir /tmp/odoo-data \
        --partners 20000 --messages 50000 --files 300 --file-size 65536

Tables mimic Odoo's (ir_module_module, ir_config_parameter, res_partner,
mail_message, ir_attachment, g2p_program, g2p_program_membership); attachment
files sit in Odoo's layout ``<data_dir>/filestore/<db>/<2 hex>/<sha1>``, each
half random bytes and half zeros.
"""

import argparse
import hashlib
import os
import sys

import psycopg2
from psycopg2 import sql

MODULES = [
    ("base", "17.0.1.3"),
    ("mail", "17.0.1.15"),
    ("contacts", "17.0.1.0"),
    ("g2p_registry_base", "17.0.1.2.0"),
    ("g2p_registry_individual", "17.0.1.2.0"),
    ("g2p_programs", "17.0.1.2.0"),
    ("spp_base", "17.0.1.0.0"),
]

SCHEMA = """
CREATE TABLE ir_module_module (
    id serial PRIMARY KEY, name varchar NOT NULL UNIQUE, state varchar, latest_version varchar);
CREATE TABLE ir_config_parameter (id serial PRIMARY KEY, key varchar NOT NULL UNIQUE, value text);
CREATE TABLE res_partner (
    id serial PRIMARY KEY, name varchar NOT NULL, is_registrant boolean, is_group boolean,
    birthdate date, phone varchar, email varchar, create_date timestamp DEFAULT now());
CREATE TABLE mail_message (
    id serial PRIMARY KEY, model varchar, res_id integer, body text, create_date timestamp DEFAULT now());
CREATE INDEX mail_message_res_idx ON mail_message (model, res_id);
CREATE TABLE ir_attachment (
    id serial PRIMARY KEY, name varchar, res_model varchar, res_id integer, store_fname varchar,
    file_size integer, checksum varchar(40), mimetype varchar, create_date timestamp DEFAULT now());
CREATE TABLE g2p_program (id serial PRIMARY KEY, name varchar NOT NULL);
CREATE TABLE g2p_program_membership (
    id serial PRIMARY KEY, partner_id integer REFERENCES res_partner(id), program_id integer REFERENCES g2p_program(id),
    state varchar, enrollment_date date);
"""


def make_file(root, index, size):
    """One attachment file: half random bytes, half zeros, stored by its SHA-1."""
    half = size // 2
    data = os.urandom(half) + bytes(size - half) + index.to_bytes(8, "big")
    sha1 = hashlib.sha1(data).hexdigest()
    folder = os.path.join(root, sha1[:2])
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, sha1), "wb") as handle:
        handle.write(data)
    return "%s/%s" % (sha1[:2], sha1), sha1, len(data)


def build(conn_kwargs, database, data_dir, partners, messages, files, file_size, body_repeat=8):
    admin = psycopg2.connect(dbname="postgres", **conn_kwargs)
    admin.autocommit = True
    with admin.cursor() as cr:
        cr.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(database)))
        cr.execute(sql.SQL("CREATE DATABASE {} TEMPLATE template0 ENCODING 'UTF8'").format(sql.Identifier(database)))
    admin.close()
    conn = psycopg2.connect(dbname=database, **conn_kwargs)
    root = os.path.join(data_dir, "filestore", database)
    os.makedirs(root, exist_ok=True)
    with conn, conn.cursor() as cr:
        cr.execute(SCHEMA)
        cr.executemany(
            "INSERT INTO ir_module_module (name, state, latest_version) VALUES (%s, 'installed', %s)", MODULES
        )
        cr.execute("INSERT INTO ir_module_module (name, state, latest_version) VALUES ('website', 'uninstalled', NULL)")
        cr.execute(
            "INSERT INTO ir_config_parameter (key, value) VALUES "
            "('database.uuid', gen_random_uuid()::text), ('database.secret', gen_random_uuid()::text), "
            "('database.create_date', now()::text), ('web.base.url', 'http://localhost:8069')"
        )
        cr.execute(
            "INSERT INTO res_partner (name, is_registrant, is_group, birthdate, phone, email) "
            "SELECT 'Beneficiary ' || i || ' ' || substr(md5(i::text), 1, 8), true, i %% 5 = 0, "
            "date '1950-01-01' + (i %% 20000), '+63 9' || lpad((i * 7919 %% 1000000000)::text, 9, '0'), "
            "'person' || i || '@example.org' FROM generate_series(1, %s) AS i",
            (partners,),
        )
        cr.execute("INSERT INTO g2p_program (name) SELECT 'Programme ' || i FROM generate_series(1, 5) AS i")
        cr.execute(
            "INSERT INTO g2p_program_membership (partner_id, program_id, state, enrollment_date) "
            "SELECT i, 1 + i %% 5, 'enrolled', date '2024-01-01' + (i %% 600) FROM generate_series(1, %s) AS i",
            (partners,),
        )
        cr.execute(
            "INSERT INTO mail_message (model, res_id, body) "
            "SELECT 'res.partner', 1 + i %% %s, "
            "'<p>Entitlement ' || i || ' approved for household ' || (i * 31 %% 99991) "
            "|| ': ' || repeat(md5(i::text) || ' ', %s) || 'paid ' || (random() * 500)::int || ' PHP</p>' "
            "FROM generate_series(1, %s) AS i",
            (max(partners, 1), body_repeat, messages),
        )
        rows = []
        for index in range(files):
            store_fname, sha1, size = make_file(root, index, file_size)
            rows.append(("doc_%d.pdf" % index, "res.partner", 1 + index % max(partners, 1), store_fname, size, sha1))
        cr.executemany(
            "INSERT INTO ir_attachment (name, res_model, res_id, store_fname, file_size, checksum, mimetype) "
            "VALUES (%s, %s, %s, %s, %s, %s, 'application/pdf')",
            rows,
        )
        cr.execute("ANALYZE")
    conn.close()
    return root


def conn_kwargs():
    """libpq's PG* connection variables as psycopg2 keyword arguments."""
    names = (("host", "PGHOST"), ("port", "PGPORT"), ("user", "PGUSER"))
    return {key: os.environ[var] for key, var in names if os.environ.get(var)}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--database", required=True)
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--partners", type=int, default=20000)
    parser.add_argument("--messages", type=int, default=50000)
    parser.add_argument("--files", type=int, default=300)
    parser.add_argument("--file-size", type=int, default=65536)
    parser.add_argument("--body-repeat", type=int, default=8, help="md5 words per message body (row width)")
    args = parser.parse_args(argv)
    root = build(
        conn_kwargs(),
        args.database,
        args.data_dir,
        args.partners,
        args.messages,
        args.files,
        args.file_size,
        args.body_repeat,
    )
    print("sample database %s ready; filestore %s" % (args.database, root))
    return 0


if __name__ == "__main__":
    sys.exit(main())
