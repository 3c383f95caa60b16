"""The ClickHouse DDL as the store runs it: the single-node files as written, or their replicated-cluster variant.

Owns one pure text transformation (no I/O) of the statements in ``schemas/clickhouse/NNNN_*.sql``, so those
files stay the one source of truth for the table layouts. On a cluster (``DRIFTLINE_CLICKHOUSE_CLUSTER``):

* ``CREATE DATABASE IF NOT EXISTS driftline`` gains ``ON CLUSTER``;
* each ``CREATE TABLE IF NOT EXISTS driftline.X (...) ENGINE = <Engine>MergeTree[(args)] ...`` becomes a local
  table ``driftline.X_local`` with ``Replicated<Engine>MergeTree(<keeper path>, '{replica}'[, args])``, the same
  columns and clauses, ``non_replicated_deduplication_window`` replaced by ``replicated_deduplication_window``,
  plus ``driftline.X`` as a ``Distributed`` table over it, sharded by ``cityHash64(model_id)``: every row of a
  model on one shard, so ``FINAL`` and per-model queries see all the rows they replace or compare;
* ``ALTER TABLE driftline.X ADD COLUMN ...`` alters ``X_local`` and then ``X``, both ``ON CLUSTER``.

Anything else raises ``StoreError`` naming the file: a statement passed through unchanged would create a
non-replicated table on one node only, which is worse than not starting.
"""

from __future__ import annotations

import re

from driftline.errors import StoreError

DATABASE = "driftline"
# Where each shard's replicas of a local table meet in ClickHouse Keeper: the server's {shard} and {replica}
# macros tell the shards apart and the replicas within one.
KEEPER_PATH = "/clickhouse/tables/{shard}/driftline/"
LOCAL_SUFFIX = "_local"
SHARD_COLUMN = "model_id"
# Tables without a model_id column, and the column that spreads them over the shards instead.
# schema_migrations: a handful of rows, read whole through its Distributed table, so any key of it will do.
OTHER_SHARD_COLUMNS = {"schema_migrations": "version"}

_ENGINES = "(?:Replacing|Summing|Aggregating|Collapsing|VersionedCollapsing)?MergeTree"
_CREATE_DATABASE = re.compile(rf"CREATE\s+DATABASE\s+IF\s+NOT\s+EXISTS\s+{DATABASE}")
_CREATE_TABLE = re.compile(
    rf"CREATE\s+TABLE\s+IF\s+NOT\s+EXISTS\s+{DATABASE}\.(?P<table>\w+)\s*\((?P<columns>.*)\)\s*"
    rf"ENGINE\s*=\s*(?P<engine>{_ENGINES})(?:\((?P<args>[^()]*)\))?(?P<clauses>\s.*)", re.S)
_ALTER_TABLE = re.compile(rf"ALTER\s+TABLE\s+{DATABASE}\.(?P<table>\w+)\s+(?P<actions>.+)", re.S)
_ORDER_BY = re.compile(r"\bORDER\s+BY\s+(\([^()]*\)|\w+)")


def split(sql: str) -> list[str]:
    """The statements of one migration file, ``--`` comment lines dropped, in order."""
    lines = [line for line in sql.splitlines() if not line.lstrip().startswith("--")]
    return [s.strip() for s in "\n".join(lines).split(";") if s.strip()]


def statements(sql: str, source: str, cluster: str = "") -> list[str]:
    """The statements of ``sql`` (from ``source``, named in errors) to run: as written without a ``cluster``,
    else their replicated variant on that cluster."""
    found = split(sql)
    if not cluster:
        return found
    return [out for statement in found for out in replicated(statement, source, cluster)]


def replicated(statement: str, source: str, cluster: str) -> list[str]:
    """One single-node statement as the statements that do the same on ``cluster`` (rules: module docstring)."""
    on = f"ON CLUSTER '{cluster}'"
    if _CREATE_DATABASE.fullmatch(statement):
        return [f"{statement} {on}"]
    create = _CREATE_TABLE.fullmatch(statement)
    if create:
        table, columns, engine, args, clauses = create.group("table", "columns", "engine", "args", "clauses")
        key = _shard_column(table, columns, clauses, source)
        local = f"{DATABASE}.{table}{LOCAL_SUFFIX}"
        engine_args = ", ".join([f"'{KEEPER_PATH}{table}{LOCAL_SUFFIX}'", "'{replica}'",
                                 *([args.strip()] if args and args.strip() else [])])
        # the replicated tables keep their insert-deduplication log in Keeper, sized by this setting instead
        clauses = re.sub(r"\bnon_replicated_deduplication_window\b", "replicated_deduplication_window", clauses)
        return [
            f"CREATE TABLE IF NOT EXISTS {local} {on}\n({columns})\nENGINE = Replicated{engine}({engine_args})"
            f"{clauses}",
            f"CREATE TABLE IF NOT EXISTS {DATABASE}.{table} {on} AS {local}\n"
            f"ENGINE = Distributed('{cluster}', '{DATABASE}', '{table}{LOCAL_SUFFIX}', cityHash64({key}))",
        ]
    alter = _ALTER_TABLE.fullmatch(statement)
    if alter:
        table, actions = alter.group("table", "actions")
        for action in _top_level(actions, ","):
            if not re.match(r"ADD\s+COLUMN\s", action.strip()):
                raise StoreError(f"{source}: cannot derive the replicated DDL of ALTER TABLE {DATABASE}.{table}: "
                                 f"only ADD COLUMN is supported, got {action.strip()!r}")
        # the local tables hold the data, the Distributed table only the column list its queries see: both change
        return [f"ALTER TABLE {DATABASE}.{table}{LOCAL_SUFFIX} {on} {actions}",
                f"ALTER TABLE {DATABASE}.{table} {on} {actions}"]
    raise StoreError(f"{source}: cannot derive the replicated DDL of this statement (supported: CREATE DATABASE IF "
                     f"NOT EXISTS, CREATE TABLE IF NOT EXISTS {DATABASE}.X ... ENGINE = *MergeTree, ALTER TABLE "
                     f"{DATABASE}.X ADD COLUMN): {' '.join(statement.split())[:120]!r}")


def _shard_column(table: str, columns: str, clauses: str, source: str) -> str:
    """The column that picks a row's shard; it must be in the sorting key, else rows that ReplacingMergeTree
    collapses (equal sorting keys) could live on two shards and FINAL would keep both."""
    key = OTHER_SHARD_COLUMNS.get(table, SHARD_COLUMN)
    if not any(column.split()[0].strip("`") == key for column in _top_level(columns, ",") if column.strip()):
        raise StoreError(f"{source}: {DATABASE}.{table} has no {key} column to shard by; add the table and its "
                         "column to schemas.cluster.OTHER_SHARD_COLUMNS")
    order = _ORDER_BY.search(clauses)
    if not order or key not in re.findall(r"\w+", order.group(1)):
        raise StoreError(f"{source}: {DATABASE}.{table} is sharded by {key}, which its ORDER BY must contain")
    return key


def _top_level(text: str, separator: str) -> list[str]:
    """``text`` split at each ``separator`` outside parentheses and quotes (a column list, ALTER's actions)."""
    parts, depth, quote, start = [], 0, "", 0
    for i, char in enumerate(text):
        if quote:
            if char == quote and text[i - 1] != "\\":
                quote = ""
        elif char in "'`\"":
            quote = char
        elif char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        elif char == separator and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    parts.append(text[start:])
    return parts
