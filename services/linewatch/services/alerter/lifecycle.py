"""ISA-18.2 alarm lifecycle for one alarm, as a pure state machine: inputs in, transition events out.

States: normal, unacknowledged, acknowledged, returned-to-normal unacknowledged, shelved, suppressed by
design (equipment idle or in maintenance), out of service. The condition is debounced by an on-delay and an
off-delay; repeated observations of the same condition are deduplicated; an alarm that activates
`chatter_count` times within `chatter_window_s` is flagged chattering and its further activations are not
annunciated until it has been quiet for a window; a latching alarm stays unacknowledged after the condition
clears until an operator acknowledges it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum


class State(StrEnum):
    NORMAL = "normal"
    UNACKNOWLEDGED = "unacknowledged"
    ACKNOWLEDGED = "acknowledged"
    RTN_UNACKNOWLEDGED = "rtn_unacknowledged"
    SHELVED = "shelved"
    SUPPRESSED = "suppressed_by_design"
    OUT_OF_SERVICE = "out_of_service"


class Priority(StrEnum):
    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"
    CRITICAL = "critical"


@dataclass(frozen=True)
class Settings:
    priority: Priority = Priority.MEDIUM
    on_delay_s: float = 0.0
    off_delay_s: float = 0.0
    latching: bool = False
    chatter_count: int = 3
    chatter_window_s: float = 60.0


@dataclass(frozen=True)
class Transition:
    """One lifecycle event: what an alert topic carries and InfluxDB stores."""

    ts: float
    alarm_id: str
    previous: State
    state: State
    cause: str
    priority: Priority
    annunciate: bool  # False while chattering: recorded, not pushed to operators
    user: str | None = None
    comment: str | None = None


@dataclass
class Alarm:
    alarm_id: str
    settings: Settings = field(default_factory=Settings)
    state: State = State.NORMAL
    active: bool = False  # the debounced process condition
    acknowledged: bool = True
    chattering: bool = False
    shelved_until: float | None = None
    shelved_one_shot: bool = False
    suppressed: bool = False
    out_of_service: bool = False
    raw: bool = False  # the undebounced condition, and since when
    raw_since: float = 0.0
    activations: list[float] = field(default_factory=list)  # within the chatter window

    # -- inputs -------------------------------------------------------------------------------------------
    def observe(self, ts: float, condition: bool, equipment_running: bool = True) -> list[Transition]:
        """A new reading of the condition (and of the equipment state, for suppression by design)."""
        events: list[Transition] = []
        if condition != self.raw:
            self.raw, self.raw_since = condition, ts
        delay = self.settings.on_delay_s if condition else self.settings.off_delay_s
        if condition != self.active and ts - self.raw_since >= delay:
            events += self._process_change(ts, condition)
        # The condition first: an equipment restart then annunciates only what is still wrong.
        return events + self._set_suppressed(ts, not equipment_running) + self.tick(ts)

    def acknowledge(self, ts: float, user: str, comment: str = "") -> list[Transition]:
        if self.acknowledged or self.state in (State.SHELVED, State.OUT_OF_SERVICE):
            return []
        self.acknowledged = True
        return self._move(ts, "acknowledged", user, comment)

    def shelve(self, ts: float, user: str, *, duration_s: float | None = None, comment: str = "") -> list[Transition]:
        """Timed shelving with `duration_s`; one-shot (until the condition next clears) without."""
        if self.state == State.OUT_OF_SERVICE:
            return []
        self.shelved_until = ts + duration_s if duration_s is not None else None
        self.shelved_one_shot = duration_s is None
        return self._move(ts, "shelved", user, comment)

    def unshelve(self, ts: float, user: str | None = None, cause: str = "unshelved") -> list[Transition]:
        if not self.is_shelved:
            return []
        self.shelved_until, self.shelved_one_shot = None, False
        return self._move(ts, cause, user)

    def remove_from_service(self, ts: float, user: str, comment: str = "") -> list[Transition]:
        self.out_of_service = True
        return self._move(ts, "removed from service", user, comment)

    def return_to_service(self, ts: float, user: str, comment: str = "") -> list[Transition]:
        if not self.out_of_service:
            return []
        self.out_of_service = False
        return self._move(ts, "returned to service", user, comment)

    def comment_on(self, ts: float, user: str, comment: str) -> list[Transition]:
        """A note in the audit trail: the state stays, and nobody is notified of it."""
        priority = self.settings.priority
        return [Transition(ts, self.alarm_id, self.state, self.state, "comment", priority, False, user, comment)]

    def act(
        self, action: str, ts: float, user: str, comment: str = "", duration_s: float | None = None
    ) -> list[Transition]:
        """An operator action by name (the contract's AlarmActionName); [] when it changes nothing."""
        if action == "acknowledge":
            return self.acknowledge(ts, user, comment)
        if action == "shelve":
            return self.shelve(ts, user, duration_s=duration_s, comment=comment)
        if action == "unshelve":
            return self.unshelve(ts, user)
        if action == "remove_from_service":
            return self.remove_from_service(ts, user, comment)
        if action == "return_to_service":
            return self.return_to_service(ts, user, comment)
        if action == "comment":
            return self.comment_on(ts, user, comment)
        raise ValueError(f"unknown action {action!r}")

    def tick(self, ts: float) -> list[Transition]:
        """Time passing: timed shelving expires; chattering ends after a quiet window."""
        events: list[Transition] = []
        if self.shelved_until is not None and ts >= self.shelved_until:
            events += self.unshelve(ts, cause="shelving expired")
        if self.chattering and (not self.activations or ts - self.activations[-1] > self.settings.chatter_window_s):
            self.chattering = False
            self.activations.clear()
        return events

    # -- state ------------------------------------------------------------------------------------------------
    @property
    def is_shelved(self) -> bool:
        return self.shelved_until is not None or self.shelved_one_shot

    def _process_change(self, ts: float, active: bool) -> list[Transition]:
        self.active = active
        if active:
            self.activations.append(ts)
            self.activations = [t for t in self.activations if ts - t <= self.settings.chatter_window_s]
            if len(self.activations) >= self.settings.chatter_count:
                self.chattering = True
            if self.state not in (State.SHELVED, State.SUPPRESSED, State.OUT_OF_SERVICE):
                self.acknowledged = False
            # A latched alarm coming up again before anyone acknowledged it is still news (another lot exposed).
            return self._move(ts, "condition active", always=self.settings.latching)
        if self.shelved_one_shot:
            return self.unshelve(ts, cause="one-shot shelving ended: condition cleared")
        return self._move(ts, "condition cleared")

    def _set_suppressed(self, ts: float, suppressed: bool) -> list[Transition]:
        if suppressed == self.suppressed:
            return []
        self.suppressed = suppressed
        if not suppressed and self.active:
            self.acknowledged = False  # re-annunciate what is still wrong after the equipment restarts
        return self._move(ts, "equipment not running" if suppressed else "equipment running")

    def _target(self) -> State:
        if self.out_of_service:
            return State.OUT_OF_SERVICE
        if self.is_shelved:
            return State.SHELVED
        if self.suppressed:
            return State.SUPPRESSED
        if self.active:
            return State.ACKNOWLEDGED if self.acknowledged else State.UNACKNOWLEDGED
        if self.acknowledged:
            return State.NORMAL
        # Cleared but not acknowledged: a latching alarm stays in alarm until an operator acknowledges it.
        return State.UNACKNOWLEDGED if self.settings.latching else State.RTN_UNACKNOWLEDGED

    def _move(
        self, ts: float, cause: str, user: str | None = None, comment: str | None = None, always: bool = False
    ) -> list[Transition]:
        previous, self.state = self.state, self._target()
        if previous == self.state and user is None and not always:
            return []  # deduplicated: nothing changed
        annunciate = not self.chattering and self.state in (State.UNACKNOWLEDGED, State.RTN_UNACKNOWLEDGED)
        return [
            Transition(
                ts,
                self.alarm_id,
                previous,
                self.state,
                cause,
                self.settings.priority,
                annunciate,
                user,
                comment or None,
            )
        ]


def limit_condition(value: float, limit: float, high: bool, deadband: float, active: bool) -> bool:
    """A limit with hysteresis: raised beyond the limit, cleared only once back inside by the deadband."""
    if high:
        return value > limit - (deadband if active else 0.0)
    return value < limit + (deadband if active else 0.0)
