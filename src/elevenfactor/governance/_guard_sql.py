"""Destructive SQL in a tool call's arguments (factor 10), found by parsing with ``sqlglot``.

``find_destructive_sql`` splits the input into statements with the dialect's tokenizer (so
comments and string literals never count: ``SELECT 'DROP TABLE x'`` is safe, while
``/* hi */ DROP TABLE x`` is not), parses each statement, walks the whole tree (a writable
CTE's ``DELETE`` counts) and reports one ``Finding`` per dangerous construct. Rules, all
``sql.<kind>`` with kind ``sql_<kind>``:

- ``sql.drop``: ``DROP`` of anything (table, view, index, schema, database, function, …).
- ``sql.truncate``: ``TRUNCATE``.
- ``sql.delete_without_where`` / ``sql.update_without_where``: no ``WHERE``, or one that is
  always true (``1=1``, ``TRUE``, ``WHERE 1``, ``'a'='a'``, ``id = id``, ``x=1 OR TRUE``…: see
  ``_guard_sql_where`` for what is covered: sqlglot's optimizer ``simplify`` plus MySQL and
  SQLite truthiness). ``LIMIT``, ``JOIN`` or ``USING`` do not make them safe. Statements
  inside ``MERGE … WHEN MATCHED`` are bounded by its ``ON`` and not flagged.
- ``sql.alter_drop``: a ``DROP`` action of ``ALTER`` (``DROP COLUMN``, partition, constraint…).
- ``sql.create_replace``: ``CREATE OR REPLACE TABLE`` (replaces the table's rows).
- ``sql.insert_overwrite``: ``INSERT OVERWRITE`` (Hive, Spark, Databricks).
- ``sql.grant`` / ``sql.revoke``: privilege changes are never routine for an agent.
- ``sql.copy_program``: PostgreSQL ``COPY … TO/FROM PROGRAM`` (a shell command on the server).
- ``sql.attach``: ``ATTACH DATABASE`` (SQLite, DuckDB: opens or creates a file anywhere, a
  known file-write vector). ``DETACH`` is not flagged.
- ``sql.dynamic``: ``EXEC``/``EXECUTE``/``sp_executesql``/``DO``/``PREPARE``: SQL built at run
  time cannot be inspected.
- ``sql.executable_comment``: MySQL/MariaDB ``/*! … */`` and ``/*M! … */`` comments, whose
  content MySQL runs; that content is also scanned as SQL.
- ``sql.unparseable``: a statement sqlglot cannot parse, one it only recognised by its first
  keyword (an opaque ``Command``: ``EXPLAIN ANALYZE …``, ``CALL``, ``VACUUM``), an expression
  that is not a statement, or input longer than ``MAX_SQL_LENGTH``. Never an exception: a
  guard decides by policy whether to block or escalate (fail closed).

Not flagged: dangerous functions called from ``SELECT`` (``pg_terminate_backend``,
``lo_unlink``). ``SELECT … INTO OUTFILE`` and ``LOAD DATA`` do not parse, so they surface as
``sql.unparseable``. When sqlglot falls back to an opaque ``Command`` it logs a warning on the
``sqlglot`` logger; the parser is told to quote none of the SQL in it.

**Dialects.** Give the database's dialect (a sqlglot name: ``postgres``, ``mysql``, ``sqlite``,
``tsql``, …); an unknown name raises ``ValueError``. With none, the input is read the way the
generic, MySQL, PostgreSQL and SQLite tokenizers would read it (backslash escapes, ``#``
comments, nested comments and ``$$`` strings differ) and a destructive statement in any
reading is reported, so a string or comment that hides a statement from one reading cannot
hide it from another; ``sql.unparseable`` is then reported when no reading parses every
statement or when any reading cannot tokenize the input. That union can flag text a specific
database would treat as a literal: pass the dialect when it is known.

Positions are those of the statement in the input (``sql[start:end]``), or -1 when the input
could not be tokenized. ``detail`` names the statement kind and its target, never the rest of
the text.
"""

from __future__ import annotations

import bisect
import re
from dataclasses import dataclass
from functools import lru_cache

from sqlglot import Dialect, Token, TokenType, exp
from sqlglot.dialects.mysql import MySQL
from sqlglot.errors import ErrorLevel, ParseError

from elevenfactor.governance._guard_sql_where import always_true
from elevenfactor.governance._guard_types import Finding

__all__ = ["MAX_SQL_LENGTH", "SQL_RULES", "find_destructive_sql"]

MAX_SQL_LENGTH = 100_000
"""Longer inputs are not parsed: one ``sql.unparseable`` finding. Parsing is pure Python (about
0.1 ms per short statement and reading), so this bounds a call to a few seconds of CPU; a
guard on an event loop should run the check in a worker thread."""

SQL_RULES: tuple[str, ...] = (
    "sql.drop",
    "sql.truncate",
    "sql.delete_without_where",
    "sql.update_without_where",
    "sql.alter_drop",
    "sql.create_replace",
    "sql.insert_overwrite",
    "sql.grant",
    "sql.revoke",
    "sql.copy_program",
    "sql.attach",
    "sql.dynamic",
    "sql.executable_comment",
    "sql.unparseable",
)
"""Every rule ``find_destructive_sql`` can report."""

_UNPARSEABLE = "sql.unparseable"
_READINGS: tuple[str | None, ...] = (None, "mysql", "postgres", "sqlite")
_EXEC_COMMENT = re.compile(r"/\*M?!\d*")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
# ALTER actions other than Drop that remove something (DropPrimaryKey is new in sqlglot 30.x).
_ALTER_DROPS: tuple[type[exp.Expr], ...] = tuple(
    getattr(exp, name) for name in ("DropPartition", "DropPrimaryKey") if hasattr(exp, name)
)
# Opaque commands whose first keyword says enough.
_COMMAND_RULES = {
    "DROP": "drop",
    "TRUNCATE": "truncate",
    "GRANT": "grant",
    "REVOKE": "revoke",
    "EXEC": "dynamic",
    "EXECUTE": "dynamic",
    "DO": "dynamic",
    "PREPARE": "dynamic",
}


def find_destructive_sql(sql: str, dialect: str | None = None) -> list[Finding]:
    """Findings for every destructive or uninspectable statement in ``sql``, ordered by
    position (see the module docstring for the rules). Never raises on any input text;
    raises ``ValueError`` for an unknown ``dialect`` name."""
    if dialect is not None:
        return _scan(sql, _reading(dialect))
    if len(sql) > MAX_SQL_LENGTH:
        return [_too_long()]
    scans = [_scan(sql, _reading(name)) for name in _READINGS]
    found: dict[tuple[str, int, int], Finding] = {}
    for findings in scans:
        for finding in findings:
            if finding.rule != _UNPARSEABLE:
                found.setdefault((finding.rule, finding.start, finding.end), finding)
    every_reading_failed = all(any(f.rule == _UNPARSEABLE for f in s) for s in scans)
    for findings in scans:
        for finding in findings:
            untokenizable = finding.rule == _UNPARSEABLE and finding.start == -1
            if untokenizable or (finding.rule == _UNPARSEABLE and every_reading_failed):
                found.setdefault((finding.rule, finding.start, finding.end), finding)
    return sorted(found.values(), key=lambda f: (f.start, f.end, f.rule))


@dataclass(frozen=True, slots=True)
class _Reading:
    name: str
    dialect: Dialect


@lru_cache(maxsize=64)
def _reading(name: str | None) -> _Reading:
    return _Reading(name or "generic", Dialect.get_or_raise(name))


def _scan(sql: str, reading: _Reading) -> list[Finding]:
    if len(sql) > MAX_SQL_LENGTH:
        return [_too_long()]
    findings: list[Finding] = []
    text = sql
    if isinstance(reading.dialect, MySQL):
        findings, text = _executable_comments(sql, reading)
    try:
        tokens = reading.dialect.tokenize(text)
    except Exception:  # fail closed: any tokenizer failure is a finding, never an exception
        detail = f"could not be tokenized as {reading.name} (unterminated string or comment?)"
        return [*findings, _finding("unparseable", -1, -1, detail)]
    for chunk in _statements(tokens):
        if len(chunk) == 1 and chunk[0].token_type == TokenType.END:
            continue  # the END closing a T-SQL BEGIN … END block
        start, end = chunk[0].start, chunk[-1].end + 1
        findings.extend(_inspect_chunk(chunk, text, start, end, reading))
    return sorted(findings, key=lambda f: (f.start, f.end, f.rule))


def _executable_comments(sql: str, reading: _Reading) -> tuple[list[Finding], str]:
    """MySQL runs the content of ``/*! … */``: flag each one and blank its markers so the
    content is parsed too (positions are kept: markers become spaces)."""
    if "/*" not in sql:
        return [], sql
    try:
        tokens = reading.dialect.tokenize(sql)
    except Exception:  # unterminated literal: look everywhere, fail closed
        tokens = []
    starts = [t.start for t in tokens]
    findings: list[Finding] = []
    chars = list(sql)
    for match in _EXEC_COMMENT.finditer(sql):
        at = bisect.bisect_right(starts, match.start()) - 1
        if at >= 0 and tokens[at].end >= match.start():
            continue  # inside a string literal or quoted identifier
        close = sql.find("*/", match.end())
        stop = len(sql) if close < 0 else close + 2
        detail = "MySQL executable comment: MySQL runs its content as SQL"
        findings.append(_finding("executable_comment", match.start(), stop, detail))
        for i in range(match.start(), match.end()):
            chars[i] = " "
        if close >= 0:
            chars[close] = chars[close + 1] = " "
    return findings, "".join(chars)


def _statements(tokens: list[Token]) -> list[list[Token]]:
    chunks: list[list[Token]] = [[]]
    for token in tokens:
        if token.token_type == TokenType.SEMICOLON:
            chunks.append([])
        else:
            chunks[-1].append(token)
    return [chunk for chunk in chunks if chunk]


def _inspect_chunk(
    chunk: list[Token], text: str, start: int, end: int, reading: _Reading
) -> list[Finding]:
    # error_message_context=0 keeps the SQL text out of sqlglot's log lines and errors.
    parser = reading.dialect.parser(error_level=ErrorLevel.RAISE, error_message_context=0)
    try:
        statements = parser.parse(chunk, text)
    except ParseError as exc:
        info = exc.errors[0] if exc.errors else {}
        why = str(info.get("description") or "syntax error")[:120]
        detail = f"could not be parsed as {reading.name}: {why}"
        return [_finding("unparseable", start, end, detail)]
    except Exception:  # fail closed: sqlglot bugs, RecursionError on deep nesting
        return [_finding("unparseable", start, end, f"the {reading.name} parser failed")]
    findings: list[Finding] = []
    for statement in statements:
        if statement is None or isinstance(statement, exp.Semicolon):
            continue
        if _not_a_statement(statement):
            detail = "an expression, not a SQL statement"
            findings.append(_finding("unparseable", start, end, detail))
            continue
        for node in statement.walk():
            findings.extend(_node_findings(node, start, end))
    return findings


def _not_a_statement(node: exp.Expr) -> bool:
    """``hello``, ``this is not sql``, ``SELEC broken`` (an aliased column): expressions that
    sqlglot accepts at the top level but no database runs."""
    inner = node.this if isinstance(node, exp.Alias) else node
    expression = isinstance(inner, (exp.Condition, exp.Identifier, exp.Var))
    return expression and not isinstance(inner, exp.Query)


def _node_findings(node: exp.Expr, start: int, end: int) -> list[Finding]:
    hit = _dml_hit(node) or _other_hit(node)
    return [] if hit is None else [_finding(hit[0], start, end, hit[1])]


def _dml_hit(node: exp.Expr) -> tuple[str, str] | None:
    """``(kind, detail)`` for a data-changing statement, or None when it is bounded."""
    if isinstance(node, (exp.Delete, exp.Update)):
        if isinstance(node.parent, exp.When):
            return None  # MERGE … WHEN MATCHED THEN UPDATE/DELETE: bounded by its ON
        verb = "DELETE" if isinstance(node, exp.Delete) else "UPDATE"
        where = node.args.get("where")
        kind = f"{verb.lower()}_without_where"
        if where is None:
            return kind, f"{verb} on {_target(node)} has no WHERE clause (every row)"
        if always_true(where.this):
            return kind, f"{verb} on {_target(node)} has a WHERE clause that is always true"
    elif isinstance(node, exp.Insert) and node.args.get("overwrite"):
        return "insert_overwrite", f"INSERT OVERWRITE {_target(node)} replaces its rows"
    elif isinstance(node, exp.Copy) and any(map(_is_program, node.args.get("files") or [])):
        return "copy_program", f"COPY {_target(node)} runs a shell command on the server"
    return None


def _other_hit(node: exp.Expr) -> tuple[str, str] | None:
    """``(kind, detail)`` for DDL, privileges, files and opaque or dynamic SQL."""
    if isinstance(node, exp.Drop):
        if isinstance(node.parent, exp.Alter):
            return "alter_drop", f"ALTER {_target(node.parent)} DROP {_kind(node)} {_names(node)}"
        return "drop", f"DROP {_kind(node)} {_names(node)}"
    if isinstance(node, _ALTER_DROPS):
        what = "PARTITION" if isinstance(node, exp.DropPartition) else "PRIMARY KEY"
        return "alter_drop", f"ALTER {_target(node.parent)} DROP {what}"
    if isinstance(node, exp.TruncateTable):
        what = "DATABASE" if node.args.get("is_database") else "TABLE"
        return "truncate", f"TRUNCATE {what} {_names(node)}"
    replace = isinstance(node, exp.Create) and node.args.get("replace")
    if replace and str(node.args.get("kind") or "").upper() == "TABLE":
        return "create_replace", f"CREATE OR REPLACE TABLE {_target(node)} replaces its rows"
    if isinstance(node, (exp.Grant, exp.Revoke)):
        verb = "GRANT" if isinstance(node, exp.Grant) else "REVOKE"
        return verb.lower(), f"{verb} on {_label(node.args.get('securable'))}"
    if isinstance(node, exp.Attach):
        return "attach", "ATTACH DATABASE opens or creates a database file"
    if isinstance(node, exp.Execute):
        return "dynamic", "dynamic SQL (EXEC) cannot be inspected"
    if isinstance(node, exp.Command):
        keyword = _label(node.this).upper()
        kind = _COMMAND_RULES.get(keyword, "unparseable")
        if kind == "dynamic":
            return kind, f"dynamic SQL ({keyword}) cannot be inspected"
        if kind == "unparseable":
            return kind, f"only the {keyword} keyword was recognised; the rest is opaque"
        return kind, f"{keyword} statement (only partly parsed)"
    return None


def _finding(kind: str, start: int, end: int, detail: str) -> Finding:
    return Finding(rule=f"sql.{kind}", kind=f"sql_{kind}", start=start, end=end, detail=detail)


def _too_long() -> Finding:
    detail = f"longer than {MAX_SQL_LENGTH} characters; not parsed"
    return _finding("unparseable", -1, -1, detail)


def _kind(node: exp.Drop) -> str:
    kind = str(node.args.get("kind") or "OBJECT").upper()
    return f"MATERIALIZED {kind}" if node.args.get("materialized") else kind


def _names(node: exp.Expr) -> str:
    items = node.args.get("tables") or node.args.get("expressions") or []
    return ", ".join(_label(item) for item in items[:5]) or "?"


def _target(node: exp.Expr | None) -> str:
    if node is None:
        return "?"
    this = node.args.get("this")
    if isinstance(this, exp.Schema):
        this = this.this
    if isinstance(this, exp.Table):
        return _label(this)
    tables = node.args.get("tables")
    if tables:
        return _label(tables[0])
    table = node.find(exp.Table)
    return _label(table) if table is not None else "?"


def _label(value: object) -> str:
    """A short, printable name for a table, column or keyword (never a literal's value)."""
    if isinstance(value, exp.Table):
        text = ".".join(part.name for part in value.parts)
    elif isinstance(value, (exp.Column, exp.Identifier, exp.Var)):
        text = value.name
    elif isinstance(value, exp.Expr):
        text = type(value).__name__.lower()
    elif value is None:
        text = "?"
    else:
        text = str(value)
    return _CONTROL.sub("", text)[:64] or "?"


def _is_program(node: object) -> bool:
    if isinstance(node, exp.Identifier):
        return not node.quoted and node.name.upper() == "PROGRAM"
    return isinstance(node, exp.Var) and node.name.upper() == "PROGRAM"
