"""The alerter's rules (deploy/alerter/rules.yaml), typed: lifecycle settings per condition kind, SPC run
rules, lot exposure limits, escalation and notification routes."""

from __future__ import annotations

from datetime import time
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field

from linewatch.core.contract import AlarmCondition
from linewatch.core.settings import REPO_ROOT
from linewatch.services.alerter.lifecycle import Priority, Settings

DEFAULT_RULES_FILE = REPO_ROOT / "deploy" / "alerter" / "rules.yaml"
PRIORITY_RANK = {p: i for i, p in enumerate(Priority)}
SpcRule = Literal["we1", "we2", "we3", "we4", "nelson3"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ConditionRule(_Strict):
    priority: Priority = Priority.MEDIUM
    on_delay_s: float = Field(default=0.0, ge=0)
    off_delay_s: float = Field(default=0.0, ge=0)
    latching: bool = False
    chatter_count: int = Field(default=3, ge=2)
    chatter_window_s: float = Field(default=60.0, gt=0)

    def lifecycle(self) -> Settings:
        return Settings(
            self.priority, self.on_delay_s, self.off_delay_s, self.latching, self.chatter_count, self.chatter_window_s
        )


class SpcRules(_Strict):
    subgroup_s: float = Field(default=300.0, gt=0)
    baseline_subgroups: int = Field(default=25, ge=5)
    rules: list[SpcRule] = ["we1", "we2"]


class ExposureLimit(_Strict):
    limit: float = Field(gt=0)
    unit: str


class Escalation(_Strict):
    after_s: float = Field(default=900.0, gt=0)
    priorities: list[Priority] = [Priority.MEDIUM, Priority.HIGH, Priority.CRITICAL]


class Route(_Strict):
    name: str
    channel: Literal["webhook", "email"]
    priorities: list[Priority]
    areas: list[str] = []  # empty: every area
    to: list[str] = []  # email recipients

    def matches(self, priority: str, area: str) -> bool:
        return priority in self.priorities and (not self.areas or area in self.areas)


class Throttle(_Strict):
    max_per_window: int = Field(default=10, ge=1)
    window_s: float = Field(default=600.0, gt=0)


class SilentPeriod(_Strict):
    start: time
    end: time
    min_priority: Priority = Priority.CRITICAL

    def mutes(self, at: time, priority: Priority) -> bool:
        inside = self.start <= at < self.end if self.start <= self.end else (at >= self.start or at < self.end)
        return inside and PRIORITY_RANK[priority] < PRIORITY_RANK[self.min_priority]


class Notifications(_Strict):
    routes: list[Route] = []
    throttle: Throttle = Throttle()
    silent_periods: list[SilentPeriod] = []


class Rules(_Strict):
    conditions: dict[AlarmCondition, ConditionRule]
    spec_deadband_fraction: float = Field(default=0.05, ge=0)
    spc: SpcRules = SpcRules()
    exposure: dict[str, dict[str, ExposureLimit]] = {}  # equipment class -> sensor -> limit
    escalation: Escalation = Escalation()
    notifications: Notifications = Notifications()

    def settings(self, condition: AlarmCondition) -> Settings:
        rule = self.conditions.get(condition)
        return (rule or ConditionRule()).lifecycle()


def write_rules(rules: Rules, path: Path) -> Path:
    """A rules file `load_rules` reads back (JSON, which is YAML): for runs that change a default."""
    path.write_text(rules.model_dump_json(), encoding="utf-8")
    return path


def load_rules(path: Path = DEFAULT_RULES_FILE) -> Rules:
    with path.open(encoding="utf-8") as handle:
        return Rules.model_validate(yaml.safe_load(handle))
