"""What an alarm condition is: a class that looks at each frame of a unit (and, for anomalies, its scores) and
observes its alarms' conditions. Each condition is one module of this package plus one line in its registry."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np

from linewatch.core.contract import AlarmCondition, TelemetryFrame
from linewatch.core.plant import PlantModel
from linewatch.services.alerter.rationalization import Rationalizer
from linewatch.services.alerter.rules import Rules
from linewatch.services.alerter.state import AlarmRecord, Events, UnitState

NewRecord = Callable[[str, AlarmCondition, str | None], AlarmRecord]


@dataclass
class FrameContext:
    """One frame of one unit as conditions see it: sample times, which samples are judged (running and
    settled), each sensor's values as a column, and where events and new alarm records go."""

    unit: UnitState
    frame: TelemetryFrame
    ts: np.ndarray
    judged: np.ndarray
    phases: np.ndarray  # each sample's Phase value
    columns: dict[str, np.ndarray]
    events: Events
    new_record: NewRecord
    rationalizer: Rationalizer
    _judged_by_suppression: dict[frozenset[str], np.ndarray] = field(default_factory=dict)

    def judged_for(self, condition: AlarmCondition, sensor: str | None) -> np.ndarray:
        """Where this alarm is judged: the samples in no phase its rationalization suppresses it in."""
        suppress = self.rationalizer.lookup(condition, self.frame.equipment_class, sensor).suppress_in
        judged = self._judged_by_suppression.get(suppress)
        if judged is None:
            # A set lookup a sample: np.isin on a frame's few strings cost ~28 us a call, the most of any step.
            phases = self.phases.tolist()
            judged = np.fromiter((phase not in suppress for phase in phases), dtype=bool, count=len(phases))
            self._judged_by_suppression[suppress] = judged
        return judged


class Condition:
    name: ClassVar[AlarmCondition]

    def __init__(self, plant: PlantModel, rules: Rules) -> None:
        self.plant = plant
        self.rules = rules

    def watched(self, equipment_class: str) -> list[str | None]:
        """The sensors of a class this condition raises alarms on (None: the unit as a whole)."""
        return []

    def on_frame(self, context: FrameContext) -> set[str]:
        """Observe this condition's alarms over the frame; returns the ids of those it had evidence for."""
        return set()

    def without_evidence(self, record: AlarmRecord, judged_now: bool) -> bool | None:
        """The condition to observe for one of its alarms that the frame held no evidence for (only the
        equipment state moved); None leaves the alarm alone. By default the condition holds."""
        return record.alarm.raw
