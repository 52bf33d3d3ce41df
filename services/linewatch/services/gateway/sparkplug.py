"""Sparkplug B host logic, without the network: births (aliases), data, deaths (the equipment's sensors go stale),
sequence numbers (a gap asks the edge node to rebirth), and malformed payloads as dead letters."""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Protocol

from google.protobuf.message import DecodeError

from linewatch.core import sparkplug
from linewatch.core.stats import StatsCounter
from linewatch.services.gateway.frames import Assembler, Point, utc_from_ms

log = logging.getLogger(__name__)


class AliasStore(Protocol):
    def load(self) -> dict[tuple[str, str], dict[str, dict[int, str]]]: ...

    def keep(self, group: str, edge_node: str, aliases: dict[str, dict[int, str]]) -> None: ...


@dataclass
class EdgeNode:
    born: bool = False
    next_seq: int | None = None
    bdseq: int | None = None
    aliases: dict[str, dict[int, str]] = field(default_factory=lambda: defaultdict(dict))  # device -> alias -> name
    rebirth_asked_at: float = -1e9


class SparkplugHost:
    """Feed it every message under spBv1.0/...; `handle` returns the rebirth requests to publish (topic, payload)."""

    def __init__(
        self,
        points: dict[str, Point],
        assembler: Assembler,
        stats: StatsCounter,
        rebirth_interval_s: float,
        aliases: AliasStore | None = None,
    ) -> None:
        self.points = points
        self.assembler = assembler
        self.stats = stats
        self.rebirth_interval_s = rebirth_interval_s
        self.nodes: dict[tuple[str, str], EdgeNode] = defaultdict(EdgeNode)
        # The names behind the aliases outlive a gateway restart: what the broker sends again after a crash is
        # alias-only data from before the rebirth this gateway will ask for.
        self._aliases = aliases
        for (group, node_id), devices in (aliases.load() if aliases else {}).items():
            for device, names in devices.items():
                self.nodes[(group, node_id)].aliases[device].update(names)
        self.stale: set[str] = set()  # equipment whose edge node or device is dead
        self._topics: dict[str, tuple[str, str, str, str]] = {}  # topic -> (group, kind, edge node, device)
        self._device_units: dict[tuple[str, str, str], set[str]] = defaultdict(set)
        # (group, edge node, device) -> metric name -> (equipment id, sensor)
        self._places: dict[tuple[str, str, str], dict[str, tuple[str, str]]] = defaultdict(dict)
        for point in points.values():
            group, node, device, metric = _split(point.address)
            self._device_units[(group, node, device)].add(point.equipment.id)
            self._places[(group, node, device)][metric] = (point.equipment.id, point.sensor)

    def groups(self) -> set[str]:
        return {_split(address)[0] for address in self.points}

    def handle(self, topic: str, payload: bytes) -> list[tuple[str, bytes]]:
        parsed = self._topics.get(topic)
        if parsed is None:
            parsed = self._topics[topic] = _parse_topic(topic)
            if len(self._topics) > 100_000:  # topics are few in a plant; garbage topics must not grow this
                self._topics.clear()
        group, kind, node_id, device = parsed
        if kind in ("", "NCMD", "DCMD", "STATE"):
            return []
        try:
            message = sparkplug.Payload.FromString(payload)
        except DecodeError as exc:
            self.assembler.reject(f"mqtt:{topic}", "malformed_sparkplug", f"not a Sparkplug B payload: {exc}", payload)
            return []
        node = self.nodes[(group, node_id)]
        requests: list[tuple[str, bytes]] = []
        if kind == "NBIRTH":
            node.born, node.next_seq = True, (message.seq + 1) % 256
            node.aliases.clear()
            node.bdseq = _bdseq(message)
            self._alive(group, node_id, None)
        elif kind == "NDEATH":
            if node.bdseq is None or _bdseq(message) in (None, node.bdseq):
                node.born, node.next_seq = False, None
                self._dead(group, node_id, None)
            return []
        else:
            if not node.born:
                self.stats.counters["sparkplug_before_birth"] += 1
                requests += self._rebirth(group, node_id, node, "data before its birth")
            elif message.HasField("seq") and node.next_seq is not None and message.seq != node.next_seq:
                self.stats.counters["sparkplug_sequence_gaps"] += 1
                log.warning(
                    "Sparkplug B sequence gap",
                    extra={"edge_node": f"{group}/{node_id}", "expected": node.next_seq, "got": message.seq},
                )
                requests += self._rebirth(group, node_id, node, "sequence gap")
            if message.HasField("seq"):
                node.next_seq = (message.seq + 1) % 256
            if kind == "DBIRTH":
                node.aliases[device].clear()
                self._alive(group, node_id, device)
            elif kind == "DDEATH":
                self._dead(group, node_id, device)
                return requests
        birth = kind.endswith("BIRTH")
        self._values(group, node_id, device, node, message, topic, birth)
        if birth and self._aliases is not None:
            self._aliases.keep(group, node_id, node.aliases)
        return requests

    def _values(
        self, group: str, node_id: str, device: str, node: EdgeNode, message: Any, topic: str, birth: bool
    ) -> None:
        # The hot path (every DDATA metric): plain dict lookups, a field read, no string building.
        aliases = node.aliases[device]
        places = self._places.get((group, node_id, device), {})
        default_ms = message.timestamp or int(time.time() * 1000)
        samples: dict[tuple[str, int], dict[str, float]] = {}
        unknown: list[str] = []
        unplaced = 0
        for metric in message.metrics:
            name = metric.name
            if name:
                if birth and metric.HasField("alias"):
                    aliases[metric.alias] = name
            else:
                name = aliases.get(metric.alias, "")
                if not name:
                    unplaced += 1
                    continue
            place = places.get(name)
            if place is None:
                if name != sparkplug.BDSEQ_METRIC and not name.startswith("Node Control/"):
                    unknown.append(name)
                continue
            kind = metric.WhichOneof("value")
            if kind == "double_value":
                value = metric.double_value
            else:
                other = sparkplug.metric_value(metric) if kind is not None else None
                if other is None:
                    if kind is None and metric.is_null:
                        continue  # a null value, as the edge node says: nothing to store
                    what = kind or "metric without a value"
                    self.assembler.reject(f"mqtt:{topic}", "not_a_number", f"{name}: a {what} is not a number", b"")
                    continue
                value = other
            key = (place[0], metric.timestamp or default_ms)
            sample = samples.get(key)
            if sample is None:
                sample = samples[key] = {}
            sample[place[1]] = value
        counted = 0
        for (equipment_id, ms), values in samples.items():
            self.assembler.add(equipment_id, utc_from_ms(ms), values)
            counted += len(values)
        self.stats.counters["values_in"] += counted
        if unknown:
            self.stats.counters["unknown_tags"] += len(unknown)
            log.warning(
                "Sparkplug B metrics not in the plant file: not read", extra={"topic": topic, "metrics": unknown[:10]}
            )
        if unplaced:
            self.stats.counters["sparkplug_unknown_alias"] += unplaced
            self.assembler.reject(
                f"mqtt:{topic}", "unknown_alias", f"{unplaced} metric(s) by alias with no birth names them", b""
            )

    def _rebirth(self, group: str, node_id: str, node: EdgeNode, why: str) -> list[tuple[str, bytes]]:
        now = time.monotonic()
        if now - node.rebirth_asked_at < self.rebirth_interval_s:
            return []
        node.rebirth_asked_at = now
        self.stats.counters["sparkplug_rebirth_requests"] += 1
        log.info("asking a Sparkplug B edge node to rebirth", extra={"edge_node": f"{group}/{node_id}", "why": why})
        ms = int(time.time() * 1000)
        return [(sparkplug.topic(group, "NCMD", node_id), sparkplug.rebirth_request(ms))]

    def _alive(self, group: str, node_id: str, device: str | None) -> None:
        units = self._units(group, node_id, device)
        if units & self.stale:
            self.stale -= units
            log.info("equipment reporting again", extra={"equipment": sorted(units)})
        self.stats.counters["equipment_stale"] = len(self.stale)

    def _dead(self, group: str, node_id: str, device: str | None) -> None:
        units = self._units(group, node_id, device)
        self.stale |= units
        self.stats.counters["sparkplug_deaths"] += 1
        self.stats.counters["equipment_stale"] = len(self.stale)
        log.warning(
            "Sparkplug B death: the equipment's sensors are stale",
            extra={"edge_node": f"{group}/{node_id}", "device": device, "equipment": sorted(units)},
        )

    def _units(self, group: str, node_id: str, device: str | None) -> set[str]:
        return {
            unit
            for (g, n, d), units in self._device_units.items()
            if g == group and n == node_id and (device is None or d == device)
            for unit in units
        }


def _parse_topic(topic: str) -> tuple[str, str, str, str]:
    """spBv1.0/GROUP/KIND/EDGE_NODE[/DEVICE]; kind "" for anything else."""
    parts = topic.split("/")
    if len(parts) not in (4, 5) or parts[0] != sparkplug.NAMESPACE:
        return "", "", "", ""
    return parts[1], parts[2], parts[3], parts[4] if len(parts) == 5 else ""


def _split(address: str) -> tuple[str, str, str, str]:
    """GROUP/EDGE_NODE/DEVICE/METRIC; a metric name may hold '/' ("Node Control/Rebirth"), the others may not."""
    parts = address.split("/", 3)
    if len(parts) != 4:
        raise ValueError(f"Sparkplug B address {address!r}: use GROUP/EDGE_NODE/DEVICE/METRIC")
    return parts[0], parts[1], parts[2], parts[3]


def _bdseq(message: object) -> int | None:
    for metric in getattr(message, "metrics", ()):
        if metric.name == sparkplug.BDSEQ_METRIC:
            return int(sparkplug.metric_value(metric) or 0)
    return None
