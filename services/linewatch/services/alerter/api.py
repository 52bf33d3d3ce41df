"""Operator HTTP API: list alarms, acknowledge, shelve, unshelve, take out of and return to service.

Bearer tokens name the user and their role (viewer, operator, supervisor, engineer), so every action is audited
with who did it and a role that may not do it gets a 403 (audited too); the action goes to the actions topic
keyed by equipment id, and the `evaluate` agent applies it and publishes the audited events.
"""

from __future__ import annotations

import asyncio
import copy
import hmac
import json
import logging
import re
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, get_args

import msgspec
from aiohttp import web

from linewatch.core.contract import (
    ALARM_SCHEMA_VERSION,
    NAME_PATTERN,
    AlarmAction,
    AlarmActionName,
    AlarmEvent,
    Text,
    encoder,
)
from linewatch.core.settings import InfluxSettings
from linewatch.services.alerter.agents import Alerter
from linewatch.services.alerter.lifecycle import Alarm, State, Transition
from linewatch.services.alerter.rules import PRIORITY_RANK
from linewatch.services.alerter.settings import ROLE_NEEDED, ApiUser
from linewatch.services.alerter.state import AlarmRecord, state_decoder
from linewatch.storage.genealogy import affected_cells

log = logging.getLogger(__name__)

ACTIONS: tuple[AlarmActionName, ...] = get_args(AlarmActionName)
# Timed shelving is bounded (ISA-18.2: shelving is temporary); a longer removal is "remove from service".
MAX_SHELVE_S = 7 * 86_400.0
PAGE_LIMIT = 1000  # alarms per GET /alarms page at most (and by default)
CONSOLE = Path(__file__).parent / "console"  # the alarm console's page, script and style: shipped, no CDN
NEEDS_COMMENT = {"shelve", "remove_from_service", "comment"}  # ISA-18.2: say why an alarm is taken away

_ALARM_PROPERTIES = {
    name: {"type": kind}
    for name, kind in {
        "alarm_id": "string",
        "equipment_id": "string",
        "area": "string",
        "line": "string",
        "condition": "string",
        "sensor": "string",
        "state": "string",
        "priority": "string",
        "active": "boolean",
        "chattering": "boolean",
        "message": "string",
        "rationalization": "string",
        "probable_cause": "string",
        "consequence": "string",
        "corrective_action": "string",
        "respond_within_s": "number",
        "value": "number",
        "limit": "number",
    }.items()
} | {"lots": {"type": "array", "items": {"type": "string"}}, "shelved_until": {"type": "string", "format": "date-time"}}

OPENAPI: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {"title": "linewatch alarms", "version": "1.0.0", "description": __doc__},
    "components": {
        "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        "schemas": {
            "Alarm": {"type": "object", "properties": _ALARM_PROPERTIES},
            "ActionRequest": {
                "type": "object",
                "required": ["alarm_id", "action"],
                "additionalProperties": False,
                "properties": {
                    "alarm_id": {"type": "string", "minLength": 1, "maxLength": 160},
                    "action": {"enum": list(ACTIONS)},
                    "comment": {"type": "string", "maxLength": 2000},
                    "duration_s": {
                        "type": "number",
                        "exclusiveMinimum": 0,
                        "maximum": MAX_SHELVE_S,
                        "description": "timed shelving",
                    },
                },
            },
            "Accepted": {"type": "object", "properties": {"action_id": {"type": "string"}, "user": {"type": "string"}}},
            "Error": {"type": "object", "properties": {"error": {"type": "string"}}},
        },
    },
    "security": [{"bearer": []}],
    "paths": {
        "/alarms": {
            "get": {
                "summary": "Alarms not in the normal state (all=true: every alarm the alerter remembers)",
                "parameters": [
                    {"name": name, "in": "query", "required": False, "schema": {"type": "string"}}
                    for name in ("area", "priority", "all")
                ]
                + [
                    {
                        "name": "limit",
                        "in": "query",
                        "required": False,
                        "schema": {"type": "integer", "minimum": 1, "maximum": PAGE_LIMIT},
                    },
                    {"name": "offset", "in": "query", "required": False, "schema": {"type": "integer", "minimum": 0}},
                ],
                "responses": {
                    "200": {
                        "description": "alarms, highest priority first; X-Total-Count: how many match",
                        "content": {
                            "application/json": {
                                "schema": {"type": "array", "items": {"$ref": "#/components/schemas/Alarm"}}
                            }
                        },
                    },
                    "401": {"description": "missing or unknown token"},
                    "403": {"description": "the token's role may not read alarms"},
                },
            }
        },
        "/lots/{lot}/cells": {
            "get": {
                "summary": "The cells to quarantine for a lot: those of the cell batches built from it (lot genealogy)",
                "parameters": [{"name": "lot", "in": "path", "required": True, "schema": {"type": "string"}}],
                "responses": {
                    "200": {
                        "description": "the lot and its cells, sorted",
                        "content": {
                            "application/json": {
                                "schema": {
                                    "type": "object",
                                    "properties": {
                                        "lot": {"type": "string"},
                                        "cells": {"type": "array", "items": {"type": "string"}},
                                    },
                                }
                            }
                        },
                    },
                    "400": {"description": "not a lot id"},
                    "401": {"description": "missing or unknown token"},
                    "404": {"description": "the lot genealogy does not name this lot"},
                    "503": {"description": "InfluxDB, which holds the lot genealogy, is not reachable"},
                },
            }
        },
        "/actions": {
            "post": {
                "summary": "Acknowledge, shelve, unshelve, remove from or return to service (audited)",
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ActionRequest"}}},
                },
                "responses": {
                    "202": {
                        "description": "accepted; the audited event follows on the alarm topic",
                        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Accepted"}}},
                    },
                    "400": {"description": "invalid request"},
                    "401": {"description": "missing or unknown token"},
                    "403": {"description": "the token's role may not do this (audited)"},
                    "404": {"description": "no such alarm"},
                    "409": {"description": "the action does not apply in the alarm's state"},
                },
            }
        },
        "/me": {
            "get": {
                "summary": "Who the token is: user, role, and the Grafana URL the console links to",
                "responses": {"200": {"description": "OK"}, "401": {"description": "missing or unknown token"}},
            }
        },
        "/alarms/stream": {
            "get": {
                "summary": "Server-sent events: the alarms not in the normal state, whenever they change",
                "responses": {"200": {"description": "text/event-stream"}, "401": {"description": "no token"}},
            }
        },
        "/console": {
            "get": {
                "summary": "The alarm console (sign in with your token)",
                "security": [],
                "responses": {"200": {"description": "HTML"}},
            }
        },
        "/openapi.json": {
            "get": {"summary": "This document", "security": [], "responses": {"200": {"description": "OK"}}}
        },
    },
}


class ActionRequest(msgspec.Struct, forbid_unknown_fields=True):
    """What the door accepts: the contract's limits (`AlarmAction`) and the shelving bound, refused with a 400
    here rather than accepted and dead-lettered later."""

    alarm_id: Annotated[str, msgspec.Meta(min_length=1, max_length=160)]
    action: AlarmActionName
    comment: Text = ""
    duration_s: Annotated[float, msgspec.Meta(gt=0, le=MAX_SHELVE_S)] | None = None


def _error(status: int, text: str) -> web.Response:
    return web.json_response({"error": text}, status=status)


def _iso(ts: float | None) -> str | None:
    """A stored time as ISO 8601; one no calendar can hold (state written before the door checked) is the latest
    one, so that no stored state can make a read fail."""
    if ts is None:
        return None
    try:
        return datetime.fromtimestamp(ts, UTC).isoformat()
    except (OverflowError, OSError, ValueError):
        return datetime.max.replace(tzinfo=UTC).isoformat()


def _describe(alerter: Alerter, record: AlarmRecord) -> dict[str, Any]:
    alarm = record.alarm
    equipment = alerter.plant.equipment_by_id.get(alarm.alarm_id.split("/")[0])
    until = _iso(alarm.shelved_until)
    why = alerter.rationalizer.lookup(record.condition, equipment.equipment_class if equipment else "", record.sensor)
    return {
        "alarm_id": alarm.alarm_id,
        "equipment_id": equipment.id if equipment else None,
        "area": equipment.area if equipment else None,
        "line": equipment.line if equipment else None,
        "condition": record.condition,
        "sensor": record.sensor,
        "state": alarm.state.value,
        "priority": alarm.settings.priority.value,
        "active": alarm.active,
        "chattering": alarm.chattering,
        "message": record.message,
        "rationalization": why.id,
        "probable_cause": why.cause,
        "consequence": why.consequence,
        "corrective_action": why.action,
        "respond_within_s": why.respond_within_s,
        "value": record.value,
        "limit": record.limit,
        "lots": record.lots,
        "shelved_until": until,
        "raised_at": _iso(record.raised_at),
        "trail": [
            {"at": _iso(step.ts), "state": step.state, "cause": step.cause, "user": step.user, "comment": step.comment}
            for step in record.trail
        ],
    }


def _as_seen(seen: AlarmEvent) -> Alarm:
    """Another worker's alarm as far as its latest event tells, for `_trial` to judge an action by the lifecycle's
    own rules (its owner judges it exactly)."""
    state = State(seen.state)
    alarm = Alarm(
        seen.alarm_id, state=state, acknowledged=state not in (State.UNACKNOWLEDGED, State.RTN_UNACKNOWLEDGED)
    )
    alarm.shelved_one_shot = state == State.SHELVED
    alarm.out_of_service = state == State.OUT_OF_SERVICE
    return alarm


def _trial(alarm: Alarm, request: ActionRequest, ts: float) -> list[Transition]:
    """The action on a copy: whether it would change anything, without touching the real state."""
    return copy.deepcopy(alarm).act(request.action, ts, "check", request.comment, request.duration_s)


@web.middleware
async def _json_refusals(request: web.Request, handler: Any) -> web.StreamResponse:
    """The router's own refusals (no such path, method not allowed) as JSON with the reason, like ours."""
    try:
        response: web.StreamResponse = await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return _error(exc.status, f"{exc.reason}: {request.method} {request.path}")
    return response


def build_api(
    alerter: Alerter, users: dict[str, ApiUser], grafana_url: str | None = None, influx: InfluxSettings | None = None
) -> web.Application:
    def user_of(request: web.Request) -> str | None:
        header = request.headers.get("Authorization", "")
        if not header.startswith("Bearer "):
            return None
        offered = header.removeprefix("Bearer ").encode()
        for user, entry in users.items():
            if hmac.compare_digest(offered, entry.token.get_secret_value().encode()):
                return user
        return None

    def denied(user: str, what: str, alarm_id: str | None = None) -> web.Response | None:
        """403 when the user's role may not do it; every refusal is audited (log and counter)."""
        if users[user].may(what):
            return None
        alerter.stats.counters["actions_denied"] += 1
        role = users[user].role
        log.warning("operator action denied", extra={"user": user, "role": role, "action": what, "alarm_id": alarm_id})
        return _error(403, f"{user} is a {role}: {what} needs the {ROLE_NEEDED.get(what, 'engineer')} role")

    async def openapi(_: web.Request) -> web.Response:
        return web.json_response(OPENAPI)

    def current(everything: bool = False) -> list[dict[str, Any]]:
        """This worker's units from its table (the whole truth), the others' from the view of their events."""
        mine = {
            alarm_id: _describe(alerter, record)
            for _, unit in alerter.units()
            for alarm_id, record in unit.alarms.items()
        }
        rows = [row for row in (alerter.view.rows() | mine).values() if everything or row["state"] != "normal"]
        rows.sort(key=lambda r: (-PRIORITY_RANK.get(r["priority"], 0), r["alarm_id"]))
        return rows

    def signed_in(request: web.Request) -> str | web.Response:
        user = user_of(request)
        if user is None:
            return _error(401, "missing or unknown bearer token")
        return denied(user, "read") or user

    async def me(request: web.Request) -> web.Response:
        user = signed_in(request)
        if isinstance(user, web.Response):
            return user
        return web.json_response({"user": user, "role": users[user].role, "grafana_url": grafana_url})

    async def stream(request: web.Request) -> web.StreamResponse:
        """Server-sent events over a fetch (the token in a header, never in the URL): the alarm list whenever it
        changes, checked four times a second, and a comment every 15 s so that proxies keep the line open."""
        user = signed_in(request)
        if isinstance(user, web.Response):
            return user
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-store"})
        await response.prepare(request)
        sent, quiet = "", 0
        try:
            while True:
                body = json.dumps(current())
                if body != sent:
                    await response.write(f"data: {body}\n\n".encode())
                    sent, quiet = body, 0
                elif quiet >= 60:
                    await response.write(b": still here\n\n")
                    quiet = 0
                await asyncio.sleep(0.25)
                quiet += 1
        except ConnectionResetError:  # the page went away
            return response

    async def console(_: web.Request) -> web.FileResponse:
        return web.FileResponse(CONSOLE / "index.html")

    async def list_alarms(request: web.Request) -> web.Response:
        if isinstance(user := signed_in(request), web.Response):
            return user
        everything = request.query.get("all", "false").lower() == "true"
        try:
            limit = int(request.query.get("limit", PAGE_LIMIT))
            offset = int(request.query.get("offset", 0))
        except ValueError:
            return _error(400, "limit and offset are whole numbers")
        if not 1 <= limit <= PAGE_LIMIT or offset < 0:
            return _error(400, f"limit is 1 to {PAGE_LIMIT} and offset 0 or more")
        rows = current(everything)
        for name in ("area", "priority"):
            if name in request.query:
                wanted = request.query[name].casefold()
                rows = [r for r in rows if str(r[name] or "").casefold() == wanted]
        return web.json_response(rows[offset : offset + limit], headers={"X-Total-Count": str(len(rows))})

    async def lot_cells(request: web.Request) -> web.Response:
        if isinstance(user := signed_in(request), web.Response):
            return user
        lot = request.match_info["lot"]
        if not re.fullmatch(NAME_PATTERN, lot) or len(lot) > 160:
            return _error(400, f"not a lot id: {lot[:80]!r}")
        if influx is None:
            return _error(503, "no lot genealogy here: LINEWATCH_INFLUX__URL is not set for the alerter")
        try:  # a blocking client: off the loop
            affected = await asyncio.to_thread(affected_cells, influx, [lot])
        except (OSError, ValueError) as exc:
            return _error(503, f"the lot genealogy (InfluxDB) is not reachable: {type(exc).__name__}")
        if lot not in affected.known:
            return _error(404, f"no lot {lot} in the lot genealogy")
        return web.json_response({"lot": lot, "cells": affected.cells[lot]})

    async def act(request: web.Request) -> web.Response:
        user = user_of(request)
        if user is None:
            return _error(401, "missing or unknown bearer token")
        try:
            body = msgspec.json.decode(await request.read(), type=ActionRequest)
        except msgspec.MsgspecError as exc:
            return _error(400, f"invalid request: {exc}")
        if refusal := denied(user, body.action, body.alarm_id):
            return refusal
        if body.action in NEEDS_COMMENT and not body.comment.strip():
            return _error(400, f"{body.action} needs a comment saying why")
        equipment_id = body.alarm_id.split("/")[0]
        if equipment_id not in alerter.plant.equipment_by_id:
            return _error(404, f"no alarm {body.alarm_id}")
        stored = alerter.alarm_state.get(equipment_id.encode())
        found = state_decoder.decode(stored).alarms.get(body.alarm_id) if stored else None
        seen = alerter.view.latest.get(body.alarm_id)
        # Another worker's alarm, known from its events, is judged by the state they show; its owner dead-letters
        # the action as action_rejected if it does not apply after all.
        alarm = found.alarm if found is not None else _as_seen(seen) if seen is not None else None
        if alarm is None:
            return _error(404, f"no alarm {body.alarm_id}")
        now = datetime.now(UTC)
        if not _trial(alarm, body, now.timestamp()):
            return _error(409, f"{body.action} does not apply to {body.alarm_id} in state {alarm.state.value}")
        action = AlarmAction(
            schema_version=ALARM_SCHEMA_VERSION,
            action_id=uuid.uuid4().hex,
            alarm_id=body.alarm_id,
            equipment_id=equipment_id,
            action=body.action,
            user=user,
            comment=body.comment,
            duration_s=body.duration_s,
            requested_at=now,
        )
        pending = await alerter.actions_topic.send(key=equipment_id.encode(), value=encoder.encode(action))
        await pending
        log.info("operator action", extra={"user": user, "action": body.action, "alarm_id": body.alarm_id})
        return web.json_response({"action_id": action.action_id, "user": user}, status=202)

    app = web.Application(middlewares=[_json_refusals])
    app.router.add_get("/openapi.json", openapi)
    app.router.add_get("/alarms", list_alarms)
    app.router.add_post("/actions", act)
    app.router.add_get("/lots/{lot}/cells", lot_cells)
    app.router.add_get("/me", me)
    app.router.add_get("/alarms/stream", stream)
    app.router.add_get("/console", console)
    app.router.add_static("/console/static", CONSOLE)
    return app
