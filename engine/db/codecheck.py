"""What a database loaded from outside would run, read from its catalog, and refused unless known.

The SQL guard (:mod:`engine.db.sqlguard`) reads a dump's text; it cannot see
code that plpgsql builds at run time, nor every way a function is reached.
This module reads the *catalog* of the scratch database after the load, as
the import role, before anything else happens there, and lists every object
whose use runs code:

- functions, procedures, aggregates and window functions, in any language;
- triggers, event triggers, rules (views' own rules are checked as views),
  row-level policies;
- column defaults, generated columns, check and domain constraints, domain
  defaults, index expressions and predicates, expression statistics and
  views, when they call a function that is neither PostgreSQL's nor an
  allowed extension's, or a function that runs SQL of its own or reaches
  outside the database (``query_to_xml``, ``pg_read_file``, ``set_config``...);
- operators, casts, conversions, operator classes and families, languages,
  transforms, access methods, foreign-data wrappers, text search parsers and
  templates, and types with input, output or range functions of their own.

Each object is matched against :mod:`engine.db.allowed_code` (what Odoo,
OpenSPP and the modules they use really create) or against the digests a
person accepted (``--accept-code FILE``). Objects the engine made before the
load (the allowed extensions and what they made) are not the dump's. Anything
else refuses the import, naming each object with its kind, name and digest.
"""

import hashlib
import os
import re
import stat
import unicodedata
from dataclasses import dataclass

from . import allowed_code
from .sqlguard import SqlRefused

# Node-tree fields that name a function, or an operator (whose function runs).
FUNCTION_FIELDS = re.compile(r":(?:funcid|opfuncid|aggfnoid|winfnoid) (\d+)")
OPERATOR_FIELDS = re.compile(r":(?:opno|eqop|sortop) (\d+)")
# Functions that run SQL of their own, or act outside the database, whoever's they are: never called from a
# default, a check, an index, a view or a policy of a dump from outside.
DENIED_CALLS = re.compile(
    r"(query_to_xml\w*|cursor_to_xml\w*|table_to_xml\w*|schema_to_xml\w*|database_to_xml\w*|ts_stat|ts_rewrite|"
    r"pg_read_\w+|pg_ls_\w+|pg_stat_file|pg_file_\w+|lo_import|lo_export|lo_unlink|lo_put|lowrite|lo_truncate\w*|"
    r"set_config|pg_terminate_backend|pg_cancel_backend|pg_reload_conf|pg_rotate_logfile\w*|pg_promote|"
    r"pg_switch_wal|pg_create_\w+|pg_drop_\w+|pg_logical_\w+|pg_replication_\w+|pg_backup_\w+|pg_wal_replay_\w+|"
    r"pg_log_backend_memory_contexts|pg_sleep\w*|pg_advisory\w*|pg_try_advisory\w*|pg_notify|pg_stat_reset\w*|"
    r"pg_import_system_collations|dblink\w*|createtopology|droptopology|copytopology|renametopology|"
    r"addtopogeometrycolumn|droptopogeometrycolumn|renametopogeometrycolumn|postgis_extensions_upgrade|"
    # They change a sequence, make large objects or rewrite the planner's statistics (PostgreSQL 18) each time a
    # row is written: tampering, never what a default, a check or a view of Odoo's does.
    r"setval|lo_from_bytea|lo_create|lo_creat|lo_open|pg_restore_\w*stats|pg_clear_\w*stats)"
)
# Odoo's serial columns call nextval() in their defaults; anywhere else (a check, an index, a view) it consumes
# ids of a sequence each time a row is checked or read.
SEQUENCE_CALL_KINDS = ("column default",)
FIRST_NORMAL_OID = 16384
BUILTIN, EXTENSION_C, EXTENSION_SCRIPT, OWN = "builtin", "extension-c", "extension-script", "own"
SYSTEM_SCHEMAS = ("pg_catalog", "information_schema", "pg_toast")

MEMBER = (
    "EXISTS (SELECT 1 FROM pg_catalog.pg_depend d WHERE d.classid = '{catalog}'::pg_catalog.regclass "
    "AND d.objid = {alias}.oid AND d.refclassid = 'pg_catalog.pg_extension'::pg_catalog.regclass AND d.deptype = 'e')"
)


def _own(catalog, alias):
    """SQL: the row is not PostgreSQL's own nor an extension's member."""
    return "%s.oid >= %d AND NOT %s" % (alias, FIRST_NORMAL_OID, MEMBER.format(catalog=catalog, alias=alias))


def visible(text):
    """``text`` with every character a terminal would hide or move the cursor with written as an escape, so
    that what a person reads in a refusal is all the definition holds."""
    out = []
    for char in text:
        category = unicodedata.category(char)
        if char == " " or category[0] not in "CZ":
            out.append(char)
        else:
            out.append("\\x%02x" % ord(char) if ord(char) < 0x100 else "\\u%04x" % ord(char))
    return "".join(out)


def fold(text):
    """Runs of PostgreSQL's white space as one space (other characters Python counts as space are kept)."""
    return re.sub(r"[ \t\n\r\f\v]+", " ", text or "").strip()


@dataclass(frozen=True)
class CodeObject:
    kind: str
    name: str
    text: str  # canonical definition, exactly as the catalog gives it

    @property
    def folded(self):
        """The definition with its white space folded: what the allow-list matches and a refusal shows."""
        return fold(self.text)

    @property
    def digest(self):
        return "sha256:" + hashlib.sha256(("%s\0%s\0%s" % (self.kind, self.name, self.text)).encode()).hexdigest()

    def line(self):
        return "%s  %s %s" % (self.digest, self.kind, visible(self.name))


class CodeRefused(SqlRefused):
    """The loaded database holds code nobody allowed; ``objects`` lists it."""

    def __init__(self, message, objects):
        super().__init__(message)
        self.objects = objects


# -- reading the catalog ---------------------------------------------------------------------------------------


def _functions(cr):
    cr.execute(
        "SELECT p.oid, p.prokind, p.oid::pg_catalog.regprocedure::text, pg_catalog.pg_get_function_result(p.oid), "
        "l.lanname, p.prosecdef, p.proleakproof, p.proconfig, p.prosrc, p.probin, "
        "CASE WHEN p.prosqlbody IS NOT NULL THEN pg_catalog.pg_get_functiondef(p.oid) END, "
        "(SELECT pg_catalog.concat_ws(' ', 'SFUNC', a.aggtransfn::text, 'STYPE', a.aggtranstype::regtype::text, "
        " 'FINALFUNC', a.aggfinalfn::text, 'COMBINEFUNC', a.aggcombinefn::text, 'MSFUNC', a.aggmtransfn::text) "
        " FROM pg_catalog.pg_aggregate a WHERE a.aggfnoid = p.oid) "
        "FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_language l ON l.oid = p.prolang "
        "WHERE %s ORDER BY 3" % _own("pg_catalog.pg_proc", "p")
    )
    kinds = {"f": "function", "p": "procedure", "a": "aggregate", "w": "window function"}
    objects = {}
    for oid, prokind, ident, result, lang, definer, leakproof, config, src, binary, sqlbody, agg in cr.fetchall():
        kind = kinds.get(prokind, "function")
        parts = ["%s %s" % (kind.upper(), ident)]
        if result:
            parts.append("RETURNS %s" % result)
        parts.append("LANGUAGE %s" % lang)
        if definer:
            parts.append("SECURITY DEFINER")
        if leakproof:
            parts.append("LEAKPROOF")
        for setting in config or ():
            parts.append("SET %s" % setting)
        if agg:
            parts.append(agg)
        if binary:
            parts.append("BINARY %s" % binary)
        parts.append("AS %s" % (sqlbody if sqlbody else src))
        objects[oid] = CodeObject(kind, ident, " ".join(parts))
    return objects


def _catalog_objects(cr):
    """Every object whose use runs code, other than functions and expressions."""
    queries = (
        (
            "trigger",
            "SELECT t.tgname || ' ON ' || t.tgrelid::regclass::text, pg_catalog.pg_get_triggerdef(t.oid) "
            "FROM pg_catalog.pg_trigger t WHERE NOT t.tgisinternal",
        ),
        (
            "event trigger",
            "SELECT e.evtname, 'EVENT TRIGGER ' || e.evtname || ' ON ' || e.evtevent || ' WHEN TAGS ' || "
            "coalesce(e.evttags::text, '') || ' EXECUTE FUNCTION ' || e.evtfoid::regprocedure::text "
            "FROM pg_catalog.pg_event_trigger e",
        ),
        (
            "rule",
            "SELECT r.rulename || ' ON ' || r.ev_class::regclass::text, pg_catalog.pg_get_ruledef(r.oid) "
            "FROM pg_catalog.pg_rewrite r WHERE r.rulename <> '_RETURN' AND %s" % _own("pg_catalog.pg_rewrite", "r"),
        ),
        (
            "row-level policy",
            "SELECT p.polname || ' ON ' || p.polrelid::regclass::text, 'POLICY ' || p.polname || ' ON ' || "
            "p.polrelid::regclass::text || ' ' || CASE WHEN p.polpermissive THEN 'PERMISSIVE' ELSE 'RESTRICTIVE' "
            "END || ' FOR ' || p.polcmd::text || ' TO ' || pg_catalog.array_to_string(ARRAY(SELECT CASE "
            "WHEN r = 0 THEN 'public' ELSE r::regrole::text END FROM pg_catalog.unnest(p.polroles) r), ', ') || "
            "' USING (' || coalesce(pg_catalog.pg_get_expr(p.polqual, p.polrelid), '') || ') WITH CHECK (' || "
            "coalesce(pg_catalog.pg_get_expr(p.polwithcheck, p.polrelid), '') || ')' "
            "FROM pg_catalog.pg_policy p",
        ),
        (
            "operator",
            "SELECT o.oid::regoperator::text, 'OPERATOR ' || o.oid::regoperator::text || ' PROCEDURE ' || "
            "o.oprcode::regprocedure::text FROM pg_catalog.pg_operator o WHERE %s"
            % _own("pg_catalog.pg_operator", "o"),
        ),
        (
            "cast",
            "SELECT c.castsource::regtype::text || ' AS ' || c.casttarget::regtype::text, 'CAST (' || "
            "c.castsource::regtype::text || ' AS ' || c.casttarget::regtype::text || ') ' || CASE c.castmethod "
            "WHEN 'f' THEN 'WITH FUNCTION ' || c.castfunc::regprocedure::text WHEN 'i' THEN 'WITH INOUT' ELSE "
            "'WITHOUT FUNCTION' END || ' AS ' || c.castcontext::text FROM pg_catalog.pg_cast c WHERE %s"
            % _own("pg_catalog.pg_cast", "c"),
        ),
        (
            "conversion",
            "SELECT n.nspname || '.' || c.conname, 'CONVERSION ' || n.nspname || '.' || c.conname || ' FOR ' || "
            "pg_catalog.pg_encoding_to_char(c.conforencoding) || ' TO ' || "
            "pg_catalog.pg_encoding_to_char(c.contoencoding) || ' FROM ' || c.conproc::regprocedure::text "
            "FROM pg_catalog.pg_conversion c JOIN pg_catalog.pg_namespace n ON n.oid = c.connamespace WHERE %s"
            % _own("pg_catalog.pg_conversion", "c"),
        ),
        (
            "operator class",
            "SELECT n.nspname || '.' || c.opcname, 'OPERATOR CLASS ' || n.nspname || '.' || c.opcname || ' FOR "
            "TYPE ' || c.opcintype::regtype::text FROM pg_catalog.pg_opclass c JOIN pg_catalog.pg_namespace n "
            "ON n.oid = c.opcnamespace WHERE %s" % _own("pg_catalog.pg_opclass", "c"),
        ),
        (
            "operator family",
            "SELECT n.nspname || '.' || f.opfname, 'OPERATOR FAMILY ' || n.nspname || '.' || f.opfname "
            "FROM pg_catalog.pg_opfamily f JOIN pg_catalog.pg_namespace n ON n.oid = f.opfnamespace WHERE %s"
            % _own("pg_catalog.pg_opfamily", "f"),
        ),
        (
            "language",
            "SELECT l.lanname, 'LANGUAGE ' || l.lanname || ' HANDLER ' || l.lanplcallfoid::regprocedure::text "
            "FROM pg_catalog.pg_language l WHERE %s" % _own("pg_catalog.pg_language", "l"),
        ),
        (
            "transform",
            "SELECT t.trftype::regtype::text, 'TRANSFORM FOR ' || t.trftype::regtype::text || ' FROM SQL ' || "
            "t.trffromsql::text || ' TO SQL ' || t.trftosql::text FROM pg_catalog.pg_transform t WHERE %s"
            % _own("pg_catalog.pg_transform", "t"),
        ),
        (
            "access method",
            "SELECT a.amname, 'ACCESS METHOD ' || a.amname || ' HANDLER ' || a.amhandler::text "
            "FROM pg_catalog.pg_am a WHERE %s" % _own("pg_catalog.pg_am", "a"),
        ),
        (
            "foreign-data wrapper",
            "SELECT w.fdwname, 'FOREIGN DATA WRAPPER ' || w.fdwname || ' HANDLER ' || w.fdwhandler::text || "
            "' VALIDATOR ' || w.fdwvalidator::text FROM pg_catalog.pg_foreign_data_wrapper w WHERE %s"
            % _own("pg_catalog.pg_foreign_data_wrapper", "w"),
        ),
        (
            "text search parser",
            "SELECT n.nspname || '.' || p.prsname, 'TEXT SEARCH PARSER ' || n.nspname || '.' || p.prsname "
            "FROM pg_catalog.pg_ts_parser p JOIN pg_catalog.pg_namespace n ON n.oid = p.prsnamespace WHERE %s"
            % _own("pg_catalog.pg_ts_parser", "p"),
        ),
        (
            "text search template",
            "SELECT n.nspname || '.' || t.tmplname, 'TEXT SEARCH TEMPLATE ' || n.nspname || '.' || t.tmplname "
            "FROM pg_catalog.pg_ts_template t JOIN pg_catalog.pg_namespace n ON n.oid = t.tmplnamespace WHERE %s"
            % _own("pg_catalog.pg_ts_template", "t"),
        ),
        (
            "type",
            "SELECT t.oid::regtype::text, 'TYPE ' || t.oid::regtype::text || ' ' || pg_catalog.concat_ws(' ', "
            "'INPUT', t.typinput::text, 'OUTPUT', t.typoutput::text, 'RECEIVE', t.typreceive::text, 'SEND', "
            "t.typsend::text, 'TYPMOD_IN', t.typmodin::text, 'TYPMOD_OUT', t.typmodout::text, 'ANALYZE', "
            "t.typanalyze::text, 'CANONICAL', r.rngcanonical::text, 'SUBTYPE_DIFF', r.rngsubdiff::text) "
            "FROM pg_catalog.pg_type t LEFT JOIN pg_catalog.pg_range r ON r.rngtypid = t.oid WHERE %s AND "
            "(SELECT pg_catalog.max(f) FROM pg_catalog.unnest(ARRAY[t.typinput, t.typoutput, t.typreceive, "
            "t.typsend, t.typmodin, t.typmodout, t.typanalyze, r.rngcanonical, r.rngsubdiff]::oid[]) f) >= %d"
            % (_own("pg_catalog.pg_type", "t"), FIRST_NORMAL_OID),
        ),
    )
    objects = []
    for kind, query in queries:
        cr.execute(query)
        objects.extend(CodeObject(kind, name, text) for name, text in cr.fetchall())
    return objects


def _expressions(cr):
    """(kind, name, canonical text, node tree) of every stored expression the dump could have made."""
    queries = (
        (
            "column default",
            "SELECT d.adrelid::regclass::text || '.' || pg_catalog.quote_ident(a.attname), CASE a.attgenerated "
            "WHEN 's' THEN 'GENERATED ALWAYS AS (' ELSE 'DEFAULT (' END || pg_catalog.pg_get_expr(d.adbin, "
            "d.adrelid) || ')', d.adbin::text, a.attgenerated = 's' FROM pg_catalog.pg_attrdef d JOIN "
            "pg_catalog.pg_attribute a ON a.attrelid = d.adrelid AND a.attnum = d.adnum WHERE d.oid >= %d"
            % FIRST_NORMAL_OID,
        ),
        (
            "check constraint",
            "SELECT c.conname || ' ON ' || CASE WHEN c.contypid <> 0 THEN c.contypid::regtype::text ELSE "
            "c.conrelid::regclass::text END, pg_catalog.pg_get_constraintdef(c.oid), c.conbin::text, "
            "c.contypid <> 0 FROM pg_catalog.pg_constraint c WHERE c.conbin IS NOT NULL AND c.oid >= %d"
            % FIRST_NORMAL_OID,
        ),
        (
            "domain default",
            "SELECT t.oid::regtype::text, 'DEFAULT (' || t.typdefault || ')', t.typdefaultbin::text, false "
            "FROM pg_catalog.pg_type t WHERE t.typdefaultbin IS NOT NULL AND t.oid >= %d" % FIRST_NORMAL_OID,
        ),
        (
            "index",
            "SELECT i.indexrelid::regclass::text, pg_catalog.pg_get_indexdef(i.indexrelid), "
            "coalesce(i.indexprs::text, '') || coalesce(i.indpred::text, ''), false FROM pg_catalog.pg_index i "
            "WHERE (i.indexprs IS NOT NULL OR i.indpred IS NOT NULL) AND i.indexrelid >= %d" % FIRST_NORMAL_OID,
        ),
        (
            "statistics",
            "SELECT s.oid::text, pg_catalog.pg_get_statisticsobjdef(s.oid), s.stxexprs::text, false "
            "FROM pg_catalog.pg_statistic_ext s WHERE s.stxexprs IS NOT NULL",
        ),
        (
            "view",
            "SELECT r.ev_class::regclass::text, pg_catalog.pg_get_viewdef(r.ev_class), r.ev_action::text, false "
            "FROM pg_catalog.pg_rewrite r WHERE r.rulename = '_RETURN' AND %s" % _own("pg_catalog.pg_rewrite", "r"),
        ),
        (
            "rule",
            "SELECT r.rulename || ' ON ' || r.ev_class::regclass::text, pg_catalog.pg_get_ruledef(r.oid), "
            "r.ev_qual::text || r.ev_action::text, false FROM pg_catalog.pg_rewrite r WHERE r.rulename <> '_RETURN' "
            "AND %s" % _own("pg_catalog.pg_rewrite", "r"),
        ),
        (
            "row-level policy",
            "SELECT p.polname || ' ON ' || p.polrelid::regclass::text, '', coalesce(p.polqual::text, '') || "
            "coalesce(p.polwithcheck::text, ''), false FROM pg_catalog.pg_policy p",
        ),
        (
            "trigger",
            "SELECT t.tgname || ' ON ' || t.tgrelid::regclass::text, pg_catalog.pg_get_triggerdef(t.oid), "
            "coalesce(t.tgqual::text, ''), false FROM pg_catalog.pg_trigger t WHERE NOT t.tgisinternal",
        ),
    )
    found = []
    for kind, query in queries:
        cr.execute(query)
        for name, text, tree, generated in cr.fetchall():
            if kind == "column default" and generated:
                found.append(("generated column", name, text, tree or ""))
            elif kind == "check constraint" and generated:
                found.append(("domain constraint", name, text, tree or ""))
            else:
                found.append((kind, name, text, tree or ""))
    return found


def _calls_of(cr, trees):
    """For each node tree, the functions it calls (its operators' included): [(ident, proname, origin, oid)], where
    origin is BUILTIN (PostgreSQL's own), EXTENSION_C (an extension's, in C), EXTENSION_SCRIPT (an extension's,
    in SQL or plpgsql: it may run SQL it builds from its arguments) or OWN (the dump's)."""
    per_tree, ops = [], set()
    for tree in trees:
        per_tree.append(
            ([int(m) for m in FUNCTION_FIELDS.findall(tree)], [int(m) for m in OPERATOR_FIELDS.findall(tree)])
        )
        ops.update(per_tree[-1][1])
    op_func = {}
    if ops:
        cr.execute("SELECT oid, oprcode::oid FROM pg_catalog.pg_operator WHERE oid = ANY(%s)", (sorted(ops),))
        op_func = {oid: func for oid, func in cr.fetchall() if func}
    wanted = {f for funcs, _ops in per_tree for f in funcs} | set(op_func.values())
    info = {}
    if wanted:
        cr.execute(
            "SELECT p.oid, p.oid::regprocedure::text, p.proname, CASE WHEN p.oid < %d THEN '%s' "
            "WHEN %s THEN CASE WHEN l.lanname IN ('c', 'internal') THEN '%s' ELSE '%s' END ELSE '%s' END "
            "FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_language l ON l.oid = p.prolang WHERE p.oid = ANY(%%s)"
            % (
                FIRST_NORMAL_OID,
                BUILTIN,
                MEMBER.format(catalog="pg_catalog.pg_proc", alias="p"),
                EXTENSION_C,
                EXTENSION_SCRIPT,
                OWN,
            ),
            (sorted(wanted),),
        )
        info = {oid: (ident, proname, origin, oid) for oid, ident, proname, origin in cr.fetchall()}
    return [
        [info[oid] for oid in dict.fromkeys(funcs + [op_func[o] for o in op_list if o in op_func]) if oid in info]
        for funcs, op_list in per_tree
    ]


def inventory(cr):
    """Every code-running object of the database ``cr`` is connected to: {(kind, name, text): CodeObject}, and for
    the expression users, which functions they call: {object: [(ident, proname, known, oid)]}."""
    cr.execute("SET search_path = pg_catalog")
    functions = _functions(cr)
    objects = list(functions.values()) + _catalog_objects(cr)
    expressions = _expressions(cr)
    calls = {}
    for (kind, name, text, _tree), targets in zip(
        expressions, _calls_of(cr, [tree for _k, _n, _t, tree in expressions]), strict=True
    ):
        if targets:
            calls[CodeObject(kind, name, text or name)] = targets
    return {(o.kind, o.name, o.text): o for o in objects}, calls, functions


def _allowed(obj):
    for entry in allowed_code.CODE:
        if entry.kind != obj.kind:
            continue
        if entry.text and entry.text == obj.folded:
            return True
        if entry.pattern and re.fullmatch(entry.pattern, obj.folded):
            return True
    return False


class Snapshot:
    """What the database held before the dump was loaded (the engine's own extensions): not the dump's."""

    def __init__(self, cr):
        objects, calls, _functions = inventory(cr)
        self.keys = set(objects) | {(o.kind, o.name, o.text) for o in calls}


def check(cr, before=None, accepted=()):
    """Refuse (CodeRefused) unless every code object made by the load is allowed or accepted; returns the accepted
    ones (CodeObject list), for the log."""
    accepted = set(accepted or ())
    objects, calls, functions = inventory(cr)
    known = before.keys if before is not None else set()

    def ok(obj):
        return _allowed(obj) or obj.digest in accepted

    refused, taken = [], []
    for key, obj in objects.items():
        if key in known:
            continue
        if _allowed(obj):
            continue
        (taken if obj.digest in accepted else refused).append(obj)
    bad_functions = {oid for oid, obj in functions.items() if not ok(obj)}
    # A schema named after a role comes first in that role's search path ("$user", public): its tables and views
    # would stand in for Odoo's own for that role (an ir_cron view showing neutralized crons as active).
    cr.execute(
        "SELECT n.nspname FROM pg_catalog.pg_namespace n WHERE n.oid >= %d AND n.nspname IN "
        "(SELECT r.rolname FROM pg_catalog.pg_roles r) ORDER BY 1" % FIRST_NORMAL_OID
    )
    for (schema,) in cr.fetchall():
        obj = CodeObject("schema named after a role", schema, "SCHEMA %s" % schema)
        (taken if obj.digest in accepted else refused).append(obj)
    for obj, targets in calls.items():
        if (obj.kind, obj.name, obj.text) in known:
            continue
        # An extension's SQL and plpgsql functions may build SQL from their arguments (PostGIS's st_findextent
        # quotes none): a default, a check, an index or a view of a dump from outside calls its C functions only.
        problems = [
            ident
            for ident, proname, origin, oid in targets
            if DENIED_CALLS.fullmatch(proname)
            or (proname == "nextval" and obj.kind not in SEQUENCE_CALL_KINDS)
            or origin == EXTENSION_SCRIPT
            or (origin == OWN and oid in bad_functions)
        ]
        if not problems:
            continue
        labelled = CodeObject(obj.kind, obj.name, "%s CALLS %s" % (obj.text, ", ".join(sorted(problems))))
        (taken if labelled.digest in accepted else refused).append(labelled)
    if refused:
        refused.sort(key=lambda o: (o.kind, o.name))
        raise CodeRefused(refusal_text(refused), refused)
    return taken


def refusal_text(objects):
    lines = [
        "the dump holds %d object%s that would run code and %s not among what Odoo, OpenSPP and their modules "
        "create (engine/db/allowed_code.py), so nothing of it was kept:"
        % (len(objects), "" if len(objects) == 1 else "s", "is" if len(objects) == 1 else "are")
    ]
    # Each definition whole (a digest accepts all of it), with hidden characters escaped.
    for obj in objects[:50]:
        lines.append("  %s" % obj.line())
        lines.append("      %s" % visible(obj.folded))
    if len(objects) > 50:
        lines.append("  ... and %d more (not shown, so they cannot be accepted from this list)" % (len(objects) - 50))
    lines.append(
        "Read each definition. Only if you trust it, copy its sha256 line into a file and import again with "
        "--accept-code FILE (on the command line; Odoo never accepts code)."
    )
    return "\n".join(lines)


DIGEST_RE = re.compile(r"sha256:[0-9a-f]{64}")
ACCEPT_FILE_LIMIT = 1 << 20


def read_accepted(path):
    """The digests a person accepted: the first word of each line that is not blank or a # comment."""
    try:
        # Asked before it is opened: opening a FIFO would wait for a writer.
        info = os.stat(path)
        if not stat.S_ISREG(info.st_mode) or info.st_size > ACCEPT_FILE_LIMIT:
            raise SqlRefused(
                "the accepted-code file %s is not a regular file of at most %d KiB: give the file you copied the "
                "sha256 lines into" % (path, ACCEPT_FILE_LIMIT // 1024)
            )
        with open(path, "rb") as handle:
            lines = handle.read(ACCEPT_FILE_LIMIT + 1).decode("utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise SqlRefused("cannot read the accepted-code file %s (%s)" % (path, exc)) from exc
    digests = set()
    for number, line in enumerate(lines, 1):
        words = line.split()
        if not words or words[0].startswith("#"):
            continue
        if not DIGEST_RE.fullmatch(words[0]):
            raise SqlRefused(
                "line %d of %s is not a digest a refusal printed (sha256: and 64 hex digits): %r"
                % (number, path, line[:80])
            )
        digests.add(words[0])
    return frozenset(digests)
