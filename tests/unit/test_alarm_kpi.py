"""Alarm KPIs (ISA-18.2 / EEMUA 191) on constructed event histories."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from linewatch.services.alerter.kpi import AlarmRow, compute

START = datetime(2026, 11, 1, tzinfo=UTC)


def row(minute: float, alarm: str, state: str = "unacknowledged", previous: str = "normal", **kw: object) -> AlarmRow:
    fields: dict[str, object] = {
        "ts": START + timedelta(minutes=minute),
        "area": "electrolyte",
        "alarm_id": alarm,
        "kind": "transition",
        "state": state,
        "previous": previous,
        "cause": "condition active",
        "priority": "high",
        "annunciate": True,
    } | kw
    return AlarmRow(**fields)  # type: ignore[arg-type]


def test_rate_floods_chattering_stale_top10_and_priorities() -> None:
    rows = [row(5 + i * 0.5, f"U{i}/anomaly") for i in range(12)]  # 12 in one 10-minute window: a flood
    rows += [row(20, f"U{i}/anomaly", "normal", "unacknowledged") for i in range(12)]
    rows += [row(30, "U1/x/spc", priority="medium", area="cell-assembly")]
    rows += [row(40, "U1/x/spc", "normal", "unacknowledged", priority="medium", area="cell-assembly")]
    # Chattering: 3 activations within a minute, only the first annunciated.
    rows += [row(100, "U9/p/spec_high"), row(100.2, "U9/p/spec_high", "rtn_unacknowledged", "unacknowledged")]
    rows += [row(100.4, "U9/p/spec_high", previous="rtn_unacknowledged", annunciate=False)]
    rows += [row(100.6, "U9/p/spec_high", "rtn_unacknowledged", "unacknowledged")]
    rows += [row(100.8, "U9/p/spec_high", previous="rtn_unacknowledged", annunciate=False)]
    rows += [row(110, "U9/p/spec_high", "normal", "unacknowledged")]
    # Stale: raised and never back to normal for more than 24 h.
    rows += [row(60, "U5/h2s/exposure", priority="critical")]
    # Cleared and acknowledged: not stale.
    rows += [row(61, "U66/anomaly"), row(70, "U66/anomaly", "normal", "unacknowledged")]
    report = compute(rows, START, START + timedelta(hours=26), ["electrolyte", "cell-assembly"])

    electrolyte, cells = report.areas["electrolyte"], report.areas["cell-assembly"]
    assert electrolyte.alarms == 12 + 1 + 1 + 1 and cells.alarms == 1
    assert electrolyte.peak_10_min == 12 and electrolyte.floods == 1 and cells.floods == 0
    assert abs(electrolyte.per_10_min - 15 / 156) < 1e-9
    assert report.chattering == ["U9/p/spec_high"]
    assert report.stale == ["U5/h2s/exposure"]
    assert report.priorities == {"high": 14, "medium": 1, "critical": 1}
    assert abs(report.top10_share_pct - 100 * 10 / 16) < 1e-9
    text = "\n".join(report.lines())
    assert "floods" in text and "U9/p/spec_high" in text


def test_quiet_period_is_all_zero_with_every_area_listed() -> None:
    report = compute([], START, START + timedelta(hours=8), ["electrolyte", "cell-assembly"])
    assert report.total == 0 and set(report.areas) == {"electrolyte", "cell-assembly"}
    assert all(a.per_10_min == 0 and a.floods == 0 for a in report.areas.values())
