"""Optional SASL listeners of the local broker (``LocalBroker(..., sasl=SaslListener(...))``), for tests.

Kafka 4 authenticates SASL/PLAIN and SCRAM-SHA-256/512 on its own: PLAIN users are listed in the listener's
JAAS line, SCRAM users are written into the metadata log when the storage is formatted (``--add-scram``), so
they exist only on a broker formatted with this listener. With ``tls_port`` the same users also log in over
TLS (SASL_SSL, the broker's key and certificate from one PEM file). The broker keeps its PLAINTEXT listener
(inter-broker traffic, the readiness check); clients that dial ``bootstrap`` or ``tls_bootstrap`` must
authenticate.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")


def _quoted(value: str) -> str:
    if any(c in value for c in '"\\,[]=\n'):  # JAAS and --add-scram have no escaping worth relying on
        raise ValueError(f"SASL test credentials must not contain quotes, commas, brackets or '=': {value!r}")
    return value


@dataclass(frozen=True, slots=True)
class SaslListener:
    """A ``SASL_PLAINTEXT`` listener on ``port`` (and a ``SASL_SSL`` one on ``tls_port``) whose ``users``
    (name -> password) may log in with every mechanism in ``MECHANISMS``."""

    port: int
    users: Mapping[str, str] = field(repr=False)
    tls_port: int | None = None
    tls_keystore: str = ""  # PEM: the broker's private key (PKCS#8, unencrypted), then its certificate chain

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def tls_bootstrap(self) -> str:
        return f"127.0.0.1:{self.tls_port}"

    def configure(self, lines: dict[str, str]) -> None:
        """Add the listener to a broker's ``server.properties`` entries."""
        listeners = {"SASL_PLAINTEXT": self.bootstrap}
        if self.tls_port is not None:
            listeners["SASL_SSL"] = self.tls_bootstrap
            lines["listener.name.sasl_ssl.ssl.keystore.type"] = "PEM"
            lines["listener.name.sasl_ssl.ssl.keystore.location"] = self.tls_keystore
        lines["sasl.enabled.mechanisms"] = ",".join(MECHANISMS)
        plain_users = " ".join(f'user_{_quoted(name)}="{_quoted(pw)}"' for name, pw in self.users.items())
        for name, address in listeners.items():
            lines["listeners"] += f",{name}://{address}"
            lines["advertised.listeners"] += f",{name}://{address}"
            lines["listener.security.protocol.map"] += f",{name}:{name}"
            prefix = f"listener.name.{name.lower()}"
            lines[f"{prefix}.plain.sasl.jaas.config"] = (
                f"org.apache.kafka.common.security.plain.PlainLoginModule required {plain_users};")
            for scram in MECHANISMS[1:]:
                lines[f"{prefix}.{scram.lower()}.sasl.jaas.config"] = (
                    "org.apache.kafka.common.security.scram.ScramLoginModule required;")

    def format_args(self) -> list[str]:
        """``kafka-storage format`` arguments that create the SCRAM credentials."""
        return [arg for name, pw in self.users.items() for scram in MECHANISMS[1:]
                for arg in ("--add-scram", f"{scram}=[name={_quoted(name)},password={_quoted(pw)}]")]
