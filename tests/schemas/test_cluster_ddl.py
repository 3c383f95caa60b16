"""The replicated-cluster DDL is derived from the single-node files: every statement transforms, parses in
ClickHouse (chDB's parser; no replicated cluster runs here), keeps the single-node layout, gets its Distributed
table; what cannot be transformed fails naming its file; the setting reaches the migration; one node is unchanged."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import clickhouse_connect
import pytest
from clickhouse_connect.driver.client import Client

from driftline import schemas
from driftline.errors import SettingsError, StoreError
from driftline.schemas import cluster as cluster_ddl
from driftline.streams import store
from driftline.streams.config.settings import load_settings
from driftline.streams.store_access import CLUSTER_SESSION, StoreAccess, client_kwargs

CLUSTER = "prod_1"
TABLES = {"windows", "references", "label_windows", "alerts", "alarms", "schema_migrations"}
# What the store ran before the cluster variant existed, kept here verbatim: the single-node path must not move.
OLD_BOOTSTRAP = [
    "CREATE DATABASE IF NOT EXISTS driftline",
    "CREATE TABLE IF NOT EXISTS driftline.schema_migrations "
    "(version UInt32, name String, applied_at DateTime64(3, 'UTC') DEFAULT now64(3)) "
    "ENGINE = MergeTree ORDER BY version",
]


def old_split(sql: str) -> list[str]:
    lines = [line for line in sql.splitlines() if not line.lstrip().startswith("--")]
    return [s.strip() for s in "\n".join(lines).split(";") if s.strip()]


def sources() -> list[tuple[str, str]]:
    """(name, sql) of every DDL the store runs: its migrations table and each migration file."""
    return [("store", store._MIGRATIONS_TABLE), *((name, sql) for _, name, sql in schemas.migrations())]


def single_node_tables() -> dict[str, str]:
    """Each CREATE TABLE of the single-node DDL, by table name."""
    found = {}
    for _, sql in sources():
        for statement in cluster_ddl.split(sql):
            created = re.match(r"CREATE TABLE IF NOT EXISTS driftline\.(\w+)", statement)
            if created:
                found[created.group(1)] = statement
    return found


@pytest.fixture(scope="module")
def chdb(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Client]:
    client = clickhouse_connect.get_client(dsn=f"chdb://{tmp_path_factory.mktemp('ch')}")
    yield client
    client.close()


def formatted(client: Client, statement: str) -> str:
    """ClickHouse's own rendering of ``statement``: it raises unless the statement parses."""
    return str(client.query("SELECT formatQuery({q:String})", parameters={"q": statement}).result_rows[0][0])


def layout(text: str) -> dict[str, str]:
    """A formatted CREATE TABLE as its parts: the head line, the column block and each clause line by keyword."""
    head, rest = text.split("\n", 1)
    parts = {"head": head}
    if rest.startswith("(\n"):
        columns, rest = rest[2:].split("\n)\n", 1)
        parts["columns"] = columns
    for line in rest.splitlines():
        clause = re.match(r"ENGINE|PARTITION BY|ORDER BY|PRIMARY KEY|SAMPLE BY|TTL|SETTINGS", line)
        assert clause, line
        parts[clause.group(0)] = line
    return parts


def test_every_statement_transforms_and_parses(chdb: Client):
    for name, sql in sources():
        replicated = cluster_ddl.statements(sql, name, CLUSTER)
        assert len(replicated) >= len(cluster_ddl.split(sql))
        for statement in replicated:
            assert f"ON CLUSTER {CLUSTER}" in formatted(chdb, statement), statement


def test_the_local_table_keeps_the_single_node_columns_and_clauses(chdb: Client):
    replicated = {s.split()[5]: s for _, sql in sources() for s in cluster_ddl.statements(sql, "x", CLUSTER)
                  if s.startswith("CREATE TABLE")}
    for table, statement in single_node_tables().items():
        single = layout(formatted(chdb, statement))
        local = layout(formatted(chdb, replicated[f"driftline.{table}_local"]))
        assert local["head"] == f"CREATE TABLE IF NOT EXISTS driftline.{table}_local ON CLUSTER {CLUSTER}"
        assert local["columns"] == single["columns"]
        assert local["ORDER BY"] == single["ORDER BY"] and local.get("PARTITION BY") == single.get("PARTITION BY")
        engine, args = re.fullmatch(r"ENGINE = (\w+)(?:\((.*)\))?", single["ENGINE"]).groups()  # type: ignore[union-attr]
        path = f"'/clickhouse/tables/{{shard}}/driftline/{table}_local', '{{replica}}'"
        assert local["ENGINE"] == f"ENGINE = Replicated{engine}({path}{', ' + args if args else ''})"
        assert local.get("SETTINGS") == (single["SETTINGS"].replace("non_replicated_", "replicated_")
                                         if "SETTINGS" in single else None)
        assert "non_replicated" not in replicated[f"driftline.{table}_local"]


def test_every_table_gets_a_distributed_table_of_its_name_sharded_by_model(chdb: Client):
    replicated = [s for _, sql in sources() for s in cluster_ddl.statements(sql, "x", CLUSTER)]
    for table in single_node_tables():
        key = "version" if table == "schema_migrations" else "model_id"
        expected = formatted(chdb, f"CREATE TABLE IF NOT EXISTS driftline.{table} ON CLUSTER {CLUSTER} AS "
                                   f"driftline.{table}_local ENGINE = Distributed('{CLUSTER}', 'driftline', "
                                   f"'{table}_local', cityHash64({key}))")
        assert [formatted(chdb, s) for s in replicated].count(expected) == 1, table
    assert set(single_node_tables()) == TABLES


def test_database_and_alters_run_on_the_cluster_against_both_tables():
    assert cluster_ddl.statements("CREATE DATABASE IF NOT EXISTS driftline", "x", CLUSTER) == [
        f"CREATE DATABASE IF NOT EXISTS driftline ON CLUSTER '{CLUSTER}'"]
    sql = next(sql for _, name, sql in schemas.migrations() if name == "0004_label_conflicts.sql")
    action = "ADD COLUMN IF NOT EXISTS conflicts UInt64 DEFAULT 0 AFTER unmatched"
    assert cluster_ddl.statements(sql, "0004", CLUSTER) == [
        f"ALTER TABLE driftline.label_windows_local ON CLUSTER '{CLUSTER}' {action}",
        f"ALTER TABLE driftline.label_windows ON CLUSTER '{CLUSTER}' {action}"]


@pytest.mark.parametrize("statement", [
    "CREATE TABLE IF NOT EXISTS driftline.t (model_id String) ENGINE = Log",
    "CREATE TABLE IF NOT EXISTS driftline.t (model_id String) ENGINE = ReplicatedMergeTree('/p', 'r') "
    "ORDER BY model_id",
    "CREATE TABLE driftline.t (model_id String) ENGINE = MergeTree ORDER BY model_id",
    "CREATE TABLE IF NOT EXISTS driftline.t (id String) ENGINE = MergeTree ORDER BY id",
    "CREATE TABLE IF NOT EXISTS driftline.t (id String, model_id String) ENGINE = ReplacingMergeTree ORDER BY id",
    "ALTER TABLE driftline.windows DROP COLUMN detail",
    "ALTER TABLE driftline.windows ADD COLUMN a String DEFAULT 'x,y', MODIFY COLUMN detail String",
    "CREATE MATERIALIZED VIEW driftline.v TO driftline.windows AS SELECT * FROM driftline.alarms",
    "INSERT INTO driftline.windows (model_id) VALUES ('m')",
])
def test_a_statement_it_cannot_transform_raises_naming_the_file(statement: str):
    with pytest.raises(StoreError, match=re.escape("0099_next.sql: ")):
        cluster_ddl.statements(f"-- a later migration\n{statement};\n", "0099_next.sql", CLUSTER)
    assert cluster_ddl.statements(statement, "0099_next.sql") == [statement]  # one node: run as written


def test_comma_inside_a_default_is_not_a_second_action():
    statement = "ALTER TABLE driftline.windows ADD COLUMN IF NOT EXISTS tags String DEFAULT 'a,(b'"
    assert len(cluster_ddl.statements(statement, "x", CLUSTER)) == 2


@pytest.mark.parametrize(("env", "message"), [
    ({"DRIFTLINE_CLICKHOUSE_CLUSTER": "prod'; DROP", "DRIFTLINE_CLICKHOUSE_URL": "http://ch:8123"},
     "DRIFTLINE_CLICKHOUSE_CLUSTER: String should match pattern"),
    ({"DRIFTLINE_CLICKHOUSE_CLUSTER": "1st", "DRIFTLINE_CLICKHOUSE_URL": "http://ch:8123"},
     "DRIFTLINE_CLICKHOUSE_CLUSTER: String should match pattern"),
    ({"DRIFTLINE_CLICKHOUSE_CLUSTER": "prod"}, "DRIFTLINE_CLICKHOUSE_CLUSTER: needs a ClickHouse server"),
])
def test_a_bad_cluster_setting_is_named(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, env: dict[str, str],
                                        message: str):
    monkeypatch.setenv("DRIFTLINE_HOME", str(tmp_path))
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(SettingsError, match=re.escape(message)):
        load_settings()


class Recorder:
    """A client that records the statements and inserts of a migration."""

    def __init__(self, **kwargs: Any) -> None:
        self.kwargs = kwargs
        self.commands: list[str] = []
        self.inserts: list[tuple[str, list[list[Any]]]] = []

    def command(self, statement: str) -> None:
        self.commands.append(statement)

    def query(self, sql: str) -> Any:
        return type("Result", (), {"result_rows": []})()

    def insert(self, table: str, rows: list[list[Any]], column_names: list[str]) -> None:
        self.inserts.append((table, rows))


@pytest.fixture
def recorded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(store.clickhouse_connect, "get_client", Recorder)


@pytest.mark.usefixtures("recorded")
def test_the_setting_reaches_the_migration_and_the_session(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    monkeypatch.setenv("DRIFTLINE_HOME", str(tmp_path))
    settings = load_settings(clickhouse_url="http://ch:8123", clickhouse_cluster=CLUSTER)
    access = StoreAccess.of(settings)
    client: Any = store.connect(settings.clickhouse_url, access)
    assert client.kwargs["settings"] == CLUSTER_SESSION == {"insert_distributed_sync": 1,
                                                            "distributed_product_mode": "local"}
    applied = store.migrate(client, access.cluster)
    assert applied == [name for _, name, _ in schemas.migrations()]
    assert client.commands == [s for name, sql in sources() for s in cluster_ddl.statements(sql, name, CLUSTER)]
    assert {table for table, _ in client.inserts} == {"driftline.schema_migrations"}  # the Distributed table


@pytest.mark.usefixtures("recorded")
def test_without_the_setting_the_store_runs_what_it_ran_before():
    assert "settings" not in client_kwargs("http://ch:8123", StoreAccess())
    client: Any = store.connect("http://ch:8123", StoreAccess())
    store.migrate(client)
    assert client.commands == OLD_BOOTSTRAP + [s for _, _, sql in schemas.migrations() for s in old_split(sql)]


def test_a_fresh_single_node_store_gets_the_same_tables(chdb: Client):
    assert store.migrate(chdb) == [name for _, name, _ in schemas.migrations()]
    engines = dict(chdb.query("SELECT name, engine FROM system.tables WHERE database = 'driftline'").result_rows)
    assert engines == {"windows": "ReplacingMergeTree", "references": "ReplacingMergeTree",
                       "label_windows": "ReplacingMergeTree", "alerts": "MergeTree", "alarms": "ReplacingMergeTree",
                       "schema_migrations": "MergeTree"}
    for table, statement in single_node_tables().items():  # each as its file says, later ALTERs included
        shown = formatted(chdb, chdb.query(f"SHOW CREATE TABLE driftline.{table}").result_rows[0][0])
        assert layout(shown)["ORDER BY"] == layout(formatted(chdb, statement))["ORDER BY"]
    assert store.migrate(chdb) == []
