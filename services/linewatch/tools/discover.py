"""`linewatch plant discover opc.tcp://HOST:PORT [--root PATH]`: browse an OPC UA server and draft a plant file.

Objects that hold numeric variables become equipment, their variables sensors (EngineeringUnits and EURange where
present: the unit and the normal range). Units with the same type definition, or else the same variables, share
a class. Folders above a unit name its line and area. Every sensor keeps its NodeId as its `opcua` source, so the
gateway runs on the file as it is written."""

from __future__ import annotations

import asyncio
import re
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from asyncua import ua
from asyncua.client.client import Client
from asyncua.common.node import Node

from linewatch.core.commandline import UsageError
from linewatch.core.plant import PlantModel
from linewatch.storage.historian import sensor_name

NUMERIC = {
    ua.VariantType.Boolean,
    ua.VariantType.SByte,
    ua.VariantType.Byte,
    ua.VariantType.Int16,
    ua.VariantType.UInt16,
    ua.VariantType.Int32,
    ua.VariantType.UInt32,
    ua.VariantType.Int64,
    ua.VariantType.UInt64,
    ua.VariantType.Float,
    ua.VariantType.Double,
}


@dataclass
class FoundSensor:
    name: str
    node_id: str
    unit: str = "unknown"
    normal: tuple[float, float] | None = None


@dataclass
class FoundUnit:
    name: str
    path: list[str]  # browse names of the folders above it
    type_definition: str
    sensors: list[FoundSensor] = field(default_factory=list)


async def browse(endpoint: str, root: str | None, timeout_s: float = 10.0) -> list[FoundUnit]:
    client = Client(endpoint, timeout=timeout_s)
    try:
        await client.connect()
    except (OSError, TimeoutError, ua.UaError) as exc:
        raise UsageError(f"cannot reach the OPC UA server {endpoint}: {exc or type(exc).__name__}") from None
    try:
        start = client.nodes.objects
        if root:
            try:
                start = await start.get_child([part for part in root.split("/") if part])
            except ua.UaError:
                raise UsageError(f"--root {root}: no such browse path under Objects (e.g. /2:Plant/2:Line1)") from None
        units: list[FoundUnit] = []
        await _walk(start, [], units, depth=0)
        return units
    finally:
        await client.disconnect()


async def _walk(node: Node, path: list[str], units: list[FoundUnit], depth: int) -> None:
    if depth > 8:
        return
    children = await node.get_children(refs=ua.ObjectIds.HierarchicalReferences)
    sensors: list[FoundSensor] = []
    objects: list[Node] = []
    for child in children:
        node_class = await child.read_node_class()
        if node_class == ua.NodeClass.Variable:
            found = await _sensor(child)
            if found is not None:
                sensors.append(found)
        elif node_class == ua.NodeClass.Object and child.nodeid.NamespaceIndex != 0:
            objects.append(child)  # namespace 0 is the standard's own (Server, Aliases): not equipment
    if sensors and depth > 0:
        name = (await node.read_browse_name()).Name
        definition = await node.read_type_definition()
        units.append(FoundUnit(name, path, str(definition), sensors))
    for child in objects:
        await _walk(child, [*path, (await node.read_browse_name()).Name] if depth > 0 else path, units, depth + 1)


async def _sensor(node: Node) -> FoundSensor | None:
    try:
        variant = await node.read_data_type_as_variant_type()
    except (ua.UaError, ValueError):
        return None
    if variant not in NUMERIC:
        return None
    found = FoundSensor((await node.read_browse_name()).Name, node.nodeid.to_string())
    for prop in await node.get_properties():
        name = (await prop.read_browse_name()).Name
        value: Any = await prop.read_value()
        if name == "EngineeringUnits" and value is not None:
            found.unit = (value.DisplayName.Text or "unknown")[:32]
        elif name == "EURange" and value is not None and value.High > value.Low:
            found.normal = (float(value.Low), float(value.High))
    return found


def draft(endpoint: str, units: list[FoundUnit]) -> tuple[dict[str, Any], list[str]]:
    if not units:
        raise UsageError(f"{endpoint}: no object with numeric variables under the root: nothing to draft")
    notes: list[str] = []
    classes: dict[str, dict[str, Any]] = {}
    class_of: dict[str, str] = {}
    by_signature: dict[tuple[str, tuple[str, ...]], str] = {}
    lines: dict[tuple[str, str], dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
    sources: dict[str, dict[str, dict[str, str]]] = defaultdict(dict)
    seen_ids: set[str] = set()
    for unit in units:
        unit_id = _unique(sensor_name(unit.name), seen_ids)
        names = {s.name: sensor_name(s.name) for s in unit.sensors}
        if len(set(names.values())) < len(names):
            notes.append(f"{unit.name}: two variables make the same sensor name; the second is left out")
        signature = (unit.type_definition if "i=58" not in unit.type_definition else "", tuple(sorted(names.values())))
        class_name = by_signature.get(signature)
        if class_name is None:
            class_name = _unique(sensor_name(f"{unit.name}-class"), set(classes))
            by_signature[signature] = class_name
            classes[class_name] = {
                "description": f"drafted by `linewatch plant discover` from {endpoint} (first unit {unit.name})",
                "sensors": {},
            }
        class_of[unit_id] = class_name
        sensors = classes[class_name]["sensors"]
        for found in unit.sensors:
            name = names[found.name]
            if name not in sensors:
                low, high = found.normal or (-1e9, 1e9)
                sensors[name] = {"unit": found.unit, "normal": [low, high]}
                if found.normal is None:
                    notes.append(f"{class_name}.{name}: no EURange on the server: set its normal range")
            sources[unit_id][name] = {"opcua": found.node_id}
        area = sensor_name(unit.path[-2]) if len(unit.path) >= 2 else "area"
        line = sensor_name(unit.path[-1]) if unit.path else "line"
        lines[(area, line)][class_name].append(unit_id)
    areas: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for (area, line), groups in lines.items():
        areas[area].append(
            {
                "name": line,
                "equipment": [
                    {"class": name, "ids": ids, "sources": {i: sources[i] for i in ids}} for name, ids in groups.items()
                ],
            }
        )
    document = {
        "site": "site",
        "sample_period_s": 1.0,
        "classes": classes,
        "areas": [{"name": name, "lines": line_list} for name, line_list in areas.items()],
    }
    PlantModel.model_validate(document)  # what we write must load
    return document, notes


def _unique(name: str, taken: set[str]) -> str:
    candidate, n = name, 2
    while candidate in taken:
        candidate = f"{name}-{n}"
        n += 1
    taken.add(candidate)
    return candidate


def write(document: dict[str, Any], path: Path, endpoint: str) -> None:
    header = (
        f"# Drafted by `linewatch plant discover {endpoint}`: check units, set normal ranges the server did not\n"
        "# give, spec limits ([low, high]) and `critical: true` where the process has them, and the site's names.\n"
    )
    path.write_text(header + yaml.safe_dump(document, sort_keys=False, width=120), encoding="utf-8")


def discover(endpoint: str, root: str | None, output: Path) -> tuple[dict[str, Any], list[str]]:
    if not re.match(r"^opc\.tcp://[^/\s]+", endpoint):
        raise UsageError(f"{endpoint!r} is not an OPC UA endpoint: give opc.tcp://HOST:PORT")
    units = asyncio.run(browse(endpoint, root))
    document, notes = draft(endpoint, units)
    write(document, output, endpoint)
    return document, notes
