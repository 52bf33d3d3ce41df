"""The plant model (`deploy/plant/*.yaml`, LINEWATCH_PLANT_FILE): sites, areas, lines, equipment and classes,
sensors with unit, normal range, spec limits, critical-to-quality flag, sample period and source address (where
the gateway reads it: an OPC UA node, a Sparkplug B metric, an MQTT topic and JSON field). The simulator's
parameters (nominal, noise, dynamics, lots, faults) are optional: a real plant's file needs none of them.
`schemas/plant.v1.schema.json` is generated from these models; `linewatch plant validate FILE` checks a file."""

from __future__ import annotations

import math
from functools import cached_property
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

from linewatch.core.commandline import UsageError
from linewatch.core.contract import NAME_PATTERN, EquipmentRef
from linewatch.core.yamlfile import FileProblems, load_model

# The contract's name rule; it also makes sensor names safe line-protocol field keys as they are.
SensorName = Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=NAME_PATTERN)]

Protocol = Literal["opcua", "sparkplug", "mqtt"]
# Where a sensor is read, per protocol. A template may name {site} {area} {line} {equipment} {class} {sensor}:
#   opcua:     a NodeId ("ns=2;s={equipment}.{sensor}") or a browse path from Objects ("/2:Mill01/2:Speed")
#   sparkplug: GROUP/EDGE_NODE/DEVICE/METRIC ("{site}/{line}/{equipment}/{sensor}")
#   mqtt:      TOPIC#FIELD, a JSON object's field, dots for nesting ("plant/{equipment}#{sensor}")
Sources = dict[Protocol, Annotated[str, StringConstraints(min_length=1, max_length=512)]]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Sensor(_Strict):
    unit: str
    normal: tuple[float, float]
    spec: tuple[float | None, float | None] = (None, None)
    critical: bool = False
    # A controlled process value and its setpoint sensor: the control deviation is a quality signal.
    tracks: str | None = None
    # What the gateway asks for: a sample period (default: the plant's) and a deadband (absolute, in `unit`).
    sample_period_s: float | None = Field(default=None, gt=0)
    deadband: float = Field(default=0.0, ge=0)
    source: Sources = {}  # overrides the plant's `sources` template for this sensor
    # Simulation only. The value it is simulated around (default: the middle of the normal range) and noise.
    nominal: float = math.nan
    noise: float = Field(default=0.0, ge=0)
    # How the process value moves: first-order lag towards its target, driven by other sensors.
    tau_s: float = Field(default=0.0, ge=0)
    follows: dict[str, float] = {}
    profile: Literal["ramp_soak", "press_cycle"] | None = None
    idle: float | None = None

    @model_validator(mode="after")
    def _nominal_in_range(self) -> Sensor:
        if self.normal[0] > self.normal[1]:
            raise ValueError(f"normal range {list(self.normal)} is upside down")
        if math.isnan(self.nominal):
            object.__setattr__(self, "nominal", (self.normal[0] + self.normal[1]) / 2)
        return self


class EquipmentClass(_Strict):
    description: str = ""
    # After a start-up, readings of lagged process values are not steady for this long: not scored.
    settle_s: float = Field(default=0.0, ge=0)
    sensors: dict[SensorName, Sensor]
    recipes: dict[str, dict[str, float]] = {}

    @model_validator(mode="after")
    def _drivers_exist(self) -> EquipmentClass:
        names = list(self.sensors)
        for name, sensor in self.sensors.items():
            for driver in sensor.follows:
                # Drivers come earlier in the file so one pass in order computes every sensor.
                if driver not in names[: names.index(name)]:
                    raise ValueError(f"sensor {name} follows {driver}, which is not defined before it")
        for name, sensor in self.sensors.items():
            if sensor.tracks is not None and sensor.tracks not in self.sensors:
                raise ValueError(f"sensor {name} tracks unknown sensor {sensor.tracks}")
        for recipe, setpoints in self.recipes.items():
            unknown = set(setpoints) - set(self.sensors)
            if unknown:
                raise ValueError(f"recipe {recipe} sets unknown sensors {sorted(unknown)}")
        return self


class EquipmentGroup(_Strict):
    equipment_class: str = Field(alias="class")
    ids: list[SensorName]
    # Addresses of single units that no template gives (e.g. numeric NodeIds): unit id -> sensor -> sources.
    sources: dict[SensorName, dict[SensorName, Sources]] = {}

    @model_validator(mode="after")
    def _sources_name_units(self) -> EquipmentGroup:
        unknown = set(self.sources) - set(self.ids)
        if unknown:
            raise ValueError(f"sources name units that are not in ids: {sorted(unknown)}")
        return self


class Line(_Strict):
    name: str
    consumes_from: str | None = None
    equipment: list[EquipmentGroup]


class Area(_Strict):
    name: str
    kind: Literal["electrolyte", "cell_assembly"] | None = None  # the simulator's: what the area makes
    lines: list[Line]


class Fault(_Strict):
    equipment_class: str | None = Field(default=None, alias="class")
    sensor: str | None = None
    kind: Literal["process", "sensor"] = "process"
    shape: Literal["ramp", "step", "spikes", "stuck", "dropout"]
    magnitude: float = 0.0
    relative: bool = False
    duration_s: float = Field(gt=0)
    description: str


class Equipment(_Strict):
    id: str
    equipment_class: str
    site: str
    area: str
    line: str

    @property
    def ref(self) -> EquipmentRef:
        return EquipmentRef(
            site=self.site, area=self.area, line=self.line, equipment_id=self.id, equipment_class=self.equipment_class
        )


class PlantModel(_Strict):
    site: str
    sample_period_s: float = Field(default=1.0, gt=0)
    sources: Sources = {}  # address templates per protocol, for every sensor that does not give its own
    classes: dict[str, EquipmentClass]
    areas: list[Area]
    # Simulation only: lot windows, cells per lot and the fault catalogue.
    lot_duration_s: float = Field(default=7200.0, gt=0)
    cells_per_lot: int = Field(default=24, gt=0)  # cells a cell line builds in one lot window
    faults: dict[str, Fault] = {}

    @model_validator(mode="after")
    def _references_resolve(self) -> PlantModel:
        seen: set[str] = set()
        for equipment in self.equipment:
            if equipment.equipment_class not in self.classes:
                raise ValueError(f"{equipment.id}: unknown class {equipment.equipment_class}")
            if equipment.id in seen:
                raise ValueError(f"equipment id {equipment.id} appears twice")
            seen.add(equipment.id)
        for group in (g for area in self.areas for line in area.lines for g in line.equipment):
            for unit, addressed in group.sources.items():
                unknown = set(addressed) - set(self.classes[group.equipment_class].sensors)
                if unknown:
                    raise ValueError(f"sources of {unit}: {group.equipment_class} has no sensor {sorted(unknown)}")
        for name, fault in self.faults.items():
            if fault.equipment_class is not None:
                sensors = self.classes[fault.equipment_class].sensors
                if fault.sensor not in sensors:
                    raise ValueError(f"fault {name}: {fault.equipment_class} has no sensor {fault.sensor}")
        return self

    @cached_property
    def equipment(self) -> list[Equipment]:
        return [
            Equipment(id=eid, equipment_class=group.equipment_class, site=self.site, area=area.name, line=line.name)
            for area in self.areas
            for line in area.lines
            for group in line.equipment
            for eid in group.ids
        ]

    @cached_property
    def equipment_by_id(self) -> dict[str, Equipment]:
        return {e.id: e for e in self.equipment}

    @cached_property
    def lines(self) -> dict[str, Line]:
        return {line.name: line for area in self.areas for line in area.lines}

    @cached_property
    def area_of_line(self) -> dict[str, str]:
        return {line.name: area.name for area in self.areas for line in area.lines}

    def sensor_count(self) -> int:
        return sum(len(self.classes[e.equipment_class].sensors) for e in self.equipment)

    @cached_property
    def _unit_sources(self) -> dict[str, dict[str, Sources]]:
        return {
            unit: sensors
            for area in self.areas
            for line in area.lines
            for group in line.equipment
            for unit, sensors in group.sources.items()
        }

    def address(self, equipment: Equipment, sensor: str, protocol: Protocol) -> str | None:
        """Where the gateway reads this unit's sensor over `protocol`: the unit's own address, else the sensor's
        template, else the plant's; None when none is given."""
        own = self._unit_sources.get(equipment.id, {}).get(sensor, {}).get(protocol)
        if own is not None:
            return own
        template = self.classes[equipment.equipment_class].sensors[sensor].source.get(protocol)
        template = template or self.sources.get(protocol)
        if template is None:
            return None
        return template.format(
            site=equipment.site,
            area=equipment.area,
            line=equipment.line,
            equipment=equipment.id,
            sensor=sensor,
            **{"class": equipment.equipment_class},
        )

    def period_s(self, equipment_class: str, sensor: str) -> float:
        own = self.classes[equipment_class].sensors[sensor].sample_period_s
        return own if own is not None else self.sample_period_s


def load_plant(path: Path) -> PlantModel:
    """The plant model; FileProblems names each mistake's line and field."""
    return load_model(path, PlantModel)


def read_plant(path: Path) -> PlantModel:
    """`load_plant` for commands: a missing or invalid file is one line saying which field is wrong."""
    try:
        return load_plant(path)
    except FileNotFoundError:
        raise UsageError(
            f"no plant file {path}: set LINEWATCH_PLANT_FILE (`linewatch plant draft` writes one)"
        ) from None
    except FileProblems as exc:
        extra = len(exc.problems) - 1
        more = f" (and {extra} more: `linewatch plant validate {path}`)" if extra else ""
        raise UsageError(exc.problems[0] + more) from None


def json_schema() -> dict[str, Any]:
    """The plant file's JSON Schema (schemas/plant.v1.schema.json is this)."""
    schema = PlantModel.model_json_schema(by_alias=True)
    nominal = schema["$defs"]["Sensor"]["properties"]["nominal"]
    nominal.pop("default")  # NaN, "the middle of the normal range": no JSON value says that
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": "https://linewatch.dev/schemas/plant.v1.schema.json",
        "title": "PlantModel",
        "description": (__doc__ or "").split("\n\n")[0].replace("\n", " "),
        **{k: v for k, v in schema.items() if k not in ("title", "description")},
    }
