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

from alerter import kpi
from alerter.settings import AlerterSettings
from linewatch.console import out
from linewatch.contract import alarm_event_decoder
from linewatch.influx import InfluxWriter, influxql, quote
from linewatch.lineprotocol import line, to_ns
from linewatch.plant import load_plant
from linewatch.timeutil import utc_time

ALARM_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-/]{0,159}$")
ACTION_COMMANDS = {
    "ack": "acknowledge",
    "shelve": "shelve",
    "unshelve": "unshelve",
    "disable": "remove_from_service",
    "enable": "return_to_service",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="linewatch", description=__doc__)
    sub = parser.add_subparsers(dest="command")
    sub.add_parser("run", help="run the alerter service (the default)")
    alarms = sub.add_parser("alarms", help="alarm list, operator actions, KPIs").add_subparsers(
        dest="alarms", required=True
    )
    listing = alarms.add_parser("list", help="alarms not in the normal state")
    listing.add_argument("--all", action="store_true", help="every alarm the alerter remembers")
    listing.add_argument("--area")
    listing.add_argument("--priority", choices=["low", "medium", "high", "critical"])
    listing.add_argument("--json", action="store_true")
    for name, action in ACTION_COMMANDS.items():
        command = alarms.add_parser(name, help=action.replace("_", " "))
        command.add_argument("alarm_id")
        command.add_argument("-m", "--comment", default="", help="why (required to shelve or disable)")
        if name == "shelve":
            command.add_argument("--for-s", type=float, help="timed shelving; without it, until the condition clears")
    report = alarms.add_parser("kpi", help="ISA-18.2 / EEMUA 191 alarm KPIs, printed and written to InfluxDB")
    report.add_argument("--start", type=utc_time, help="ISO time (default: --hours before --end)")
    report.add_argument("--end", type=utc_time, help="ISO time (default: now)")
    report.add_argument("--hours", type=float, default=24.0)
    report.add_argument("--events", type=Path, help="alarm events as JSON lines instead of InfluxDB")
    report.add_argument("--no-write", action="store_true", help="print only")
    lots = sub.add_parser("lots", help="lot genealogy").add_subparsers(dest="lots", required=True)
    affected = lots.add_parser("affected", help="the cells built from a lot, or from the lots an alarm affects")
    which = affected.add_mutually_exclusive_group(required=True)
    which.add_argument("--lot")
    which.add_argument("--alarm", help="alarm id (equipment/sensor/condition) or alarm event id")
    affected.add_argument("--json", action="store_true")
    return parser


def run_command(args: argparse.Namespace, settings: AlerterSettings) -> int:
    if args.command == "lots":
        return _lots_affected(args, settings)
    if args.alarms == "list":
        return _list(args, settings)
    if args.alarms == "kpi":
        return _kpi(args, settings)
    return _act(args, settings)


def _call(settings: AlerterSettings, method: str, path: str, body: dict[str, Any] | None = None) -> tuple[int, Any]:
    if settings.operator_token is None:
        raise SystemExit("LINEWATCH_OPERATOR_TOKEN is not set: the alarm API needs your token")
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
        with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


def _list(args: argparse.Namespace, settings: AlerterSettings) -> int:
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
    out(f"{len(rows)} alarm(s)")
    return 0


def _act(args: argparse.Namespace, settings: AlerterSettings) -> int:
    body: dict[str, Any] = {"alarm_id": args.alarm_id, "action": ACTION_COMMANDS[args.alarms], "comment": args.comment}
    if getattr(args, "for_s", None):
        body["duration_s"] = args.for_s
    status, answer = _call(settings, "POST", "/actions", body)
    if status != 202:
        out(f"error {status}: {answer.get('error')}")
        return 1
    out(f"{body['action']} {args.alarm_id}: accepted as {answer['user']} (action {answer['action_id']})")
    return 0


def _rows_from_influx(settings: AlerterSettings, start: datetime, end: datetime) -> list[kpi.AlarmRow]:
    query = f"SELECT * FROM alarm_event WHERE time >= {quote(start.isoformat())} AND time < {quote(end.isoformat())}"
    rows = []
    for series in influxql(settings.influx, query, epoch="ns"):
        columns = series["columns"]
        for values in series["values"]:
            record = dict(zip(columns, values, strict=True))
            record["ts"] = datetime.fromtimestamp(record["time"] / 1e9, UTC)
            rows.append(msgspec.convert(record, kpi.AlarmRow, strict=False))
    return rows


def _kpi(args: argparse.Namespace, settings: AlerterSettings) -> int:
    end = (args.end or datetime.now(UTC)).astimezone(UTC)
    start = (args.start or end - timedelta(hours=args.hours)).astimezone(UTC)
    if args.events:
        with args.events.open("rb") as handle:
            events = [alarm_event_decoder.decode(row) for row in handle if row.strip()]
        rows = [msgspec.convert(msgspec.structs.asdict(e), kpi.AlarmRow) for e in events if start <= e.ts < end]
    else:
        rows = _rows_from_influx(settings, start, end)
    areas = [area.name for area in load_plant(settings.plant_file).areas]
    report = kpi.compute(rows, start, end, areas)
    for text in report.lines():
        out(text)
    if not args.no_write and not args.events:
        asyncio.run(_write_kpis(settings, report))
    return 0


async def _write_kpis(settings: AlerterSettings, report: kpi.KpiReport) -> None:
    ts = to_ns(report.end)
    area_fields: dict[str, dict[str, float | int | str | bool]] = {
        area: {"alarms": k.alarms, "per_10_min": k.per_10_min, "peak_10_min": k.peak_10_min, "floods": k.floods}
        for area, k in report.areas.items()
    }
    lines = [line("alarm_kpi", {"area": area}, fields, ts) for area, fields in area_fields.items()]
    plant_fields: dict[str, float | int | str | bool] = {f"priority_{p}": n for p, n in report.priorities.items()}
    plant_fields |= {
        "alarms": report.total,
        "chattering": len(report.chattering),
        "stale": len(report.stale),
        "top10_share_pct": report.top10_share_pct,
    }
    lines.append(line("alarm_kpi", {"area": "plant"}, plant_fields, ts))
    writer = InfluxWriter(settings.influx)
    try:
        await writer.write("\n".join(lines).encode())
    finally:
        await writer.close()


def _lots_affected(args: argparse.Namespace, settings: AlerterSettings) -> int:
    if args.lot:
        lots = [args.lot]
    else:
        alarm = args.alarm.partition("@")[0]  # an event id starts with its alarm id
        if not ALARM_ID.match(alarm):
            raise SystemExit(f"not an alarm id: {args.alarm!r}")
        found = influxql(settings.influx, f"SELECT lots FROM alarm_event WHERE alarm_id = {quote(alarm)}")
        lots = sorted({lot for s in found for (_, text) in s["values"] for lot in (text or "").split(",") if lot})
    produced = influxql(
        settings.influx, "SELECT input_lots, cells, lot_id FROM lot_genealogy WHERE kind = 'cells_produced'"
    )
    cells: dict[str, list[str]] = {lot: [] for lot in lots}
    for series in produced:
        for _, inputs, built, batch in series["values"]:
            for lot in lots:
                # A cell batch is affected when it consumed the lot, or is the lot itself.
                if lot in (inputs or "").split(",") or lot == batch:
                    cells[lot].extend(c for c in (built or "").split(",") if c)
    if args.json:
        out(json.dumps({"lots": lots, "cells": {lot: sorted(set(c)) for lot, c in cells.items()}}, indent=2))
        return 0
    if not lots:
        out("no lots recorded for this alarm")
    for lot, built in cells.items():
        unique = sorted(set(built))
        out(f"lot {lot}: {len(unique)} cell(s) to quarantine")
        for cell in unique:
            out(f"  {cell}")
    return 0
