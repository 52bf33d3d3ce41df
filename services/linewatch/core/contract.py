"""The message contract in code. `schemas/*.schema.json` is the published form; tests keep both in step."""

from __future__ import annotations

import base64
import hashlib
from datetime import UTC, datetime
from typing import Annotated, Literal

import msgspec

TELEMETRY_SCHEMA_VERSION: Literal[1] = 1
DEADLETTER_SCHEMA_VERSION: Literal[1] = 1
SCORES_SCHEMA_VERSION: Literal[1] = 1
ALARM_SCHEMA_VERSION: Literal[1] = 1
LOT_SCHEMA_VERSION: Literal[1] = 1

# Samples per frame when frames are assembled outside Kafka (simulation for training, imports), as the
# hot path wants them: many samples a record and a scoring call.
FRAME_SAMPLES = 100

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$"
Name = Annotated[str, msgspec.Meta(min_length=1, max_length=64, pattern=NAME_PATTERN)]
UtcTime = Annotated[datetime, msgspec.Meta(tz=True)]
EquipmentState = Literal["running", "idle", "maintenance", "setup", "fault"]
# Beyond this magnitude a number is no reading but an instrument's or a PLC's over-range or fault code (9.9e37,
# ±3.4e38); let through, its square or a sum of it overflows every statistic downstream.
READING_LIMIT = 1e30
Reading = Annotated[float, msgspec.Meta(gt=-READING_LIMIT, lt=READING_LIMIT)]


def reading(value: float) -> float | None:
    """A number as the contract takes it: NaN, infinity and an over-range or fault code (9.9e37) are no reading."""
    return value if abs(value) < READING_LIMIT else None


# gc=False: the cyclic collector need not track what cannot form a cycle (a time and a dict of floats);
# with a hundred samples a record it otherwise costs a third of decoding.
class Sample(msgspec.Struct, forbid_unknown_fields=True, frozen=True, gc=False, omit_defaults=True):
    ts: UtcTime
    # Sensor names are checked against the plant model by the validator; a pattern here would cost
    # more than the rest of decoding together (a regex per value).
    values: Annotated[dict[str, Reading], msgspec.Meta(min_length=1)]
    # Added in 1.1: values the source marked Uncertain (OPC UA status); usable, but not to be trusted alone.
    uncertain: list[str] = []


class EquipmentRef(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    """The names that place a unit in the plant; every message about a unit starts with them."""

    site: Name
    area: Name
    line: Name
    equipment_id: Name
    equipment_class: Name


def equipment_fields(ref: EquipmentRef) -> dict[str, str]:
    return {name: getattr(ref, name) for name in EquipmentRef.__struct_fields__}


class TelemetryFrame(EquipmentRef, forbid_unknown_fields=True, frozen=True, kw_only=True):
    """One equipment's readings: one or more timestamped samples of named sensor values."""

    schema_version: Literal[1]
    seq: Annotated[int, msgspec.Meta(ge=0)]
    state: EquipmentState
    units: dict[Name, Annotated[str, msgspec.Meta(min_length=1, max_length=32)]]
    samples: Annotated[list[Sample], msgspec.Meta(min_length=1)]
    lot_id: Name | None = None
    recipe: Name | None = None


# Frames a stateful service remembers per unit to know a copy: a validator or gateway that restarts publishes
# again what it had sent but not yet committed, at new offsets. Deeper copies are applied again.
RECENT_FRAMES = 128


def frame_fingerprint(frame: TelemetryFrame) -> int:
    """The identity of a frame's readings: equal for a copy of it, whatever offset it came at (53 bits, so any
    JSON reader of the state keeps it exact)."""
    identity = (
        f"{frame.equipment_id}|{frame.seq}|{frame.samples[0].ts.timestamp()}|{frame.samples[-1].ts.timestamp()}|"
        f"{len(frame.samples)}|{','.join(sorted(frame.units))}"
    )
    return int.from_bytes(hashlib.blake2b(identity.encode(), digest_size=8).digest()) >> 11


def seen_before(recent: list[int], frame: TelemetryFrame) -> bool:
    """Whether this frame's readings were applied already (a copy); if not, they are remembered as applied."""
    fingerprint = frame_fingerprint(frame)
    if fingerprint in recent:
        return True
    recent.append(fingerprint)
    del recent[:-RECENT_FRAMES]
    return False


class SourcePosition(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    topic: str
    partition: int
    offset: int
    key: str | None = None


class DeadLetter(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """What could not be processed, why, and where it came from."""

    schema_version: Literal[1]
    stage: str
    reason: str
    detail: str
    source: SourcePosition
    received_at: UtcTime
    source_sha256: str
    payload: str
    payload_encoding: Literal["utf-8", "base64"]
    payload_truncated: bool


class SampleScore(msgspec.Struct, forbid_unknown_fields=True, frozen=True, gc=False):
    """One scored sample. Scores are normalised: 1.0 is the unit's alarm level (calibrated to its false-alarm
    rate); each detector's field is its share of the combined score on the same scale."""

    ts: UtcTime
    score: float
    anomalous: bool
    t2: float
    spe: float
    iforest: float
    univariate: float
    missing: list[str]
    flatline: list[str]
    top_sensors: list[str]
    drift: float = 0.0  # added in 1.1: older producers leave it out


class AnomalyScores(EquipmentRef, forbid_unknown_fields=True, frozen=True, kw_only=True):
    """Scores of one frame's running samples by one model version (active, or shadow beside it)."""

    schema_version: Literal[1]
    model_version: Name
    role: Literal["active", "shadow"]
    samples: Annotated[list[SampleScore], msgspec.Meta(min_length=1)]
    lot_id: Name | None = None


AlarmState = Literal[
    "normal",
    "unacknowledged",
    "acknowledged",
    "rtn_unacknowledged",
    "shelved",
    "suppressed_by_design",
    "out_of_service",
]
AlarmPriority = Literal["low", "medium", "high", "critical"]
AlarmCondition = Literal["anomaly", "spec_limit", "spc_rule", "exposure_dose", "no_data"]
AlarmActionName = Literal["acknowledge", "shelve", "unshelve", "remove_from_service", "return_to_service", "comment"]
Text = Annotated[str, msgspec.Meta(max_length=2000)]


class AlarmEvent(EquipmentRef, forbid_unknown_fields=True, frozen=True, kw_only=True):
    """One ISA-18.2 lifecycle event of one alarm: a state transition, an escalation or an audited action."""

    schema_version: Literal[1]
    event_id: Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
    alarm_id: Annotated[str, msgspec.Meta(min_length=1, max_length=160)]
    ts: UtcTime
    kind: Literal["transition", "escalation"]
    condition: AlarmCondition
    sensor: Name | None = None
    previous: AlarmState
    state: AlarmState
    cause: Text
    priority: AlarmPriority
    annunciate: bool
    message: Text
    value: float | None = None
    limit: float | None = None
    lots: list[Name] = []
    user: Name | None = None
    comment: Text | None = None
    # Since 1.1: the alarm's rationalization from the master alarm database (absent: not rationalized).
    rationalization: Annotated[str, msgspec.Meta(min_length=1, max_length=80)] | None = None
    severity: Name | None = None
    respond_within_s: Annotated[float, msgspec.Meta(gt=0)] | None = None
    probable_cause: Text | None = None
    consequence: Text | None = None
    corrective_action: Text | None = None


RAISED_STATE: AlarmState = "unacknowledged"
# The condition is present and someone should see to it; every other state is not an active alarm.
ACTIVE_STATES: frozenset[AlarmState] = frozenset({"unacknowledged", "acknowledged"})


def raises_alarm(kind: str, state: str, previous: str) -> bool:
    """Whether an alarm event raises the alarm (again): a transition into `unacknowledged` from another state."""
    return kind == "transition" and state == RAISED_STATE and previous != RAISED_STATE


def becomes_active(kind: str, state: str, previous: str) -> bool:
    """Whether an alarm event starts an active period (raised, or raised and acknowledged at once)."""
    return kind == "transition" and state in ACTIVE_STATES and previous not in ACTIVE_STATES


class AlarmAction(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    """An operator's request on one alarm; the alerter applies it and answers with audited AlarmEvents."""

    schema_version: Literal[1]
    action_id: Name
    alarm_id: Annotated[str, msgspec.Meta(min_length=1, max_length=160)]
    equipment_id: Name
    action: AlarmActionName
    user: Name
    comment: Text = ""
    duration_s: Annotated[float, msgspec.Meta(gt=0)] | None = None
    requested_at: UtcTime


class LotEvent(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    """Genealogy: an electrolyte lot made on a synthesis line, or a batch of cells built from input lots."""

    schema_version: Literal[1]
    kind: Literal["electrolyte_lot_made", "cells_produced"]
    ts: UtcTime
    site: Name
    area: Name
    line: Name
    lot_id: Name
    input_lots: list[Name] = []
    cells: list[Name] = []


class ServiceStats(msgspec.Struct, frozen=True):
    """Counters a service publishes every second, for the live view and benchmarks."""

    service: str
    instance: str
    at: UtcTime
    counters: dict[str, int]
    peak_rss_bytes: int


telemetry_decoder = msgspec.json.Decoder(TelemetryFrame)
deadletter_decoder = msgspec.json.Decoder(DeadLetter)
scores_decoder = msgspec.json.Decoder(AnomalyScores)
stats_decoder = msgspec.json.Decoder(ServiceStats)
alarm_event_decoder = msgspec.json.Decoder(AlarmEvent)
alarm_action_decoder = msgspec.json.Decoder(AlarmAction)
lot_event_decoder = msgspec.json.Decoder(LotEvent)
encoder = msgspec.json.Encoder()

DEADLETTER_PAYLOAD_LIMIT = 64 * 1024


def sha256_hex(payload: bytes) -> str:
    return hashlib.sha256(payload).hexdigest()


def dead_letter(
    *,
    stage: str,
    reason: str,
    detail: str,
    source: SourcePosition,
    source_bytes: bytes,
    payload: bytes | None = None,
) -> DeadLetter:
    """Wrap a rejected payload (by default the whole source message) with its reason and origin."""
    body = source_bytes if payload is None else payload
    truncated = len(body) > DEADLETTER_PAYLOAD_LIMIT
    body = body[:DEADLETTER_PAYLOAD_LIMIT]
    encoding: Literal["utf-8", "base64"] = "utf-8"
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:  # binary, or cut inside a character by the truncation
        text, encoding = base64.b64encode(body).decode("ascii"), "base64"
    return DeadLetter(
        schema_version=DEADLETTER_SCHEMA_VERSION,
        stage=stage,
        reason=reason,
        detail=detail[:2000],
        source=source,
        received_at=datetime.now(UTC),
        source_sha256=sha256_hex(source_bytes),
        payload=text,
        payload_encoding=encoding,
        payload_truncated=truncated,
    )
