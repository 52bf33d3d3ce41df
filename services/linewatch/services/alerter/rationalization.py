"""The master alarm database (deploy/alerter/alarms.yaml): every alarm rationalized (ISA-18.2) per condition x
equipment class x sensor pattern, with its priority from the consequence severity and the maximum time to
respond through the priority matrix kept in the same file, and the equipment states that suppress it."""

from __future__ import annotations

import fnmatch
from datetime import date
from enum import StrEnum
from pathlib import Path
from typing import Any, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

from linewatch.core.contract import AlarmCondition
from linewatch.core.plant import PlantModel
from linewatch.core.settings import REPO_ROOT
from linewatch.core.yamlfile import FileProblems, load_model
from linewatch.services.alerter.lifecycle import Priority

DEFAULT_ALARM_DATABASE = REPO_ROOT / "deploy" / "alerter" / "alarms.yaml"
SCHEMA_FILE = REPO_ROOT / "schemas" / "alarm-database.v1.schema.json"


class Phase(StrEnum):
    """What a unit is doing at a sample: the states in which an alarm may be suppressed by design."""

    RUNNING = "running"
    START_UP = "start_up"  # running, within the class's settle time after a start
    RECIPE_CHANGE = "recipe_change"  # running, within the settle time after a recipe change
    IDLE = "idle"
    SETUP = "setup"  # changeover
    MAINTENANCE = "maintenance"
    FAULT = "fault"  # the equipment reports a fault state of its own


# A process alarm means nothing while the process is not running steadily.
PROCESS_SUPPRESSION = (Phase.START_UP, Phase.RECIPE_CHANGE, Phase.IDLE, Phase.SETUP, Phase.MAINTENANCE, Phase.FAULT)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ResponseTime(_Strict):
    name: str = Field(pattern=r"^[a-z][a-z_]*$")
    max_s: float = Field(gt=0, description="the operator has at most this long to act, once annunciated")


class Matrix(_Strict):
    """ISA-18.2 priority matrix: severity -> one priority per response-time column."""

    response_times: list[ResponseTime] = Field(min_length=1)
    severities: dict[str, str] = Field(min_length=1, description="severity name -> what it means")
    priorities: dict[str, list[Priority]]

    @model_validator(mode="after")
    def _complete(self) -> Self:
        bounds = [r.max_s for r in self.response_times]
        if bounds != sorted(bounds) or len(set(bounds)) != len(bounds):
            raise ValueError("response_times must be in ascending order of max_s")
        if set(self.priorities) != set(self.severities):
            raise ValueError(f"priorities needs one row per severity: {sorted(self.severities)}")
        for severity, row in self.priorities.items():
            if len(row) != len(self.response_times):
                raise ValueError(
                    f"priorities.{severity} needs {len(self.response_times)} entries, one per response time"
                )
        return self

    def column(self, respond_within_s: float) -> int:
        """The response-time column: the tightest bound that the time to respond fits in (the last beyond)."""
        return next(
            (i for i, r in enumerate(self.response_times) if respond_within_s <= r.max_s), len(self.response_times) - 1
        )

    def priority(self, severity: str, respond_within_s: float) -> Priority:
        return self.priorities[severity][self.column(respond_within_s)]


def _matches(pattern: str, name: str) -> bool:
    """A name against a glob pattern or a comma-separated list of them."""
    return any(fnmatch.fnmatchcase(name, part.strip()) for part in pattern.split(","))


class Rationalization(_Strict):
    """One rationalized alarm (or family of alarms): why it exists and what to do."""

    id: str = Field(pattern=r"^[a-z0-9][a-z0-9_.\-]*$", max_length=80)
    condition: AlarmCondition
    equipment_class: str = Field(default="*", description="class name, glob pattern, or comma-separated globs")
    sensor: str = Field(default="*", description="sensor name, glob pattern, or comma-separated globs")
    critical_only: bool = Field(default=False, description="only the plant model's critical-to-quality sensors")
    severity: str
    respond_within_s: float = Field(gt=0, description="maximum time to respond")
    cause: str = Field(min_length=1, max_length=500)
    consequence: str = Field(min_length=1, max_length=500)
    action: str = Field(min_length=1, max_length=500, description="the operator's corrective action")
    limit_basis: str = Field(min_length=1, max_length=500, description="where the limit comes from")
    rationalized_by: str = Field(min_length=1)
    rationalized_on: date
    suppress_in: list[Phase] = Field(default=list(PROCESS_SUPPRESSION))
    on_delay_s: float | None = Field(default=None, ge=0)
    off_delay_s: float | None = Field(default=None, ge=0)

    def matches(self, condition: str, equipment_class: str, sensor: str | None, critical: bool) -> bool:
        return (
            condition == self.condition
            and _matches(self.equipment_class, equipment_class)
            and _matches(self.sensor, sensor or "")
            and (critical or not self.critical_only)
        )


class Rationalized(_Strict):
    """What an alarm carries from its rationalization (None fields for an unrationalized alarm)."""

    id: str | None = None
    priority: Priority | None = None
    severity: str | None = None
    respond_within_s: float | None = None
    cause: str | None = None
    consequence: str | None = None
    action: str | None = None
    suppress_in: frozenset[str] = frozenset(PROCESS_SUPPRESSION)
    on_delay_s: float | None = None
    off_delay_s: float | None = None


UNRATIONALIZED = Rationalized()


class AlarmDatabase(_Strict):
    version: int = Field(ge=1)
    matrix: Matrix
    alarms: list[Rationalization] = []

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        ids = [a.id for a in self.alarms]
        duplicated = sorted({i for i in ids if ids.count(i) > 1})
        if duplicated:
            raise ValueError(f"alarm ids must be unique: {duplicated}")
        for index, alarm in enumerate(self.alarms):
            if alarm.severity not in self.matrix.severities:
                raise ValueError(
                    f"alarms[{index}] ({alarm.id}): severity {alarm.severity!r} is not one of "
                    f"{sorted(self.matrix.severities)}"
                )
        return self

    def for_plant(self, plant: PlantModel) -> Rationalizer:
        return Rationalizer(self, plant)


class Rationalizer:
    """The database applied to one plant model: which entry rationalizes an alarm (the first that matches;
    the file lists specific entries before general ones), remembered per alarm kind."""

    def __init__(self, database: AlarmDatabase, plant: PlantModel) -> None:
        self.database = database
        self.plant = plant
        self._found: dict[tuple[str, str, str | None], Rationalized] = {}

    def lookup(self, condition: str, equipment_class: str, sensor: str | None) -> Rationalized:
        key = (condition, equipment_class, sensor)
        found = self._found.get(key)
        if found is None:
            found = self._found[key] = self._rationalize(condition, equipment_class, sensor)
        return found

    def _rationalize(self, condition: str, equipment_class: str, sensor: str | None) -> Rationalized:
        spec = self.plant.classes.get(equipment_class)
        critical = bool(spec and sensor in spec.sensors and spec.sensors[sensor].critical)
        matrix = self.database.matrix
        for entry in self.database.alarms:
            if entry.matches(condition, equipment_class, sensor, critical):
                return Rationalized(
                    id=entry.id,
                    priority=matrix.priority(entry.severity, entry.respond_within_s),
                    severity=entry.severity,
                    respond_within_s=entry.respond_within_s,
                    cause=entry.cause,
                    consequence=entry.consequence,
                    action=entry.action,
                    suppress_in=frozenset(entry.suppress_in),
                    on_delay_s=entry.on_delay_s,
                    off_delay_s=entry.off_delay_s,
                )
        return UNRATIONALIZED


# A database file that does not validate; the message names each wrong field and its line.
AlarmDatabaseError = FileProblems


def load_alarm_database(path: Path = DEFAULT_ALARM_DATABASE) -> AlarmDatabase:
    return load_model(path, AlarmDatabase)


def json_schema() -> dict[str, Any]:
    """The file's JSON Schema, generated from the models (schemas/alarm-database.v1.schema.json is this)."""
    schema = AlarmDatabase.model_json_schema()
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": "https://linewatch.dev/schemas/alarm-database.v1.schema.json",
        "title": "AlarmDatabase",
        "description": __doc__.split("\n\n")[0].replace("\n", " ") if __doc__ else "",
        **{k: v for k, v in schema.items() if k not in ("title", "description")},
    }
