"""One validated settings object: ``DRIFTLINE_*`` environment variables over an optional TOML config file.

A bad value fails at start with a message that names the variable, so a typo in a deployment manifest
is caught before the worker touches Kafka.
"""

from __future__ import annotations

import os
import re
import tomllib
from pathlib import Path
from typing import Any

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict
from pydantic_settings import SettingsError as PydanticSettingsError

from driftline.errors import SettingsError
from driftline.streams.actions.dispatch.routes import RouteSpec, unique_names
from driftline.streams.kafka.security import KafkaSecurity, SaslMechanism, SecurityProtocol
from driftline.streams.pipeline.windows import JUMP_MS, JUMP_RECORDS

ENV_PREFIX = "DRIFTLINE_"
_TOPIC_CHARS = re.compile(r"^[A-Za-z0-9._-]*$")


class Settings(BaseSettings):
    """driftline's configuration. Each field is read from ``DRIFTLINE_<FIELD>`` (upper case)."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="forbid", frozen=True)

    home: Path = Field(default=Path("~/.driftline"), description="State directory (broker, chDB store).")
    kafka_bootstrap: str = Field(default="127.0.0.1:9092", description="Kafka bootstrap servers.")
    kafka_port: int = Field(default=9092, ge=1, le=65535, description="Port of `driftline kafka up`.")
    kafka_heap: str = Field(default="512m", pattern=r"^\d+[mMgG]$", description="Heap of the local broker.")
    # Kafka security: one field per KafkaSecurity option (streams/kafka/security.py), checked together below
    kafka_security_protocol: SecurityProtocol = Field(default="PLAINTEXT",
                                                      description="PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL.")
    kafka_sasl_mechanism: SaslMechanism = Field(default="PLAIN", description="PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512.")
    kafka_sasl_username: str = Field(default="", description="SASL user (SASL_* protocols).")
    kafka_sasl_password: SecretStr = Field(default=SecretStr(""), description="SASL password; never logged.")
    kafka_ssl_ca_location: str = Field(default="", description="PEM file of the CA(s) of the brokers' "
                                                                "certificates; empty: the system's.")
    kafka_ssl_certificate_location: str = Field(default="", description="PEM client certificate (mutual TLS).")
    kafka_ssl_key_location: str = Field(default="", description="PEM private key of the client certificate.")
    kafka_ssl_key_password: SecretStr = Field(default=SecretStr(""), description="Passphrase of that key; never "
                                                                                 "logged.")
    kafka_ssl_verify_hostname: bool = Field(default=True, description="Check that the broker's certificate names "
                                                                      "the host dialled.")
    clickhouse_url: str = Field(default="", description="chdb:///path (embedded) or http(s)://host:port.")
    clickhouse_user: str = Field(default="", description="ClickHouse server user (empty: the URL's, else default).")
    clickhouse_password: SecretStr = Field(default=SecretStr(""), description="ClickHouse server password; never "
                                                                               "logged.")
    clickhouse_verify: bool = Field(default=True, description="Check the https server's certificate.")
    clickhouse_ca_location: str = Field(default="", description="PEM file of the CA of the https server's "
                                                                "certificate; empty: the system's.")
    clickhouse_cluster: str = Field(default="", pattern=r"^([A-Za-z_][A-Za-z0-9_]*)?$",
                                    description="The server's replicated cluster (a name in its remote_servers): "
                                                "replicated local tables behind Distributed ones; empty: one node.")
    topic_prefix: str = Field(default="driftline.", max_length=100, description="Prefix of every topic.")
    topic_partitions: int = Field(default=6, ge=1, le=1000, description="Partitions of created topics.")
    topic_replication_factor: int = Field(default=1, ge=1, le=16,
                                          description="Replication factor of created topics (3 on a production "
                                                      "cluster; min.insync.replicas is set to one less).")
    window_seconds: int = Field(default=60, ge=1, le=86400,
                                description="Event-time tumbling window of models whose configuration sets none.")
    allowed_lateness_seconds: float = Field(default=10.0, ge=0, le=86400,
                                            description="How long a window waits for late events (models whose "
                                                        "configuration sets none).")
    idle_partition_seconds: float = Field(default=5.0, gt=0, le=3600,
                                          description="Quiet time before wall-clock time advances a partition.")
    max_clock_skew_seconds: float = Field(default=3600, ge=0, le=31_536_000,
                                          description="How far an event time may be ahead of its record's Kafka "
                                                      "timestamp (capped by the worker's clock); beyond: dead letter.")
    max_event_age_days: float = Field(default=3650, gt=0, le=36_500,
                                      description="How far an event time may be behind the same reference time; "
                                                  "beyond: dead letter.")
    event_time_jump_seconds: float = Field(default=JUMP_MS / 1000, ge=0, le=86400,
                                           description="How far one record may move a partition's event time ahead "
                                                       "without confirmation.")
    event_time_jump_records: int = Field(default=JUMP_RECORDS, ge=1, le=1000,
                                         description="Consecutive records further ahead that confirm a jump of a "
                                                     "partition's event time (to the earliest of them).")
    consumer_group: str = Field(default="driftline-worker", min_length=1, description="Consumer group prefix.")
    batch_max_records: int = Field(default=5000, ge=1, le=1_000_000, description="Records per consume call.")
    metrics_port: int = Field(default=0, ge=0, le=65535, description="Prometheus /metrics port; 0 = off.")
    metrics_addr: str = Field(default="127.0.0.1", description="Address the /metrics endpoint listens on.")
    max_label_delay_seconds: float = Field(default=86400, gt=0, description="How long predictions wait for labels.")
    max_join_entries: int = Field(default=1_000_000, ge=1, description="Predictions kept per partition for labels.")
    label_wait_seconds: float = Field(default=30, ge=0, description="How long a label waits for its prediction.")
    reference_wait_seconds: float = Field(default=120, ge=0, le=86400,
                                          description="How long a partition waits for a model's automatic "
                                                      "reference before it summarises on without it.")
    max_models: int = Field(default=1000, ge=1, le=1_000_000,
                            description="Model versions a summarize worker tracks at once (open windows or ticks); "
                                        "predictions of further ones are dead-lettered and counted.")
    monitoring_config: Path | None = Field(default=None, description="Per-model monitoring config (YAML or TOML).")
    actions: bool = Field(default=True, description="The worker runs the policy engine (alerts, retrain and "
                                                    "rollback requests) beside the merge stage.")
    dashboard_url: str = Field(default="", description="Base URL of the dashboard/API, linked from alerts; "
                                                       "empty: no links.")
    serve_port: int = Field(default=8000, ge=1, le=65535, description="Port of `driftline serve`, the reference "
                                                                      "inference service.")
    admin_token_env: str = Field(default="DRIFTLINE_ADMIN_TOKEN", pattern=r"^[A-Za-z_][A-Za-z0-9_]*$",
                                 description="Name of the environment variable holding the bearer token of the "
                                             "reference service's POST /admin/promote (unset or empty: disabled).")
    api_port: int = Field(default=0, ge=0, le=65535, description="Port of the monitoring API and dashboard served by "
                          "the process that holds the store (the merge worker, or `driftline api`); 0: none (with "
                          "an embedded store the worker still serves `driftline sql` on a free loopback port).")
    api_addr: str = Field(default="127.0.0.1", description="Address the API listens on; any non-loopback address "
                                                           "requires DRIFTLINE_API_TOKEN.")
    api_token: SecretStr = Field(default=SecretStr(""), description="Bearer token the API requires (compared in "
                                                                    "constant time); never logged.")
    api_sql_max_rows: int = Field(default=10_000, ge=1, le=10_000_000, description="Rows POST /sql may return.")
    api_sql_max_bytes: int = Field(default=16_777_216, ge=1024, description="Bytes of result POST /sql may return.")
    api_sql_timeout_seconds: float = Field(default=10.0, gt=0, le=3600, description="Execution time of a POST /sql "
                                                                                    "query.")
    alert_routes: tuple[RouteSpec, ...] = Field(
        default=(), description="Where the dispatcher delivers alerts: a JSON list of route objects (or "
                                "alert_routes tables in the config file) with name, kind (pagerduty or webhook), "
                                "url, models (globs), severities, routing_key_env (pagerduty) or secret_env "
                                "(webhook): the variable holding the secret, timeout_seconds, retry_base_seconds, "
                                "retry_max_delay_seconds, max_retry_seconds. See README, Acting on breaches.")

    @field_validator("topic_prefix")
    @classmethod
    def _legal_topic_prefix(cls, value: str) -> str:
        if not _TOPIC_CHARS.match(value):
            raise ValueError("may hold only letters, digits, '.', '_' and '-'")
        return value

    @field_validator("alert_routes")
    @classmethod
    def _unique_route_names(cls, value: tuple[RouteSpec, ...]) -> tuple[RouteSpec, ...]:
        return unique_names(value)

    @field_validator("clickhouse_url")
    @classmethod
    def _known_scheme(cls, value: str) -> str:
        if value and not value.startswith(("chdb://", "http://", "https://")):
            raise ValueError("must start with chdb://, http:// or https://")
        return value

    @model_validator(mode="after")
    def _usable_kafka_security(self) -> Settings:
        # the options depend on each other (a SASL protocol needs a user): the message names the variable itself
        problems = KafkaSecurity.from_settings(self).problems()
        if problems:
            raise ValueError("; ".join(f"{ENV_PREFIX}KAFKA_{name.upper()}: {why}" for name, why in problems))
        return self

    @model_validator(mode="after")
    def _derive_defaults(self) -> Settings:
        home = self.home.expanduser().resolve()
        object.__setattr__(self, "home", home)
        if not self.clickhouse_url:
            object.__setattr__(self, "clickhouse_url", f"chdb://{home / 'clickhouse'}")
        return self

    @model_validator(mode="after")
    def _cluster_needs_a_server(self) -> Settings:
        if self.clickhouse_cluster and self.clickhouse_url.startswith("chdb://"):
            raise ValueError(f"{ENV_PREFIX}CLICKHOUSE_CLUSTER: needs a ClickHouse server (DRIFTLINE_CLICKHOUSE_URL "
                             "http(s)://...); the embedded chDB store is one node")
        return self

    def event_time_jump(self) -> tuple[int, int]:
        """``PartitionWindows``' jump rule: (milliseconds one record may move event time, records that confirm more)."""
        return int(self.event_time_jump_seconds * 1000), self.event_time_jump_records

    def topic(self, name: str) -> str:
        """Full topic name for a logical one: ``predictions`` -> ``driftline.predictions``."""
        return f"{self.topic_prefix}{name}"


def _file_values(path: Path) -> dict[str, Any]:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise SettingsError(f"{ENV_PREFIX}CONFIG: file not found: {path}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise SettingsError(f"{ENV_PREFIX}CONFIG: {path} is not valid TOML: {exc}") from exc
    section = data.get("driftline", data)
    if not isinstance(section, dict):
        raise SettingsError(f"{ENV_PREFIX}CONFIG: [driftline] in {path} must be a table")
    return section


def load_settings(**overrides: Any) -> Settings:
    """Build the settings: explicit overrides > environment > ``$DRIFTLINE_CONFIG`` TOML file > defaults."""
    file_values: dict[str, Any] = {}
    config_path = os.environ.get(f"{ENV_PREFIX}CONFIG")
    if config_path:
        file_values = _file_values(Path(config_path))
    env_names = {f"{ENV_PREFIX}{name.upper()}" for name in Settings.model_fields}
    from_file = {k: v for k, v in file_values.items() if f"{ENV_PREFIX}{k.upper()}" not in os.environ}
    try:
        return Settings(**{**from_file, **overrides})
    except PydanticSettingsError as exc:
        # a list-valued variable (DRIFTLINE_ALERT_ROUTES) that is not JSON fails before validation
        found = re.search(r'field "(\w+)"', str(exc))
        var = f"{ENV_PREFIX}{found.group(1).upper()}" if found else "?"
        raise SettingsError(f"invalid driftline settings: {var}: not valid JSON (got {os.environ.get(var)!r})"
                            ) from None
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            if not err["loc"]:  # a check across settings (_usable_kafka_security): its message names the variables
                problems.append(str(err["msg"]).removeprefix("Value error, "))
                continue
            key = str(err["loc"][0])
            var = f"{ENV_PREFIX}{key.upper()}"
            where = var if var in env_names else f"{var} (unknown setting)"
            # inside a list of tables (alert_routes), say which item and key: DRIFTLINE_ALERT_ROUTES[0].url
            where += "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in err["loc"][1:])
            value = os.environ.get(var, file_values.get(key, overrides.get(key)))
            field = Settings.model_fields.get(key)
            if field is not None and field.annotation is SecretStr:  # a secret is never echoed, even a bad one
                value = "**********"
            problems.append(f"{where}: {err['msg']} (got {value!r})")
        raise SettingsError("invalid driftline settings: " + "; ".join(problems)) from None
