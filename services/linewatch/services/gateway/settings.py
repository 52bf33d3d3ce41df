"""The gateway's typed settings (LINEWATCH_GATEWAY__*), read once in `__main__`."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field

from linewatch.core.settings import CommonSettings, OptionalCredential


class OpcUaSettings(BaseModel):
    endpoint: str | None = None  # opc.tcp://HOST:PORT[/PATH]; no OPC UA source unless set
    security_policy: Literal["None", "Basic256Sha256"] = "None"
    security_mode: Literal["Sign", "SignAndEncrypt"] = "SignAndEncrypt"
    certificate: Path | None = None  # the gateway's certificate (DER) and private key (PEM)
    private_key: Path | None = None
    server_certificate: Path | None = None  # pinned: the server must present this one
    application_uri: str = "urn:linewatch:gateway"  # must match the certificate's URI
    username: str | None = None
    password: OptionalCredential = None
    publishing_interval_ms: float = Field(default=500.0, gt=0)
    queue_size: int = Field(default=16, ge=1)  # values kept per item between two publishes
    timeout_s: float = Field(default=10.0, gt=0)
    session_timeout_s: float = Field(default=60.0, gt=0)
    keepalive_s: float = Field(default=5.0, gt=0)  # how often the connection is checked
    max_backoff_s: float = Field(default=30.0, gt=0)
    # After a reconnect, read what the server historized while the gateway was away (HistoryRead).
    backfill: bool = True
    max_backfill_s: float = Field(default=3600.0, gt=0)


class MqttSettings(BaseModel):
    host: str | None = None  # no MQTT source unless set
    port: int = 1883
    protocol: Literal["3.1.1", "5"] = "3.1.1"
    client_id: str = "linewatch-gateway"
    username: str | None = None
    password: OptionalCredential = None
    tls: bool = False
    ca_file: Path | None = None
    certificate: Path | None = None
    private_key: Path | None = None
    keepalive_s: int = Field(default=30, gt=0)
    # The broker keeps the gateway's subscriptions and queues QoS 1 messages while it is away (a restart, an
    # upgrade): they arrive when it is back. MQTT 5: the session lasts `session_expiry_s`.
    persistent_session: bool = True
    session_expiry_s: int = Field(default=86400, ge=0)
    # Plain JSON topics: the field holding the time (ISO 8601, or epoch seconds/milliseconds); absent: arrival.
    timestamp_field: str = "ts"
    # A QoS 1 message is acknowledged to the broker once its values are in the on-disk buffer, so a gateway
    # killed meanwhile gets it again. The broker must then allow a second's worth of messages in flight per client
    # (mosquitto: `max_inflight_messages 0`; its default of 20 caps the gateway at about 20 messages a second).
    ack_when_stored: bool = True
    # A Sparkplug B edge node that sends data before its birth is asked to rebirth at most this often.
    rebirth_interval_s: float = Field(default=5.0, gt=0)


class BufferSettings(BaseModel):
    """Store-and-forward: every frame goes through an SQLite file first and leaves it once Kafka acknowledged it."""

    path: Path | None = None  # default: gateway-buffer.sqlite in LINEWATCH_HEALTH__STATE_DIR
    max_bytes: int = Field(default=512 * 1024 * 1024, gt=0)  # beyond this the oldest unsent frames are dropped
    # Frames Kafka acknowledged are kept this long and sent again if the broker comes back without them.
    replay_window_s: float = Field(default=900.0, ge=0)


class GatewaySettings(CommonSettings):
    opcua: OpcUaSettings = OpcUaSettings()
    mqtt: MqttSettings = MqttSettings()
    buffer: BufferSettings = BufferSettings()
    flush_interval_s: float = Field(default=0.5, gt=0)
    # A sample is held this long for its other values (they may arrive in other notifications) before it goes out.
    hold_s: float = Field(default=0.5, ge=0)
    frame_max_samples: int = Field(default=100, gt=0)
