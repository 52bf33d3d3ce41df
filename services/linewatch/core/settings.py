"""Typed settings shared by services, read from LINEWATCH_* environment variables once in `__main__`."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

REPO_ROOT = Path(__file__).resolve().parents[3]
DEFAULT_PLANT_FILE = REPO_ROOT / "deploy" / "plant" / "reference-plant.yaml"


# What example files and quick setups leave behind; a credential equal to one of them is refused at start.
PLACEHOLDERS = frozenset({"changeme", "change-me", "change_me", "password", "secret", "admin", "token", "default"})


def _real(secret: SecretStr) -> SecretStr:
    text = secret.get_secret_value().strip()
    if not text:
        raise ValueError("is empty: set the secret, or leave the variable out where it is optional")
    if text.lower() in PLACEHOLDERS or text.startswith("<"):
        raise ValueError("is a placeholder: set a real secret (e.g. `openssl rand -hex 32`)")
    return secret


# A secret a service cannot work without once it is set: never empty, never a placeholder.
Credential = Annotated[SecretStr, AfterValidator(_real)]
# An optional endpoint's secret: compose passes "" for one that is not configured, which means off.
OptionalCredential = Annotated[Credential | None, BeforeValidator(lambda value: None if value == "" else value)]


class Topics(BaseModel):
    """Topic names; a sandbox gets its own with `prefixed()`."""

    raw: str = "linewatch.telemetry.raw"
    valid: str = "linewatch.telemetry.valid"
    deadletter: str = "linewatch.deadletter"
    stats: str = "linewatch.stats"
    scores: str = "linewatch.scores"
    alarms: str = "linewatch.alarms"
    alarm_actions: str = "linewatch.alarms.actions"
    lots: str = "linewatch.lots"

    def prefixed(self, prefix: str) -> Topics:
        return Topics(**{name: prefix + topic for name, topic in self.model_dump().items()})

    def all(self) -> list[str]:
        return [
            self.raw,
            self.valid,
            self.deadletter,
            self.stats,
            self.scores,
            self.alarms,
            self.alarm_actions,
            self.lots,
        ]


class KafkaSettings(BaseModel):
    bootstrap_servers: str = "127.0.0.1:9092"
    partitions: int = 4
    # Tansu holds a fetch with nothing to return this long, so every idle consumer asks the broker this often; a
    # record arriving meanwhile waits up to about this long, a quarter of it at the median (docs/benchmarks.md,
    # 2026-12-05). 25 ms beat 10 ms under load there. Apache Kafka answers as soon as data is there.
    fetch_max_wait_ms: int = 25
    session_timeout_s: float = 10.0
    topics: Topics = Topics()
    # A sandbox (replay, what-if) prefixes its consumer groups too, so it never joins a live group.
    group_prefix: str = ""
    # Production Kafka: TLS (the cluster's CA; a client certificate for mutual TLS) and SASL/SCRAM users, e.g.
    # Strimzi's TLS listener with one KafkaUser per service (deploy/k8s). Every client (faust, aiokafka,
    # kafka-python) takes them through `linewatch.core.kafka`.
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    ssl_cafile: Path | None = None
    ssl_certfile: Path | None = None
    ssl_keyfile: Path | None = None
    sasl_mechanism: Literal["SCRAM-SHA-512", "SCRAM-SHA-256", "PLAIN"] = "SCRAM-SHA-512"
    sasl_username: str | None = None
    sasl_password: OptionalCredential = None

    @model_validator(mode="after")
    def _sasl_has_a_user(self) -> KafkaSettings:
        if self.security_protocol.startswith("SASL") and (self.sasl_username is None or self.sasl_password is None):
            raise ValueError(
                f"security_protocol {self.security_protocol} needs LINEWATCH_KAFKA__SASL_USERNAME and "
                "LINEWATCH_KAFKA__SASL_PASSWORD"
            )
        if (self.ssl_certfile is None) != (self.ssl_keyfile is None):
            raise ValueError("a client certificate needs both LINEWATCH_KAFKA__SSL_CERTFILE and __SSL_KEYFILE")
        return self

    def group(self, service: str) -> str:
        return f"{self.group_prefix}{service}"


class InfluxSettings(BaseModel):
    url: str = "http://127.0.0.1:8086"
    # v1: POST /write?db= (InfluxDB 1.x); v2: influxdb-client WriteApi (InfluxDB >= 1.8, 2.x, 3.x).
    api: Literal["v1", "v2"] = "v1"
    database: str = "linewatch"
    bucket: str = "linewatch"
    org: str = "linewatch"
    token: Credential | None = None
    username: str | None = None
    password: Credential | None = None
    timeout_s: float = 30.0


class HealthSettings(BaseModel):
    """The broker watch and its HTTP probes (GET /livez, /readyz); see `linewatch.core.health`."""

    port: int | None = None  # no HTTP endpoints unless set; compose, k8s and `linewatch up` set one
    host: str = "127.0.0.1"
    check_interval_s: float = Field(default=2.0, gt=0)
    stall_s: float = Field(default=60.0, gt=0)  # input waiting this long, none of it processed: not ready
    live_timeout_s: float = Field(default=30.0, gt=0)  # the event loop blocked this long: not alive
    # Where the report of a broker's loss waits for the next start (survives a container restart; k8s: emptyDir).
    state_dir: Path = Path(tempfile.gettempdir()) / "linewatch-state"


class CommonSettings(BaseSettings):
    """Base of every service's settings: nested values use `__`, e.g. LINEWATCH_KAFKA__BOOTSTRAP_SERVERS."""

    model_config = SettingsConfigDict(env_prefix="LINEWATCH_", env_nested_delimiter="__", extra="ignore")

    kafka: KafkaSettings = KafkaSettings()
    health: HealthSettings = HealthSettings()
    log_level: str = "INFO"
    stats_interval_s: float = Field(default=1.0, gt=0)
    # Past this a stop ends the process (the broker gone, it could wait forever): within docker's 10 s and
    # Kubernetes' 30 s before they kill it; a stop with the broker there takes about a second.
    stop_within_s: float = Field(default=8.0, gt=0)
    plant_file: Path = DEFAULT_PLANT_FILE
