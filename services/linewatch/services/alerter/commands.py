"""`linewatch alarms ...` and `linewatch lots ...`: operator actions through the alerter's API, alarm KPIs
and lot genealogy from InfluxDB."""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import urllib.error
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import msgspec

from linewatch.core.commandline import Commands, UsageError
from linewatch.core.console import out
from linewatch.core.contract import alarm_event_decoder
from linewatch.core.plant import PlantModel, load_plant
from linewatch.core.settings import InfluxSettings
from linewatch.core.timeutil import TIME_FORMATS, utc_time
from linewatch.services.alerter import kpi, report
from linewatch.services.alerter.rationalization import AlarmDatabaseError, load_alarm_database
from linewatch.services.alerter.rules import load_rules
from linewatch.services.alerter.settings import AlerterSettings
from linewatch.storage.genealogy import affected_cells
from linewatch.storage.influx import InfluxWriter, influxql, quote
from linewatch.storage.lineprotocol import line, to_ns
from linewatch.storage.measurements import ALARM_EVENT, ALARM_KPI, LOT_GENEALOGY

ALARM_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-/]{0,159}$")
ACTION_COMMANDS = {
    "ack": "acknowledge",
    "shelve": "shelve",
    "unshelve": "unshelve",
    "disable": "remove_from_service",
    "enable": "return_to_service",
    "comment": "comment",
}


def register(commands: Commands) -> None:
    commands.group("alarms", "alarm list, operator actions, KPIs")
    listing = commands.add("alarms list", "alarms not in the normal state", _list)
    listing.add_argument("--all", action="store_true", help="every alarm the alerter remembers")
    listing.add_argument("--area", help="area name (any case)")
    listing.add_argument("--priority", choices=["low", "medium", "high", "critical"], type=str.lower)
    listing.add_argument("--json", action="store_true")
    for name, action in ACTION_COMMANDS.items():
        command = commands.add(f"alarms {name}", action.replace("_", " "), _act)
        command.set_defaults(action=action)
        command.add_argument("alarm_id")
        command.add_argument("-m", "--comment", default="", help="why (required to shelve, disable or comment)")
        if name == "shelve":
            command.add_argument("--for-s", type=float, help="timed shelving; without it, until the condition clears")
    report = commands.add("alarms kpi", "ISA-18.2 / EEMUA 191 alarm KPIs, printed and written to InfluxDB", _kpi)
    report.add_argument("--start", type=utc_time, help=f"default: --hours before --end; {TIME_FORMATS}")
    report.add_argument("--end", type=utc_time, help=f"default: now; {TIME_FORMATS}")
    report.add_argument("--hours", type=float, default=24.0)
    report.add_argument("--events", type=Path, help="alarm events as JSON lines instead of InfluxDB")
    report.add_argument("--no-write", action="store_true", help="print only")
    bad = commands.add(
        "alarms report",
        "bad actors: unrationalized, frequent, standing, chattering, fleeting; suggested delays",
        _report,
    )
    bad.add_argument("--start", type=utc_time, help=f"default: --hours before --end; {TIME_FORMATS}")
    bad.add_argument("--end", type=utc_time, help=f"default: now; {TIME_FORMATS}")
    bad.add_argument("--hours", type=float, default=24.0 * 7)
    bad.add_argument("--events", type=Path, help="alarm events as JSON lines instead of InfluxDB")
    check = commands.add("alarms validate", "check a master alarm database file against its schema", _validate)
    check.add_argument("file", type=Path, nargs="?", help="default: the alerter's (LINEWATCH_ALARM_DATABASE)")
    commands.group("lots", "lot genealogy")
    affected = commands.add(
        "lots affected", "the cells built from a lot, or from the lots an alarm affects", _lots_affected
    )
    which = affected.add_mutually_exclusive_group(required=True)
    which.add_argument("--lot")
    which.add_argument("--alarm", help="alarm id (equipment/sensor/condition) or alarm event id")
    affected.add_argument("--json", action="store_true")


def _call(settings: AlerterSettings, method: str, path: str, body: dict[str, Any] | None = None) -> tuple[int, Any]:
    if settings.operator_token is None:
        raise UsageError("LINEWATCH_OPERATOR_TOKEN is not set: the alarm API needs your token")
    request = urllib.request.Request(  # noqa: S310 (the configured alerter URL)
        settings.api_base() + path,
        data=None if body is None else json.dumps(body).encode(),
        method=method,
        headers={
            "Authorization": f"Bearer {settings.operator_token.get_secret_value()}",
            "Content-Type": "application/json",
        },
    )
    try:
        with urllib.request.urlopen(request, timeout=5, context=settings.api_client_tls()) as response:  # noqa: S310
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


def _list(args: argparse.Namespace) -> int:
    settings = AlerterSettings()
    query = "&".join(
        f"{k}={v}"
        for k, v in (("all", "true" if args.all else ""), ("area", args.area), ("priority", args.priority))
        if v
    )
    status, rows = _call(settings, "GET", "/alarms" + (f"?{query}" if query else ""))
    if status != 200:
        out(f"error {status}: {rows.get('error')}")
        return 1
    if args.json:
        out(json.dumps(rows, indent=2))
        return 0
    out(f"{'priority':<9} {'state':<21} {'alarm':<40} message")
    for row in rows:
        out(f"{row['priority']:<9} {row['state']:<21} {row['alarm_id']:<40} {row['message']}")
        if row.get("corrective_action"):
            out(f"{'':<32}action: {row['corrective_action']}")
    out(f"{len(rows)} alarm(s)")
    return 0


def _act(args: argparse.Namespace) -> int:
    settings = AlerterSettings()
    body: dict[str, Any] = {"alarm_id": args.alarm_id, "action": args.action, "comment": args.comment}
    if getattr(args, "for_s", None):
        body["duration_s"] = args.for_s
    status, answer = _call(settings, "POST", "/actions", body)
    if status != 202:
        out(f"error {status}: {answer.get('error')}")
        return 1
    out(f"{body['action']} {args.alarm_id}: accepted as {answer['user']} (action {answer['action_id']})")
    return 0


def _rows_from_influx(influx: InfluxSettings, start: datetime, end: datetime) -> list[kpi.AlarmRow]:
    query = f"SELECT * FROM {ALARM_EVENT} WHERE time >= {quote(start.isoformat())} AND time < {quote(end.isoformat())}"
    rows = []
    for series in influxql(influx, query, epoch="ns"):
        columns = series["columns"]
        for values in series["values"]:
            record = dict(zip(columns, values, strict=True))
            record["ts"] = datetime.fromtimestamp(record["time"] / 1e9, UTC)
            rows.append(msgspec.convert(record, kpi.AlarmRow, strict=False))
    return rows


def _kpi(args: argparse.Namespace) -> int:
    settings = AlerterSettings()
    start, end = _period(args)
    kpis = kpi_report(settings.influx, load_plant(settings.plant_file), start, end, args.events, not args.no_write)
    for text in kpis.lines():
        out(text)
    return 0


def _period(args: argparse.Namespace) -> tuple[datetime, datetime]:
    end = (args.end or datetime.now(UTC)).astimezone(UTC)
    start = (args.start or end - timedelta(hours=args.hours)).astimezone(UTC)
    if start >= end:
        raise UsageError(f"--start {start.isoformat()} is not before --end {end.isoformat()}")
    return start, end


def alarm_rows(influx: InfluxSettings, start: datetime, end: datetime, events: Path | None) -> list[kpi.AlarmRow]:
    """The alarm events of [start, end) from InfluxDB or from a JSON-lines file."""
    if events is None:
        return _rows_from_influx(influx, start, end)
    with events.open("rb") as handle:
        rows = kpi.rows_of(alarm_event_decoder.decode(row) for row in handle if row.strip())
    return [row for row in rows if start <= row.ts < end]


def _report(args: argparse.Namespace) -> int:
    settings = AlerterSettings()
    start, end = _period(args)
    for text in report.build(alarm_rows(settings.influx, start, end, args.events), start, end).lines():
        out(text)
    return 0


def _validate(args: argparse.Namespace) -> int:
    from linewatch.services.alerter.engine import AlarmEngine

    settings = AlerterSettings()
    path = args.file or settings.alarm_database
    try:
        database = load_alarm_database(path)
    except AlarmDatabaseError as exc:
        out(str(exc))
        return 1
    plant = load_plant(settings.plant_file)
    engine = AlarmEngine(plant, load_rules(settings.rules_file), database)
    # Every alarm the plant can raise, as each registered condition says, against the database.
    unmatched = [
        f"{name} {equipment_class}/{sensor or '-'}"
        for name, condition in engine.conditions.items()
        for equipment_class in plant.classes
        for sensor in condition.watched(equipment_class)
        if engine.rationalizer.lookup(name, equipment_class, sensor).id is None
    ]
    out(
        f"{path}: valid, {len(database.alarms)} rationalized alarm entries, matrix {len(database.matrix.severities)}"
        f" severities x {len(database.matrix.response_times)} response times"
    )
    out(f"alarms of the plant model no entry rationalizes: {len(unmatched)}")
    for text in unmatched:
        out(f"  {text}")
    return 0


def kpi_report(
    influx: InfluxSettings,
    plant: PlantModel,
    start: datetime,
    end: datetime,
    events: Path | None = None,
    write: bool = True,
) -> kpi.KpiReport:
    """KPIs of the alarm events from InfluxDB (written back as measurement alarm_kpi) or from a JSON-lines file."""
    rows = alarm_rows(influx, start, end, events)
    report = kpi.compute(rows, start, end, [area.name for area in plant.areas])
    if write and events is None:
        asyncio.run(_write_kpis(influx, report))
    return report


async def _write_kpis(influx: InfluxSettings, report: kpi.KpiReport) -> None:
    ts = to_ns(report.end)
    area_fields: dict[str, dict[str, float | int | str | bool]] = {
        area: {"alarms": k.alarms, "per_10_min": k.per_10_min, "peak_10_min": k.peak_10_min, "floods": k.floods}
        for area, k in report.areas.items()
    }
    lines = [line(ALARM_KPI, {"area": area}, fields, ts) for area, fields in area_fields.items()]
    plant_fields: dict[str, float | int | str | bool] = {f"priority_{p}": n for p, n in report.priorities.items()}
    plant_fields |= {
        "alarms": report.total,
        "chattering": len(report.chattering),
        "stale": len(report.stale),
        "top10_share_pct": report.top10_share_pct,
    }
    lines.append(line(ALARM_KPI, {"area": "plant"}, plant_fields, ts))
    await write_lines(influx, lines)


async def write_lines(influx: InfluxSettings, lines: list[str]) -> None:
    writer = InfluxWriter(influx)
    try:
        await writer.write("\n".join(lines).encode())
    finally:
        await writer.close()


def _lots_affected(args: argparse.Namespace) -> int:
    settings = AlerterSettings()
    if args.lot:
        lots = [args.lot]
    else:
        alarm = args.alarm.partition("@")[0]  # an event id starts with its alarm id
        if not ALARM_ID.match(alarm):
            raise UsageError(f"not an alarm id: {args.alarm!r} (EQUIPMENT/SENSOR/CONDITION, `linewatch alarms list`)")
        found = influxql(settings.influx, f"SELECT lots FROM {ALARM_EVENT} WHERE alarm_id = {quote(alarm)}")
        lots = sorted({lot for s in found for (_, text) in s["values"] for lot in (text or "").split(",") if lot})
    affected = affected_cells(settings.influx, lots)
    if args.lot and args.lot not in affected.known:
        raise UsageError(
            f"no lot {args.lot!r} in the lot genealogy (InfluxDB {settings.influx.url}, measurement {LOT_GENEALOGY})"
        )
    if args.json:
        out(json.dumps({"lots": lots, "cells": affected.cells}, indent=2))
        return 0
    if not lots:
        out("no lots recorded for this alarm")
    for lot, cells in affected.cells.items():
        out(f"lot {lot}: {len(cells)} cell(s) to quarantine")
        for cell in cells:
            out(f"  {cell}")
    return 0
