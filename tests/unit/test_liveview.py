"""What `linewatch up` shows of alarms: active ones per area and priority, from each alarm's latest event, and
messages cut at a word, never mid-word."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from linewatch.core.contract import AlarmEvent, AlarmPriority, AlarmState
from linewatch.tools.liveview import active_by_area, shorten

pytestmark = pytest.mark.operators
T0 = datetime(2026, 12, 1, 8, 0, tzinfo=UTC)


def event(alarm: str, area: str, priority: AlarmPriority, state: AlarmState, minute: int) -> AlarmEvent:
    return AlarmEvent(
        site="plant-01", area=area, line="l1", equipment_id=alarm.split("/")[0], equipment_class="c",
        schema_version=1, event_id=f"{alarm}/{minute}", alarm_id=alarm, ts=T0 + timedelta(minutes=minute),
        kind="transition", condition="spec_limit", previous="normal", state=state, cause="", priority=priority,
        annunciate=True, message="",
    )  # fmt: skip


def test_active_alarms_per_area_and_priority_from_the_latest_event() -> None:
    latest = [
        event("A1/x", "electrolyte", "high", "unacknowledged", 1),
        event("A2/x", "electrolyte", "low", "acknowledged", 2),
        event("A3/x", "electrolyte", "high", "normal", 3),  # cleared: not active
        event("B1/x", "cell-assembly", "critical", "shelved", 4),  # shelved: not shown as active
        event("B2/x", "cell-assembly", "medium", "unacknowledged", 5),
    ]
    areas = active_by_area(latest)
    assert areas["electrolyte"] == {"high": 1, "low": 1, "unack": 1}
    assert areas["cell-assembly"] == {"medium": 1, "unack": 1}


def test_messages_are_cut_at_a_word() -> None:
    text = "anomaly score 1.45 (threshold 1.0); top: zone2_temp, zone3_temp, zone1_temp"
    assert shorten(text, 200) == text
    cut = shorten(text, 60)
    assert cut.endswith(" …") and text.startswith(cut.removesuffix(" …")) and len(cut) <= 62
    kept = cut.removesuffix(" …")
    assert not text[len(kept)].isalnum() and text[len(kept)] != "_"  # ends on a whole word, not a piece of one
