"""How driftline authenticates to Kafka and encrypts the connection: the one rule from settings to librdkafka.

``KafkaSecurity`` holds the options (security protocol, SASL mechanism and credentials, TLS files); its
``config()`` is the librdkafka dictionary every client merges into its own configuration. The workers build
it from their settings (``kafka_security``, ``client_config``), the SDK's ``Monitor`` takes one directly, so
a client never spells ``security.protocol`` or ``sasl.*`` itself.

The password and the private key's passphrase are ``SecretStr`` so that a ``repr`` of the options (or of
the settings that hold them) shows ``**********``; librdkafka itself redacts them in its configuration
dumps. ``problems()`` is the validation shared by the settings (errors naming ``DRIFTLINE_KAFKA_*``) and the
SDK (errors naming the keyword).
"""

from __future__ import annotations

import ssl
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, get_args

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient
from pydantic import SecretStr

from driftline.errors import KafkaRefused
from driftline.streams.kafka.boundary import KAFKA_LOG, broker_error

if TYPE_CHECKING:  # annotations only: the settings module imports this one for its validation
    from driftline.streams.config.settings import Settings

SecurityProtocol = Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]
SaslMechanism = Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]
PROTOCOLS: tuple[str, ...] = get_args(SecurityProtocol)
MECHANISMS: tuple[str, ...] = get_args(SaslMechanism)
# what a broker says when it rejects the credentials (SASL) or the handshake (TLS: certificate, CA, host name)
REFUSALS = frozenset({KafkaError._AUTHENTICATION, KafkaError.SASL_AUTHENTICATION_FAILED, KafkaError._SSL})
_FILES = ("ssl_ca_location", "ssl_certificate_location", "ssl_key_location")


def _secret(value: SecretStr | str) -> SecretStr:
    return value if isinstance(value, SecretStr) else SecretStr(value)


@dataclass(frozen=True, slots=True)
class KafkaSecurity:
    """Security options of a Kafka client. The defaults are plaintext, no authentication.

    >>> sec = KafkaSecurity("SASL_PLAINTEXT", "SCRAM-SHA-256", "svc", "s3cret")
    >>> sec.config()["sasl.mechanism"], "s3cret" in repr(sec)
    ('SCRAM-SHA-256', False)
    """

    security_protocol: SecurityProtocol = "PLAINTEXT"
    sasl_mechanism: SaslMechanism = "PLAIN"
    sasl_username: str = ""
    sasl_password: SecretStr | str = field(default=SecretStr(""), repr=False)
    ssl_ca_location: str = ""  # PEM file of the CA(s) that signed the brokers' certificates; empty: system CAs
    ssl_certificate_location: str = ""  # PEM client certificate, for brokers that require mutual TLS
    ssl_key_location: str = ""  # PEM private key of that certificate
    ssl_key_password: SecretStr | str = field(default=SecretStr(""), repr=False)
    ssl_verify_hostname: bool = True  # check the broker's certificate names the host dialled

    def __post_init__(self) -> None:
        object.__setattr__(self, "sasl_password", _secret(self.sasl_password))
        object.__setattr__(self, "ssl_key_password", _secret(self.ssl_key_password))

    @classmethod
    def from_settings(cls, settings: Settings) -> KafkaSecurity:
        """The options held by the ``kafka_*`` settings (one field each, the same names after ``kafka_``)."""
        return cls(**{f.name: getattr(settings, f"kafka_{f.name}") for f in fields(cls)})

    def problems(self) -> list[tuple[str, str]]:
        """What is wrong, as (option name, why); empty when the options make a usable client.

        Credentials or TLS files given to a protocol that ignores them are errors too: a deployment that
        believes it authenticates or encrypts while it does neither is the mistake worth stopping for.
        """
        found: list[tuple[str, str]] = []
        if self.security_protocol not in PROTOCOLS:
            found.append(("security_protocol", f"must be one of {', '.join(PROTOCOLS)}"))
            return found
        sasl = self.security_protocol.startswith("SASL_")
        tls = self.security_protocol.endswith("SSL")
        if self.sasl_mechanism not in MECHANISMS:
            found.append(("sasl_mechanism", f"must be one of {', '.join(MECHANISMS)}"))
        password = _secret(self.sasl_password).get_secret_value()
        if sasl and not self.sasl_username:
            found.append(("sasl_username", f"required with security protocol {self.security_protocol}"))
        if sasl and not password:
            found.append(("sasl_password", f"required with security protocol {self.security_protocol}"))
        if not sasl and (self.sasl_username or password):
            found.append(("sasl_username" if self.sasl_username else "sasl_password",
                          f"given, but security protocol {self.security_protocol} does not authenticate with SASL"))
        for name in _FILES:
            location = getattr(self, name)
            if location and not tls:
                found.append((name, f"given, but security protocol {self.security_protocol} does not use TLS"))
            elif location and not Path(location).is_file():
                found.append((name, f"no such file: {location}"))
        if bool(self.ssl_certificate_location) != bool(self.ssl_key_location):
            missing = "ssl_key_location" if self.ssl_certificate_location else "ssl_certificate_location"
            found.append((missing, "a client certificate needs both its certificate and its key"))
        return found

    def config(self) -> dict[str, str]:
        """The librdkafka properties: only those the protocol uses, so a plaintext client gets none but one."""
        conf = {"security.protocol": self.security_protocol}
        if self.security_protocol.startswith("SASL_"):
            conf["sasl.mechanism"] = self.sasl_mechanism
            conf["sasl.username"] = self.sasl_username
            conf["sasl.password"] = _secret(self.sasl_password).get_secret_value()
        if self.security_protocol.endswith("SSL"):
            conf["ssl.endpoint.identification.algorithm"] = "https" if self.ssl_verify_hostname else "none"
            optional = {"ssl.ca.location": self.ssl_ca_location,
                        "ssl.certificate.location": self.ssl_certificate_location,
                        "ssl.key.location": self.ssl_key_location,
                        "ssl.key.password": _secret(self.ssl_key_password).get_secret_value()}
            conf.update({key: value for key, value in optional.items() if value})
        return conf

    def ssl_context(self) -> ssl.SSLContext:
        """The same TLS options for a Python client (aiokafka, under the worker's faust app)."""
        context = ssl.create_default_context(cafile=self.ssl_ca_location or None)
        context.check_hostname = self.ssl_verify_hostname
        if self.ssl_certificate_location:
            context.load_cert_chain(self.ssl_certificate_location, self.ssl_key_location,
                                    _secret(self.ssl_key_password).get_secret_value() or None)
        return context


def faust_credentials(settings: Settings) -> Any:
    """The settings' security as faust's ``broker_credentials`` (None: plaintext); faust's aiokafka clients
    run beside the librdkafka ones in a worker, so they must authenticate the same way."""
    import faust  # here, not at the top: the SDK imports this module and never needs faust

    sec = KafkaSecurity.from_settings(settings)
    tls = sec.ssl_context() if sec.security_protocol.endswith("SSL") else None
    if sec.security_protocol.startswith("SASL_"):
        return faust.SASLCredentials(username=sec.sasl_username, mechanism=sec.sasl_mechanism, ssl_context=tls,
                                     password=_secret(sec.sasl_password).get_secret_value())
    return faust.SSLCredentials(tls) if tls is not None else None


def check_access(settings: Settings, timeout: float = 30.0) -> None:
    """Return once the brokers accept the settings' credentials and certificates; raise `KafkaRefused` naming
    the refusal as soon as they reject them.

    Why a check of its own: librdkafka retries a refused login forever, reports it only to ``error_cb``,
    and fails the requests waiting on it as an unreachable broker, so a worker with a wrong password would
    wait out every timeout and then blame the transport. Plaintext has nothing to refuse: no check.
    """
    if settings.kafka_security_protocol == "PLAINTEXT":
        return
    refusals: list[KafkaError] = []

    def note(error: KafkaError) -> None:
        if error.code() in REFUSALS:
            refusals.append(error)

    admin = AdminClient(client_config(settings, {"logger": KAFKA_LOG, "error_cb": note}))
    deadline = time.monotonic() + timeout
    while True:
        try:
            admin.list_topics(timeout=1)
            return
        except KafkaException as exc:
            admin.poll(0)  # error_cb runs only when the client is polled
            if refusals:
                refusal = refusals[-1]
                if refusal.code() == KafkaError._SSL:
                    raise KafkaRefused(f"the TLS handshake with Kafka at {settings.kafka_bootstrap} failed: "
                                       f"{refusal.str()}") from exc
                raise KafkaRefused(f"Kafka at {settings.kafka_bootstrap} refused user "
                                   f"{settings.kafka_sasl_username!r} ({settings.kafka_sasl_mechanism}): "
                                   f"{refusal.str()}") from exc
            if time.monotonic() >= deadline:
                raise broker_error(exc, f"connecting to Kafka at {settings.kafka_bootstrap}") from exc


def kafka_security(settings: Settings) -> dict[str, str]:
    """The librdkafka security properties of the workers' clients, from ``DRIFTLINE_KAFKA_*``."""
    return KafkaSecurity.from_settings(settings).config()


def client_config(settings: Settings, conf: Mapping[str, Any]) -> dict[str, Any]:
    """A client's whole configuration: the bootstrap servers and security from ``settings``, then ``conf``."""
    return {"bootstrap.servers": settings.kafka_bootstrap, **kafka_security(settings), **conf}
