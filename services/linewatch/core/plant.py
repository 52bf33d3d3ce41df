"""The plant model (`deploy/plant/*.yaml`, LINEWATCH_PLANT_FILE): sites, areas, lines, equipment and classes,
sensors with unit, normal range, spec limits and critical-to-quality flag. The simulator's parameters (nominal,
noise, dynamics, lots, faults) are optional: a real plant's file needs none of them."""

from __future__ import annotations

import math
from functools import cached_property
from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError, model_validator

from linewatch.core.commandline import UsageError
from linewatch.core.contract import NAME_PATTERN, EquipmentRef

# The contract's name rule; it also makes sensor names safe line-protocol field keys as they are.
SensorName = Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=NAME_PATTERN)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Sensor(_Strict):
    unit: str
    normal: tuple[float, float]
    spec: tuple[float | None, float | None] = (None, None)
    critical: bool = False
    # A controlled process value and its setpoint sensor: the control deviation is a quality signal.
    tracks: str | None = None
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
    ids: list[str]


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


def load_plant(path: Path) -> PlantModel:
    with path.open(encoding="utf-8") as handle:
        return PlantModel.model_validate(yaml.safe_load(handle))


def read_plant(path: Path) -> PlantModel:
    """`load_plant` for commands: a missing or invalid file is one line saying which field is wrong."""
    try:
        return load_plant(path)
    except FileNotFoundError:
        raise UsageError(
            f"no plant file {path}: set LINEWATCH_PLANT_FILE (`linewatch plant draft` writes one)"
        ) from None
    except yaml.YAMLError as exc:
        raise UsageError(f"{path} is not YAML: {exc}".replace("\n", " ")) from None
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "top level"
        more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
        raise UsageError(f"{path}: {where}: {first['msg']}{more}") from None
