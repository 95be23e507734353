"""The code a dump from outside may hold: what Odoo, OpenSPP and the modules they use really create.

:mod:`engine.db.codecheck` reads the catalog of a database loaded from outside
and refuses every object whose use runs code unless it is one of these (or a
person accepted its digest with ``--accept-code``). Each entry says where it
comes from. An entry is matched against the canonical text the check makes
of the object (white space folded, every name schema-qualified): ``text``
exactly, or ``pattern`` (a regular expression matched whole) where the
module names the object after something of the database's own, as PostGIS
topology names a topology's schema.

To add an entry: load the module into a database, run ``spp-backup import``
of its dump, and copy the canonical text the refusal prints under the
object, with where it comes from.
"""

from dataclasses import dataclass


@dataclass(frozen=True)
class Extension:
    name: str
    schema: str  # where a dump creates it; the engine creates it there itself
    source: str
    # Other schemas its script makes (not members of it, so a dump has CREATE SCHEMA for them).
    more_schemas: tuple = ()


EXTENSIONS = {
    ext.name: ext
    for ext in (
        Extension("plpgsql", "pg_catalog", "PostgreSQL itself: every database has it (CREATE EXTENSION in any dump)."),
        Extension(
            "pg_trgm",
            "public",
            "Odoo 17.0 and 19.0, odoo/service/db.py (_create_empty_database): made in every new database for "
            "trigram indexes (fields with index='trigram').",
        ),
        Extension(
            "unaccent",
            "public",
            "Odoo 17.0 and 19.0, odoo/service/db.py: made in every new database when Odoo runs with --unaccent.",
        ),
        Extension(
            "pgcrypto",
            "public",
            "Odoo 19.0, odoo/cli/obfuscate.py: made by `odoo-bin obfuscate` in the database it obfuscates.",
        ),
        Extension(
            "postgis",
            "public",
            "OCA geospatial base_geoengine (17.0, 19.0), used by OpenSPP's GIS modules (spp_base_gis): made when "
            "the module is installed.",
        ),
        Extension(
            "postgis_topology",
            "topology",
            "OCA geospatial base_geoengine (17.0, 19.0): made beside postgis when the module is installed; "
            "found in OpenSPP 17 registries with the GIS modules.",
        ),
        Extension(
            "fuzzystrmatch",
            "public",
            "The postgis/postgis Docker image that OpenSPP 2's compose files run (18-3.6-alpine) and OpenSPP 1.x's "
            "CI (15-3.4): its start-up script makes it in the application's database.",
        ),
        Extension(
            "postgis_tiger_geocoder",
            "tiger",
            "The postgis/postgis Docker image (OpenSPP 2's compose files): its start-up script makes it in the "
            "application's database.",
            ("tiger_data",),
        ),
    )
}
# A schema the extension makes itself: the dump's CREATE SCHEMA for it is left out of what psql gets.
EXTENSION_SCHEMAS = {
    schema: ext.name
    for ext in EXTENSIONS.values()
    for schema in (ext.schema, *ext.more_schemas)
    if schema not in ("public", "pg_catalog")
}

IDENT = r"[a-z_][a-z0-9_$]*"


@dataclass(frozen=True)
class AllowedCode:
    kind: str
    name: str
    source: str
    text: str = ""
    pattern: str = ""


CODE = (
    AllowedCode(
        "function",
        "public.queue_job_notify()",
        "OCA queue, queue_job 16.0 and 17.0, hooks.py post_init_hook (and migrations 13.0.3.7.0): the NOTIFY "
        "that wakes the job runner.",
        text="FUNCTION public.queue_job_notify() RETURNS trigger LANGUAGE plpgsql AS BEGIN IF TG_OP = 'DELETE' "
        "THEN IF OLD.state != 'done' THEN PERFORM pg_notify('queue_job', OLD.uuid); END IF; ELSE PERFORM "
        "pg_notify('queue_job', NEW.uuid); END IF; RETURN NULL; END;",
    ),
    AllowedCode(
        "trigger",
        "queue_job_notify ON public.queue_job",
        "OCA queue, queue_job 16.0 and 17.0, hooks.py post_init_hook.",
        text="CREATE TRIGGER queue_job_notify AFTER INSERT OR DELETE OR UPDATE ON public.queue_job FOR EACH ROW "
        "EXECUTE FUNCTION public.queue_job_notify()",
    ),
    AllowedCode(
        "trigger",
        "relation_integrity_checks ON <topology>.relation",
        "PostGIS topology (postgis_topology 3.x, topology.CreateTopology): every topology's relation table.",
        pattern=r"CREATE TRIGGER relation_integrity_checks BEFORE INSERT OR UPDATE ON (%s)\.relation FOR EACH ROW "
        r"EXECUTE FUNCTION topology\.relationtrigger\('[0-9]+', '\1'\)" % IDENT,
    ),
    AllowedCode(
        "rule",
        "edge_insert_rule ON <topology>.edge",
        "PostGIS topology (postgis_topology 3.x, topology.CreateTopology): inserts into a topology's edge view "
        "go to its edge_data table.",
        pattern=r"CREATE RULE edge_insert_rule AS ON INSERT TO (%s)\.edge DO INSTEAD INSERT INTO \1\.edge_data "
        r"\(edge_id, start_node, end_node, next_left_edge, abs_next_left_edge, next_right_edge, "
        r"abs_next_right_edge, left_face, right_face, geom\) VALUES \(new\.edge_id, new\.start_node, "
        r"new\.end_node, new\.next_left_edge, abs\(new\.next_left_edge\), new\.next_right_edge, "
        r"abs\(new\.next_right_edge\), new\.left_face, new\.right_face, new\.geom\);" % IDENT,
    ),
)
