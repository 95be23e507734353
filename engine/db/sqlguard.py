"""Reading plain SQL from outside before psql sees a byte of it.

A plain-SQL dump (``dump.sql`` in an Odoo zip, a ``.sql`` file, or what
``pg_restore -f -`` makes of a custom-format dump) is a psql script, and a
psql script can do more than SQL: ``\\!`` runs a shell command, ``\\connect``
opens another database, ``\\o`` writes a file. :class:`SqlGuard` reads the
script line by line the way psql's lexer does (quotes, dollar quotes, quoted
identifiers, nested comments, COPY data) and refuses, naming the line:

- every backslash command except a matching ``\\restrict``/``\\unrestrict``
  pair and the ``\\.`` that ends COPY data;
- statements that act outside the database being loaded: databases, roles,
  tablespaces, ``ALTER SYSTEM``, ``COPY`` other than ``FROM stdin``,
  ``LOAD``, ``DO``, ``SECURITY DEFINER``, server file and process functions,
  settings that would change how psql splits the script
  (``client_encoding``, ``standard_conforming_strings``), extensions outside
  :data:`ALLOWED_EXTENSIONS`;
- a string literal whose end depends on ``standard_conforming_strings``;
- a script that does not end with pg_dump's completion marker (a truncated
  dump), or that opens ``\\restrict`` and never closes it.

``CREATE EXTENSION`` and ``COMMENT ON EXTENSION`` of an allowed extension, and
``ALTER … OWNER TO``, are left out of what psql gets: the engine creates the
extensions itself, and the loaded objects belong to the import role.

This is the first of two layers; the second is that psql runs as a role that
owns the scratch database and nothing else, under a ``\\restrict`` key of the
engine's own (see :mod:`engine.db.sqlimport`).
"""

import re

from ..core.errors import RestoreError
from .allowed_code import EXTENSION_SCHEMAS, EXTENSIONS

# Extensions Odoo and OpenSPP use (engine/db/allowed_code.py says where each comes from); the engine creates them in
# the scratch database itself.
ALLOWED_EXTENSIONS = frozenset(EXTENSIONS)
# Settings pg_dump writes at the top of a script, with the values that keep psql's lexing as the guard's.
ALLOWED_SETTINGS = frozenset(
    (
        "statement_timeout",
        "lock_timeout",
        "idle_in_transaction_session_timeout",
        "transaction_timeout",
        "client_encoding",
        "standard_conforming_strings",
        "check_function_bodies",
        "xmloption",
        "client_min_messages",
        "row_security",
        "default_tablespace",
        "default_table_access_method",
        "default_with_oids",
        "search_path",
        "escape_string_warning",
    )
)
COMPLETION_MARKER = b"-- PostgreSQL database dump complete"

TOP, SQUOTE, ESTRING, DOLLAR, DQUOTE, BLOCK, COPY = range(7)
SPECIAL = re.compile(rb"['\"$\\;]|--|/\*")
WORD_TAIL = re.compile(rb"[A-Za-z0-9_$\x80-\xff]+$")
DOLLAR_TAG = re.compile(rb"\$([A-Za-z\x80-\xff_][A-Za-z\x80-\xff_0-9]*)?\$")
PARAM = re.compile(rb"\$[0-9]+")
BLOCK_EDGE = re.compile(rb"/\*|\*/")
E_END = re.compile(rb"\\.|'", re.S)
META = re.compile(rb"\\([A-Za-z]+|.)")
RESTRICT_LINE = re.compile(rb"[ \t]*\\(restrict|unrestrict)[ \t]+([A-Za-z0-9]+)[ \t]*\r?\n?")
COPY_END = (b"\\.\n", b"\\.\r\n")
# psql reads ":name" as a variable token: harmless in itself (an array slice [1:n]), but where a quote or '$'
# follows, psql and this guard would start the next token at different places.
VARIABLE = re.compile(rb"(?<!:)(:+)[A-Za-z0-9_\x80-\xff]*$")
EXPONENT_TAIL = re.compile(rb"(?<![A-Za-z_\x80-\xff$0-9.])[0-9.]*[0-9][0-9.]*[eE]$")
HIGH_BYTE_BACKSLASH = re.compile(rb"[\x80-\xff]\\")
UTF8_BOM = b"\xef\xbb\xbf"
PARENS = re.compile(rb"[()]")

WORDS = re.compile(r'"(?:[^"]|"")*"|(?:[^\W\d]|_)[\w$]*|\S')
QUOTED = re.compile(r'"(?:[^"]|"")*"')
# The statements pg_dump and pg_restore -f write; anything else is refused.
STATEMENTS = frozenset(
    ("SET", "SELECT", "CREATE", "ALTER", "COMMENT", "COPY", "GRANT", "REVOKE", "INSERT", "REFRESH", "DROP")
)
OUTSIDE = r"(DATABASE|ROLE|USER|GROUP|TABLESPACE|SUBSCRIPTION|PUBLICATION|SERVER|FOREIGN DATA WRAPPER|EVENT TRIGGER)"
FORBIDDEN_FUNCTIONS = re.compile(
    r"\b(PG_READ_FILE|PG_READ_BINARY_FILE|PG_LS_\w+|PG_STAT_FILE|LO_IMPORT|LO_EXPORT|PG_FILE_\w+|DBLINK\w*|"
    r"PG_TERMINATE_BACKEND|PG_CANCEL_BACKEND|PG_RELOAD_CONF|PG_ROTATE_LOGFILE|PG_PROMOTE|PG_SWITCH_WAL|"
    r"PG_CREATE_\w+|PG_DROP_\w+|PG_LOGICAL_\w+|PG_REPLICATION_\w+|PG_CURRENT_LOGFILE|PG_SETTINGS|"
    r"PG_SLEEP\w*|PG_ADVISORY\w*)\b"
)
SET_CONFIG_SEARCH_PATH = re.compile(r"SELECT (pg_catalog\.)?set_config\('search_path', '', false\);", re.I)
SELECT_FORMS = (
    SET_CONFIG_SEARCH_PATH,
    re.compile(r"SELECT pg_catalog\.setval\('(?:[^']|'')+', -?[0-9]+, (true|false)\);"),
    re.compile(r"SELECT pg_catalog\.lo_create\('[0-9]+'\);"),
    re.compile(r"SELECT pg_catalog\.lo_open\('[0-9]+', 131072\);"),
    re.compile(r"SELECT pg_catalog\.lowrite\(0, '\\x[0-9a-f]*'\);"),
    re.compile(r"SELECT pg_catalog\.lo_close\(0\);"),
)
COPY_FORM = re.compile(r"COPY [^ ();]+ ?(\([^()]*\) )?FROM STDIN( WITH \([A-Z ,']*\)| [A-Z ,']*)? ?;")
# What a function body may not hold: the import role could not do it anyway; the guard says so by name.
OUTSIDE_IN_BODY = re.compile(
    r"\b(COPY|PROGRAM|LOAD|ALTER SYSTEM|(CREATE|ALTER|DROP) (ROLE|USER|GROUP|DATABASE|TABLESPACE|SUBSCRIPTION)|"
    r"GRANT|REVOKE|REASSIGN|DBLINK\w*)\b"
)
# Names that change how psql splits the script when a function or rule sets them at run time.
DYNAMIC_SETTINGS = re.compile(r"\b(SET_CONFIG|PG_SETTINGS|CLIENT_ENCODING|STANDARD_CONFORMING_STRINGS)\b")


class SqlRefused(RestoreError):
    """The script holds something a dump from outside may not do."""


class DumpTruncated(RestoreError):
    """The script ends before pg_dump's end: it was cut."""


def _ident(token):
    if token.startswith('"'):
        return token[1:-1].replace('""', '"')
    return token.lower()


class SqlGuard:
    """Feed a psql script line by line; get back the lines psql may have.

    ``feed(line)`` returns the lines to pass on (statements are held back
    until they are complete and checked); ``finish()`` checks the end and
    returns what is left. A refusal raises :class:`SqlRefused` or
    :class:`DumpTruncated` naming the line.
    """

    def __init__(self, keep=True, checkpoint=None):
        self.keep = keep
        # A line of the engine's own, passed on after every statement and every COPY's data (see sqlimport).
        self.checkpoint = checkpoint
        self.last_end_line = 0
        self.line_no = 0
        self.state = TOP
        self.tag = b""
        self.depth = 0
        self.parens = 0
        self.code = []  # the current statement outside literals and comments (literals as '')
        self.raw = []  # the same with literals verbatim
        self.pending = []
        self.pending_statements = []
        self.statement_line = 0
        self.copy_next = False
        self.restrict_key = None
        self.restrict_closed = False
        self.complete = False
        self.extensions = set()
        self.skipped = {"owner": 0, "extension": 0}
        self.statements = 0
        self.copy_rows = 0

    # -- reading ---------------------------------------------------------

    def refuse(self, message, line_no=None):
        raise SqlRefused("line %d of the dump: %s." % (line_no or self.line_no, message))

    def feed(self, line):
        self.line_no += 1
        if b"\x00" in line:
            # psql reads lines with fgets and strlen: a NUL hides the rest of the line from it, and not from us.
            self.refuse("the dump holds a NUL byte, which psql and this check would read differently")
        if b"\r" in line and not (line.endswith(b"\r\n") and line.count(b"\r") == 1):
            # psql's lexer ends a line (and a -- comment) at a lone carriage return.
            self.refuse("the dump holds a carriage return that does not end a line")
        if self.line_no == 1 and line.startswith(UTF8_BOM):
            line = line[len(UTF8_BOM) :]  # psql skips a byte-order mark at the start of a file, so do we
        if self.state != COPY and HIGH_BYTE_BACKSLASH.search(line):
            # In encodings such as SJIS a backslash can be the second byte of a character: psql would not see it.
            self.refuse("a backslash right after a non-ASCII byte; the dump cannot be read safely")
        if self.state == COPY:
            if line in COPY_END:
                self.state = TOP
                if self.keep and self.checkpoint:
                    return [line, self.checkpoint]
            else:
                self.copy_rows += 1
            return [line] if self.keep else ()
        if self.restrict_closed and line.strip() and not line.lstrip().startswith(b"--"):
            self.refuse("there is more after \\unrestrict, which ends pg_dump's output")
        if self.state == TOP and not self._statement_open():
            stripped = line.strip()
            if stripped.startswith(b"\\"):
                self._meta_line(line)
                return ()
            if stripped == COMPLETION_MARKER:
                self.complete = True
            elif stripped and not stripped.startswith(b"--"):
                self.complete = False
        self._scan(line)
        if self.keep:
            self.pending.append(line)
        if self.copy_next:
            self.copy_next = False
            self.state = COPY
            return self._flush(checkpoint=False)  # the checkpoint comes after the data, not inside it
        if self.state == TOP and not self._statement_open():
            return self._flush()
        return ()

    def finish(self):
        """Check the end of the script; returns the last lines to pass on."""
        if self.state == COPY:
            raise DumpTruncated(
                "the dump is truncated: it ends inside the data of a table (line %d), before pg_dump's end."
                % self.line_no
            )
        if self.state != TOP or self._statement_open():
            raise DumpTruncated(
                "the dump is truncated: it ends inside a statement that began on line %d." % self.statement_line
            )
        if self.restrict_key is not None and not self.restrict_closed:
            raise DumpTruncated("the dump is truncated: it opens \\restrict and never closes it (\\unrestrict).")
        if not self.complete:
            raise DumpTruncated(
                "the dump is truncated: it does not end with pg_dump's line '%s'." % COMPLETION_MARKER.decode()
            )
        return self._flush()

    def _statement_open(self):
        return any(part.strip() for part in self.code)

    def _flush(self, checkpoint=True):
        if not self.keep:
            self.pending_statements = []
            return ()
        lines = self.pending
        statements = self.pending_statements
        self.pending, self.pending_statements = [], []
        if len(statements) == 1 and statements[0]:
            self.skipped[statements[0]] += 1
            return ()
        if statements and self.checkpoint and checkpoint:
            return lines + [self.checkpoint]
        return lines

    def _meta_line(self, line):
        match = RESTRICT_LINE.fullmatch(line)
        if match and match.group(1) == b"restrict" and self.restrict_key is None and not self.statements:
            self.restrict_key = match.group(2)
            return
        if match and match.group(1) == b"unrestrict" and match.group(2) == self.restrict_key:
            if self.restrict_closed:
                self.refuse("\\unrestrict appears twice")
            self.restrict_closed = True
            return
        if match:
            self.refuse(
                "\\%s does not match pg_dump's single \\restrict ... \\unrestrict pair" % match.group(1).decode()
            )
        self._refuse_meta(line, line.index(b"\\"))

    def _refuse_meta(self, line, at):
        command = META.match(line, at).group(0).decode("utf-8", "replace")
        self.refuse(
            "psql command %s is not allowed in a dump from outside (a dump may hold SQL and COPY data only)" % command
        )

    def _scan(self, line):
        i, n = 0, len(line)
        self.boundary = 0  # where the last literal, comment or quoted identifier of this line closed
        code, raw = self.code, self.raw
        while i < n:
            state = self.state
            if state == TOP:
                if not self._statement_open() and line[i:].strip():
                    self.statement_line = self.line_no
                match = SPECIAL.search(line, i)
                if not match:
                    self._code(line[i:], b"\n")
                    raw.append(line[i:])
                    return
                j = match.start()
                char = line[j : j + 1]
                self._code(line[i:j], char)
                raw.append(line[i:j])
                if char == b"'":
                    self._open_quote(line, j)
                    i = j + 1
                elif char == b'"':
                    if line[max(0, j - 2) : j].upper() == b"U&":
                        self.refuse('Unicode-escaped identifiers (U&"...") are not read by imports')
                    self.state = DQUOTE
                    code.append(b'"')
                    raw.append(b'"')
                    i = j + 1
                elif char == b"$":
                    i = self._dollar(line, j)
                elif char == b"\\":
                    self._refuse_meta(line, j)
                elif char == b";":
                    if self.parens:
                        # psql ends a statement only outside parentheses: it would not end here.
                        self.refuse("a ';' inside parentheses")
                    code.append(b";")
                    raw.append(b";")
                    self._end_statement(line, j)
                    i = j + 1
                elif line.startswith(b"--", j):
                    if EXPONENT_TAIL.search(line, max(self.boundary, j - 64), j):
                        # psql reads "1e-" as one (bad) number: the second '-' does not start a comment for it.
                        self.refuse("a number runs into '--'; the dump cannot be read safely")
                    code.append(b" ")
                    raw.append(b" ")
                    return
                else:  # /*
                    self.state, self.depth = BLOCK, 1
                    code.append(b" ")
                    raw.append(b" ")
                    i = j + 2
            elif state == SQUOTE:
                j = line.find(b"'", i)
                if j < 0:
                    raw.append(line[i:])
                    return
                run = len(line[i:j]) - len(line[i:j].rstrip(b"\\"))
                if run % 2:
                    self.refuse(
                        "a string literal ends in a backslash before its quote; where it ends depends on "
                        "standard_conforming_strings, so the dump cannot be read safely"
                    )
                if line.startswith(b"''", j):
                    raw.append(line[i : j + 2])
                    i = j + 2
                    continue
                raw.append(line[i : j + 1])
                code.append(b"'")
                self.state = TOP
                i = self.boundary = j + 1
            elif state == ESTRING:
                while True:
                    match = E_END.search(line, i)
                    if not match:
                        raw.append(line[i:])
                        return
                    if match.group(0) == b"'" and not line.startswith(b"''", match.start()):
                        break
                    raw.append(line[i : match.end()])
                    i = match.end() + (1 if match.group(0) == b"'" else 0)
                raw.append(line[i : match.end()])
                code.append(b"'")
                self.state = TOP
                i = self.boundary = match.end()
            elif state == DOLLAR:
                j = line.find(self.tag, i)
                if j < 0:
                    raw.append(line[i:])
                    return
                raw.append(line[i : j + len(self.tag)])
                code.append(b"'")
                self.state = TOP
                i = self.boundary = j + len(self.tag)
            elif state == DQUOTE:
                j = line.find(b'"', i)
                if j < 0:
                    code.append(line[i:])
                    raw.append(line[i:])
                    return
                code.append(line[i : j + 1])
                raw.append(line[i : j + 1])
                if line.startswith(b'""', j):
                    i = j + 2
                    continue
                self.state = TOP
                i = self.boundary = j + 1
            else:  # BLOCK
                match = BLOCK_EDGE.search(line, i)
                if not match:
                    return
                self.depth += 1 if match.group(0) == b"/*" else -1
                if not self.depth:
                    self.state = TOP
                i = self.boundary = match.end()

    def _code(self, segment, following):
        """A run of SQL outside literals and comments, followed by the special character ``following``."""
        variable = VARIABLE.search(segment) if following in (b"'", b'"', b"$") else None
        if variable and len(variable.group(1)) % 2:  # "::" is a cast; an odd colon left over starts a variable
            self.refuse("psql variables (:name) are not allowed in a dump from outside")
        for paren in PARENS.findall(segment):
            self.parens = self.parens + 1 if paren == b"(" else max(0, self.parens - 1)
        self.code.append(segment)

    def _word_before(self, line, j):
        """The identifier-like word right before ``line[j]``; refused where psql would read a number there."""
        # Only what follows the last closed literal: "$$$$$$" is three dollar quotes, not a word and a quote.
        window = line[max(self.boundary, j - 256) : j]
        match = WORD_TAIL.search(window)
        word = match.group(0) if match else b""
        before = window[: len(window) - len(word)]
        if word[:1].isdigit() or (word and before.endswith(b".") and before[-2:-1].isdigit()):
            self.refuse("a number runs into %r; the dump cannot be read safely" % (word + line[j : j + 1]).decode())
        return word

    def _open_quote(self, line, j):
        word = self._word_before(line, j)
        self.state = ESTRING if word in (b"e", b"E") else SQUOTE
        self.raw.append(b"'")
        code = self.code
        if word and word.upper() in (b"E", b"B", b"X", b"N"):
            code[-1] = code[-1][: len(code[-1]) - len(word)]
        elif code and code[-1].upper().endswith(b"U&"):
            code[-1] = code[-1][:-2]  # U&'...' is one string to psql, not an identifier U

    def _dollar(self, line, j):
        word = self._word_before(line, j)
        if word:
            self.code.append(b"$")
            self.raw.append(b"$")
            return j + 1
        param = PARAM.match(line, j)
        if param:
            if line.startswith(b"$", param.end()):
                self.refuse("a parameter runs into '$'; the dump cannot be read safely")
            self.code.append(param.group(0))
            self.raw.append(param.group(0))
            return param.end()
        tag = DOLLAR_TAG.match(line, j)
        if tag:
            self.state, self.tag = DOLLAR, tag.group(0)
            self.raw.append(self.tag)
            return tag.end()
        self.code.append(b"$")
        self.raw.append(b"$")
        return j + 1

    # -- judging statements ---------------------------------------------

    def _end_statement(self, line, j):
        code = b"".join(self.code).decode("utf-8", "replace")
        raw = b"".join(self.raw).decode("utf-8", "replace")
        if self.last_end_line == self.line_no:
            # pg_dump ends each statement on a line of its own; psql would read the rest of this line as it stood
            # before the first statement ran (a setting that statement changed applies from the next line).
            self.refuse("two statements end on one line")
        self.last_end_line = self.line_no
        # Emptied in place: _scan holds these lists while it reads the rest of the line.
        del self.code[:], self.raw[:]
        self.parens = 0
        self.statements += 1
        line_no = self.statement_line or self.line_no
        verdict = self.judge(code, raw, line_no)
        if verdict == "copy":
            if line[j + 1 :].strip():
                self.refuse("COPY ... FROM stdin must end its line", line_no)
            self.copy_next = True
            verdict = None
        self.pending_statements.append(verdict)

    def judge(self, code, raw, line_no):
        """None (pass it on), 'owner'/'extension' (leave it out), 'copy' (data follows), or a refusal."""
        text = " ".join(code.upper().split())
        # Structure is judged with every quoted identifier as "_" (a column named "to;x" is only a name), names
        # of functions and settings with the quotes dropped ("pg_read_file" is pg_read_file).
        plain = QUOTED.sub('"_"', text)
        bare = text.replace('"', "")
        words = WORDS.findall(plain)
        if not words or words == [";"]:
            return None
        names = [w for w in words if w != '"_"']

        def refuse(why):
            snippet = " ".join(raw.split())
            self.refuse("%s (%s)" % (why, snippet[:120] + ("..." if len(snippet) > 120 else "")), line_no)

        first, second = words[0], (words[1] if len(words) > 1 else "")
        is_set_config_line = bool(SET_CONFIG_SEARCH_PATH.fullmatch(" ".join(raw.split())))
        if text in ("BEGIN;", "COMMIT;"):
            return None  # pg_dump wraps large objects in a transaction; the scratch database goes if anything fails
        if first not in STATEMENTS:
            refuse("pg_dump writes no %s statement" % first)
        head = " ".join(names[:4])
        if re.match(r"(CREATE|ALTER|DROP|COMMENT ON) (OR REPLACE )?%s\b" % OUTSIDE, head):
            refuse("a dump from outside may only change the database it is loaded into")
        if first == "ALTER" and second == "SYSTEM":
            refuse("ALTER SYSTEM changes the server's configuration")
        if first == "ALTER" and second == "DEFAULT" and "FOR" in words[:5]:
            return "owner"  # default privileges of the dump's own roles, like its OWNER TO lines
        if first == "DROP" and second == "OWNED":
            refuse("DROP OWNED acts on a role")
        if first in ("GRANT", "REVOKE"):
            if "ON" not in words:
                refuse("granting roles changes who may do what on the whole server")
            target = words[words.index("ON") + 1 : words.index("ON") + 3]
            if target[:1] in (["DATABASE"], ["TABLESPACE"], ["FOREIGN"], ["LARGE"], ["PARAMETER"]):
                refuse("this grant acts outside the database being loaded")
        if first == "SET":
            self._judge_setting(words, raw, refuse)
        # The identifiers psql counts for its CREATE FUNCTION ... BEGIN rule: unquoted words, in order.
        idents, colons = [], 0
        for word in words:
            if word == ":":
                colons += 1
                continue
            if (word[:1].isalpha() or word[:1] == "_") and not colons % 2:  # ":name" is a psql variable
                idents.append(word)
            colons = 0
        is_function = idents[:1] == ["CREATE"] and (
            idents[1:2] in (["FUNCTION"], ["PROCEDURE"])
            or (idents[1:3] == ["OR", "REPLACE"] and idents[3:4] in (["FUNCTION"], ["PROCEDURE"]))
        )
        if is_function or first == "ALTER" and second in ("FUNCTION", "PROCEDURE", "ROUTINE"):
            # What runs inside is a literal to this guard: read it for what would change the role, the encoding,
            # how strings are read, or SQL made at run time.
            body = " ".join(raw.upper().replace('"', "").split())
            if "U&" in body:
                refuse("Unicode-escaped names are not read in function bodies")
            if OUTSIDE_IN_BODY.search(body):
                refuse("a function may not copy files or programs, nor act on roles, databases or the server")
            if FORBIDDEN_FUNCTIONS.search(body):
                refuse("a function may not call server file, process, setting and replication functions")
            if re.search(
                r"\bSET (SESSION |LOCAL )?(ROLE|SESSION_AUTHORIZATION|SESSION AUTHORIZATION|CLIENT_ENCODING|"
                r"STANDARD_CONFORMING_STRINGS|NAMES)\b|\bEXECUTE\b",
                body,
            ):
                refuse(
                    "a function may not change the role, the encoding or how strings are read, nor run SQL made "
                    "at run time (EXECUTE)"
                )
        if is_function and "BEGIN" in self._top_level(words):
            # psql keeps a CREATE FUNCTION ... BEGIN open past its ';' (SQL-standard bodies): it would not split here.
            refuse("SQL-standard function bodies (BEGIN ATOMIC ... END) are not read by imports")
        if re.search(r"\bSECURITY DEFINER\b", plain):
            refuse("functions that run with their owner's rights are not allowed in a dump from outside")
        if FORBIDDEN_FUNCTIONS.search(bare) or (
            first != "SET" and DYNAMIC_SETTINGS.search(raw.upper().replace('"', "")) and not is_set_config_line
        ):
            refuse("server file, process, setting and replication functions are not allowed in a dump from outside")
        if re.search(r"\bSET_CONFIG\b", bare) and not is_set_config_line:
            refuse("set_config is allowed only as pg_dump writes it (the search path)")
        if first == "SELECT" and not any(form.fullmatch(" ".join(raw.split())) for form in SELECT_FORMS):
            refuse("pg_dump writes no SELECT other than setval, set_config and large objects")
        if first == "COPY":
            if not COPY_FORM.fullmatch(plain):
                refuse("COPY is allowed only as FROM stdin (no PROGRAM, no server files)")
            return "copy"
        if first == "ALTER" and " OWNER TO " in " %s " % plain:
            return "owner"
        if words[:2] == ["CREATE", "SCHEMA"] or words[:3] == ["COMMENT", "ON", "SCHEMA"]:
            schema = WORDS.findall(text)[3 if first == "COMMENT" else 2 :][:1]
            if schema and _ident(schema[0]) in EXTENSION_SCHEMAS:
                return "extension"  # the schema an allowed extension makes for itself (postgis_topology's topology)
        if (first in ("CREATE", "ALTER", "DROP") and second == "EXTENSION") or words[:3] == [
            "COMMENT",
            "ON",
            "EXTENSION",
        ]:
            return self._judge_extension(WORDS.findall(text), raw, refuse)
        return None

    @staticmethod
    def _top_level(words):
        """The words of a statement outside parentheses (psql's BEGIN rule looks there only)."""
        depth, found = 0, []
        for word in words:
            if word == "(":
                depth += 1
            elif word == ")":
                depth = max(0, depth - 1)
            elif not depth:
                found.append(word)
        return found

    def _judge_setting(self, words, raw, refuse):
        if words[0] == "RESET":
            refuse("RESET is not part of a dump")
        rest = [w for w in words[1:] if w not in ("SESSION", "LOCAL")]
        name = _ident(rest[0]).lower() if rest else ""
        if name in ("role", "authorization") or "AUTHORIZATION" in words[:3]:
            refuse("changing the role or session is not allowed in a dump from outside")
        if name == "names" or name not in ALLOWED_SETTINGS:
            refuse("setting %s is not among the settings pg_dump writes" % (name or "?"))
        value = re.split(r"(?i)\s(?:=|TO)\s", raw, maxsplit=1)[-1].strip().rstrip(";").strip().strip("'").lower()
        if name == "client_encoding" and value not in ("utf8", "utf-8"):
            refuse("the dump must be read as UTF8 (client_encoding)")
        if name == "standard_conforming_strings" and value != "on":
            refuse("standard_conforming_strings must stay on")

    def _judge_extension(self, words, raw, refuse):
        if words[0] == "ALTER":
            refuse("a dump from outside may not alter extensions")
        names = [w for w in words[2:] if w not in ("EXTENSION", "IF", "NOT", "EXISTS", "OR", "REPLACE")]
        name = _ident(names[0]).lower() if names else ""
        if name not in ALLOWED_EXTENSIONS:
            refuse(
                "extension %s is not among those this server creates for an import (%s)"
                % (name or "?", ", ".join(sorted(ALLOWED_EXTENSIONS)))
            )
        if words[0] == "CREATE":
            schema = re.search(r"(?i)\bSCHEMA\s+\"?([A-Za-z_]+)", raw)
            if schema and schema.group(1).lower() not in ("public", "pg_catalog", EXTENSIONS[name].schema):
                refuse("extension %s is created in schema %s only" % (name, EXTENSIONS[name].schema))
            self.extensions.add(name)
        return "extension"


def scan(stream, keep=False):
    """Read a whole script through a guard; returns the guard (extensions, counts) or raises."""
    guard = SqlGuard(keep=keep)
    for line in stream:
        guard.feed(line)
    guard.finish()
    return guard
