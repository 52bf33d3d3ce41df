"""InfluxDB line protocol, written directly: Point.to_line_protocol() costs ~13 us a point.

Telemetry takes a faster path still: sample values are copied as their JSON number text (valid line
protocol floats) instead of being parsed and printed again, which was the costliest step of the writer.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import UTC, datetime

import msgspec

from linewatch.core.contract import (
    ACTIVE_STATES,
    EquipmentRef,
    alarm_event_decoder,
    lot_event_decoder,
    scores_decoder,
    stats_decoder,
)
from linewatch.core.plant import PlantModel
from linewatch.storage.measurements import (
    ALARM_EVENT,
    ANOMALY,
    LOT_GENEALOGY,
    PLANT_SENSOR,
    SERVICE_STATS,
    TELEMETRY,
)

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_KEY_ESCAPES = str.maketrans({",": r"\,", "=": r"\=", " ": r"\ ", "\n": r"\n"})
_MEASUREMENT_ESCAPES = str.maketrans({",": r"\,", " ": r"\ ", "\n": r"\n"})
_STRING_ESCAPES = str.maketrans({'"': r"\"", "\\": "\\\\", "\n": r"\n"})


def escape_key(text: str) -> str:
    """Escape a tag key, tag value or field key."""
    return text.translate(_KEY_ESCAPES)


def to_ns(ts: datetime) -> int:
    """Exact integer nanoseconds since the epoch (float seconds would lose precision)."""
    delta = ts - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000_000 + delta.microseconds * 1_000


def field_value(value: float | int | str | bool) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return f"{value}i"
    if isinstance(value, float):
        return repr(value)
    return '"' + value.translate(_STRING_ESCAPES) + '"'


def series_key(measurement: str, tags: Mapping[str, str]) -> str:
    """Measurement and tags, escaped: the start of every line of the series."""
    tag_part = "".join(f",{escape_key(k)}={escape_key(v)}" for k, v in sorted(tags.items()) if v)
    return measurement.translate(_MEASUREMENT_ESCAPES) + tag_part


def line(measurement: str, tags: Mapping[str, str], fields: Mapping[str, float | int | str | bool], ts_ns: int) -> str:
    field_part = ",".join(f"{escape_key(k)}={field_value(v)}" for k, v in fields.items())
    return f"{series_key(measurement, tags)} {field_part} {ts_ns}"


def equipment_tags(ref: EquipmentRef) -> dict[str, str]:
    """The stable tags that place a point at one unit (the same names as the telemetry points)."""
    return {
        "site": ref.site,
        "area": ref.area,
        "line": ref.line,
        "equipment": ref.equipment_id,
        "equipment_class": ref.equipment_class,
    }


def plant_sensor_lines(plant: PlantModel, ts_ns: int) -> list[str]:
    """A point per unit and sensor of the plant model (measurement plant_sensor): unit, normal range, the spec
    limits it has, whether it is critical to quality."""
    lines = []
    for equipment in plant.equipment:
        tags = equipment_tags(equipment.ref)
        for name, sensor in plant.classes[equipment.equipment_class].sensors.items():
            fields: dict[str, float | int | str | bool] = {
                "unit": sensor.unit,
                "normal_low": sensor.normal[0],
                "normal_high": sensor.normal[1],
                "critical": sensor.critical,
            }
            low, high = sensor.spec
            fields |= {"spec_low": low} if low is not None else {}
            fields |= {"spec_high": high} if high is not None else {}
            lines.append(line(PLANT_SENSOR, tags | {"sensor": name}, fields, ts_ns))
    return lines


def score_lines(payload: bytes) -> list[bytes]:
    """One point per scored sample; role is a tag so active and shadow scores are separate series."""
    scores = scores_decoder.decode(payload)
    # The series and the field keys are the record's, not the sample's: escaped once (the writer's costliest
    # step when they were escaped per sample).
    series = series_key(ANOMALY, equipment_tags(scores) | {"role": scores.role})
    version = field_value(scores.model_version)
    return [
        (
            f"{series} score={s.score!r},t2={s.t2!r},spe={s.spe!r},drift={s.drift!r},iforest={s.iforest!r},"
            f"univariate={s.univariate!r},anomalous={'true' if s.anomalous else 'false'},"
            f"top_sensors={field_value(','.join(s.top_sensors))},missing={field_value(','.join(s.missing))},"
            f"flatline={field_value(','.join(s.flatline))},model_version={version} {to_ns(s.ts)}"
        ).encode()
        for s in scores.samples
    ]


RATIONALIZATION_FIELDS = ("rationalization", "severity", "probable_cause", "consequence", "corrective_action")


def alarm_lines(payload: bytes) -> list[bytes]:
    """One point per alarm event. Events of one alarm at one instant differ in the event id's counter,
    added as nanoseconds, so each is its own point and a resend overwrites itself."""
    event = alarm_event_decoder.decode(payload)
    tags = equipment_tags(event) | {
        "alarm_id": event.alarm_id,
        "condition": event.condition,
        "priority": event.priority,
        "kind": event.kind,
    }
    fields: dict[str, float | int | str | bool] = {
        "event_id": event.event_id,
        "state": event.state,
        "previous": event.previous,
        "cause": event.cause,
        "annunciate": event.annunciate,
        "message": event.message,
        "lots": ",".join(event.lots),
        "sensor": event.sensor or "",
        "user": event.user or "",
        "comment": event.comment or "",
        "active": event.state in ACTIVE_STATES,
    }
    if event.value is not None:
        fields["value"] = float(event.value)
    if event.limit is not None:
        fields["limit"] = float(event.limit)
    if event.respond_within_s is not None:
        fields["respond_within_s"] = float(event.respond_within_s)
    for name in RATIONALIZATION_FIELDS:
        text = getattr(event, name)
        if text is not None:
            fields[name] = text
    n = int(event.event_id.rpartition("#")[2] or 0)
    return [line(ALARM_EVENT, tags, fields, to_ns(event.ts) + n).encode()]


def lot_lines(payload: bytes) -> list[bytes]:
    """Genealogy: which lots went into which lot, and the cells built, one point per lot event."""
    event = lot_event_decoder.decode(payload)
    tags = {"site": event.site, "area": event.area, "line": event.line, "kind": event.kind, "lot_id": event.lot_id}
    fields: dict[str, float | int | str | bool] = {
        "input_lots": ",".join(event.input_lots),
        "cells": ",".join(event.cells),
        "cell_count": len(event.cells),
    }
    return [line(LOT_GENEALOGY, tags, fields, to_ns(event.ts)).encode()]


def stats_lines(payload: bytes) -> list[bytes]:
    """A service's per-second counters, for the pipeline-health dashboard."""
    stats = stats_decoder.decode(payload)
    fields: dict[str, float | int | str | bool] = dict(stats.counters)
    fields["peak_rss_bytes"] = stats.peak_rss_bytes
    tags = {"service": stats.service, "instance": stats.instance}
    return [line(SERVICE_STATS, tags, fields, to_ns(stats.at)).encode()]


class _WireSample(msgspec.Struct, gc=False):
    ts: str
    values: msgspec.Raw
    uncertain: list[str] = []


class _WireFrame(msgspec.Struct):
    """The fields of a validated TelemetryFrame that become a point; values stay JSON text."""

    site: str
    area: str
    line: str
    equipment_id: str
    equipment_class: str
    state: str
    samples: list[_WireSample]
    lot_id: str | None = None
    recipe: str | None = None


_wire_decoder = msgspec.json.Decoder(_WireFrame)
_values_decoder = msgspec.json.Decoder(dict[str, float])
# {"a":1.5,"b":-2e-05} -> a=1.5,b=-2e-05 in one pass: drop JSON punctuation, ':' becomes '='.
_JSON_TO_FIELDS = bytes.maketrans(b":", b"=")
_JSON_NOISE = b' \t\r\n"{}'


# Once a sample's names are known safe, the same names are recognised by what is left without the numbers.
_NUMBER_BYTES = b"0123456789.-+eE"
_PLAIN_LAYOUT = re.compile(rb'\{"[^"\\ =,:{}\n\r\t]+":(?:,"[^"\\ =,:{}\n\r\t]+":)*\}')
_plain_layouts: set[bytes] = set()


def _plain(raw: bytes) -> bool:
    """Whether a sample's values are `{"name":number,...}` with names that need no escaping, so that dropping the
    JSON punctuation gives line protocol as it is. Judged once per layout of names (the values taken out)."""
    layout = raw.translate(None, _NUMBER_BYTES)
    if layout in _plain_layouts:
        return True
    if _PLAIN_LAYOUT.fullmatch(layout) is None:
        return False
    if len(_plain_layouts) > 10_000:
        _plain_layouts.clear()
    _plain_layouts.add(layout)
    return True


class TimestampCache:
    """RFC 3339 text -> line-protocol nanoseconds; samples of one instant across equipment share the parse."""

    def __init__(self, size: int = 50_000) -> None:
        self._cache: dict[str, bytes] = {}
        self._size = size

    def __call__(self, text: str) -> bytes:
        ns = self._cache.get(text)
        if ns is None:
            if len(self._cache) >= self._size:
                self._cache.clear()
            ns = self._cache[text] = str(to_ns(datetime.fromisoformat(text))).encode()
        return ns


def telemetry_lines(payload: bytes, ns_of: TimestampCache) -> list[bytes]:
    """One point per sample of a validated frame: stable tags name the equipment; state, lot and recipe
    are fields, so a resend lands on the same series and timestamp and overwrites."""
    frame = _wire_decoder.decode(payload)
    prefix = (
        f"{TELEMETRY},area={escape_key(frame.area)},equipment={escape_key(frame.equipment_id)}"
        f",equipment_class={escape_key(frame.equipment_class)},line={escape_key(frame.line)}"
        f",site={escape_key(frame.site)} "
    ).encode()
    # Every string is escaped here whatever was checked upstream: a frame put straight on the valid topic must
    # not make a point of another series or measurement.
    context = f",state={field_value(frame.state)}"
    if frame.lot_id:
        context += f",lot_id={field_value(frame.lot_id)}"
    if frame.recipe:
        context += f",recipe={field_value(frame.recipe)}"
    suffix = context.encode() + b" "
    lines = []
    for sample in frame.samples:
        raw = bytes(sample.values)
        if _plain(raw):
            fields = raw.translate(_JSON_TO_FIELDS, _JSON_NOISE)
        else:  # names that need escaping, or JSON with spaces: the slow, exact path
            fields = ",".join(f"{escape_key(k)}={v!r}" for k, v in _values_decoder.decode(raw).items()).encode()
        if sample.uncertain:  # which values the source doubted, beside them (a field: no new series)
            fields += f",uncertain={field_value(','.join(sample.uncertain))}".encode()
        lines.append(b"".join((prefix, fields, suffix, ns_of(sample.ts))))
    return lines
