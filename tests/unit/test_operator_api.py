"""The operator API's door and its reads, in-process (aiohttp's test server; the alerter's faust table is a dict):
the contract's limits are refused with a 400, no stored state makes a read fail, and reads come in pages."""

from __future__ import annotations

import asyncio
import json
import urllib.parse
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from hypothesis import given, settings
from hypothesis import strategies as st

from linewatch.core.plant import PlantModel
from linewatch.core.stats import StatsCounter
from linewatch.services.alerter.agents import Alerter
from linewatch.services.alerter.api import MAX_SHELVE_S, PAGE_LIMIT, build_api
from linewatch.services.alerter.lifecycle import Alarm, Priority, Settings, State
from linewatch.services.alerter.rationalization import DEFAULT_ALARM_DATABASE, load_alarm_database
from linewatch.services.alerter.settings import ApiUser
from linewatch.services.alerter.state import AlarmRecord, UnitState, state_encoder

pytestmark = pytest.mark.operators


class Sent:
    def __init__(self) -> None:
        self.values: list[bytes] = []

    async def send(self, key: bytes, value: bytes) -> Any:
        self.values.append(value)
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        done.set_result(None)
        return done


def alerter_with(plant: PlantModel, alarms_per_unit: int, shelved_until: float | None = None) -> Alerter:
    table: dict[bytes, bytes] = {}
    for unit in plant.equipment[:5]:
        records = {}
        for n in range(alarms_per_unit):
            alarm_id = f"{unit.id}/spec_limit/s{n}"
            alarm = Alarm(alarm_id, Settings(priority=Priority.HIGH if n % 2 else Priority.LOW), State.UNACKNOWLEDGED)
            alarm.active, alarm.acknowledged, alarm.shelved_until = True, False, shelved_until
            records[alarm_id] = AlarmRecord(alarm, "spec_limit", sensor=f"s{n}", message="high")
        table[unit.id.encode()] = state_encoder.encode(UnitState(alarms=records))
    rationalizer = load_alarm_database(DEFAULT_ALARM_DATABASE).for_plant(plant)
    return Alerter(plant, table, Sent(), rationalizer, StatsCounter("alerter"))


ROLES = {role: f"{role}-7c1d2e9a" for role in ("viewer", "operator", "supervisor", "engineer")}
USERS = {f"{role}-user": ApiUser.model_validate({"token": token, "role": role}) for role, token in ROLES.items()}


def call(
    alerter: Alerter, method: str, path: str, body: object = None, role: str = "supervisor"
) -> tuple[int, Any, dict[str, str]]:
    async def run() -> tuple[int, Any, dict[str, str]]:
        async with TestClient(TestServer(build_api(alerter, USERS))) as client:
            answer = await client.request(
                method,
                path,
                headers={"Authorization": f"Bearer {ROLES[role]}"},
                data=None if body is None else json.dumps(body),
            )
            return answer.status, await answer.json(), dict(answer.headers)

    return asyncio.run(run())


def test_the_contract_limits_are_refused_at_the_door(plant: PlantModel) -> None:
    alerter = alerter_with(plant, 1)
    alarm_id = f"{plant.equipment[0].id}/spec_limit/s0"
    shelve = {"alarm_id": alarm_id, "action": "shelve", "comment": "sensor swap"}
    for wrong in ({"duration_s": 1e12}, {"duration_s": 0}, {"duration_s": -5}, {"comment": "x" * 2001}):
        status, body, _ = call(alerter, "POST", "/actions", shelve | wrong)
        assert status == 400 and "invalid request" in body["error"], wrong
    assert call(alerter, "POST", "/actions", {"alarm_id": "", "action": "acknowledge"})[0] == 400
    assert call(alerter, "POST", "/actions", shelve | {"duration_s": MAX_SHELVE_S})[0] == 202
    assert len(alerter.actions_topic.values) == 1  # only the accepted one went on


def test_no_stored_state_makes_a_read_fail(plant: PlantModel) -> None:
    alerter = alerter_with(plant, 1, shelved_until=1e12 * 1000)  # written before the door checked durations
    status, rows, _ = call(alerter, "GET", "/alarms")
    assert status == 200 and len(rows) == 5
    assert {row["shelved_until"] for row in rows} == {"9999-12-31T23:59:59.999999+00:00"}


def test_alarms_come_in_pages_highest_priority_first(plant: PlantModel) -> None:
    alerter = alerter_with(plant, 4)  # 5 units x 4 alarms
    status, first, headers = call(alerter, "GET", "/alarms?limit=8")
    assert status == 200 and len(first) == 8 and headers["X-Total-Count"] == "20"
    _, rest, _ = call(alerter, "GET", "/alarms?limit=8&offset=8")
    _, last, _ = call(alerter, "GET", "/alarms?limit=8&offset=16")
    pages = first + rest + last
    assert len(pages) == 20 and len({row["alarm_id"] for row in pages}) == 20
    assert [row["priority"] for row in pages] == ["high"] * 10 + ["low"] * 10
    for wrong in ("limit=0", f"limit={PAGE_LIMIT + 1}", "offset=-1", "limit=ten"):
        status, body, _ = call(alerter, "GET", f"/alarms?{wrong}")
        assert status == 400 and "limit" in body["error"], wrong


def test_each_role_may_do_its_own_actions_and_a_refusal_is_a_403_and_counted(plant: PlantModel) -> None:
    alerter = alerter_with(plant, 1)
    alarm_id = f"{plant.equipment[0].id}/spec_limit/s0"
    acknowledge = {"alarm_id": alarm_id, "action": "acknowledge"}
    shelve = {"alarm_id": alarm_id, "action": "shelve", "comment": "sensor swap", "duration_s": 600}
    assert call(alerter, "GET", "/alarms", role="viewer")[0] == 200
    status, body, _ = call(alerter, "POST", "/actions", acknowledge, role="viewer")
    assert status == 403 and "viewer" in body["error"] and "operator" in body["error"]
    assert call(alerter, "POST", "/actions", acknowledge, role="operator")[0] == 202
    status, body, _ = call(alerter, "POST", "/actions", shelve, role="operator")
    assert status == 403 and "supervisor" in body["error"]
    assert call(alerter, "POST", "/actions", shelve, role="supervisor")[0] == 202
    assert call(alerter, "POST", "/actions", shelve, role="engineer")[0] == 202
    comment = {"alarm_id": alarm_id, "action": "comment", "comment": "called maintenance"}
    assert call(alerter, "POST", "/actions", comment, role="viewer")[0] == 403
    status, body, _ = call(alerter, "POST", "/actions", comment | {"comment": " "}, role="operator")
    assert status == 400 and "needs a comment" in body["error"]
    assert call(alerter, "POST", "/actions", comment, role="operator")[0] == 202
    assert alerter.stats.counters["actions_denied"] == 3
    assert len(alerter.actions_topic.values) == 4  # nothing refused went on


ACTIONS = ["acknowledge", "shelve", "unshelve", "remove_from_service", "return_to_service", "comment", "reboot", ""]
TEXT = st.text(alphabet=st.characters(codec="utf-8"), max_size=40)
NUMBERS = st.one_of(st.floats(allow_nan=False), st.integers(-(10**15), 10**15), st.none(), TEXT)


def action_bodies(alarm_ids: list[str]) -> st.SearchStrategy[object]:
    fields = st.fixed_dictionaries(
        {},
        optional={
            "alarm_id": st.one_of(st.sampled_from(alarm_ids), TEXT, st.text(min_size=150, max_size=200)),
            "action": st.sampled_from(ACTIONS),
            "comment": st.one_of(TEXT, st.text(min_size=1990, max_size=2010), st.integers()),
            "duration_s": NUMBERS,
            "extra": TEXT,
        },
    )
    return st.one_of(fields, st.lists(st.integers(), max_size=3), TEXT, st.none())


QUERY = st.dictionaries(
    st.sampled_from(["area", "priority", "all", "limit", "offset", "x"]),
    st.one_of(TEXT, st.integers(-5, 2000).map(str)),
    max_size=4,
)


@given(data=st.data())
@settings(max_examples=20, deadline=None)
def test_a_thousand_generated_requests_by_every_role_never_get_a_500(data: st.DataObject, plant: PlantModel) -> None:
    """Every role and none, GET /alarms with any query, POST /actions with any body and GET /lots/{lot}/cells with
    any lot (the OpenAPI document's operations): never a 500, and every refusal is a 4xx with its reason. The lot
    genealogy is in InfluxDB, not here: a well-formed lot gets a 503 saying so."""
    alerter = alerter_with(plant, 2, shelved_until=data.draw(st.sampled_from([None, 1e9, 1e18])))
    alarm_ids = [record for _, unit in alerter.units() for record in unit.alarms]
    requests = data.draw(
        st.lists(
            st.tuples(
                st.sampled_from([*ROLES, "nobody"]),
                st.one_of(
                    st.tuples(st.just("GET"), QUERY),
                    st.tuples(st.just("POST"), action_bodies(alarm_ids)),
                    st.tuples(st.just("LOT"), st.one_of(st.text(min_size=1, max_size=40), st.just("EL-SYN1-3"))),
                ),
            ),
            min_size=50,
            max_size=50,
        )
    )

    async def run() -> list[tuple[int, Any]]:
        answers = []
        async with TestClient(TestServer(build_api(alerter, USERS))) as client:
            for role, (method, payload) in requests:
                headers = {"Authorization": f"Bearer {ROLES[role]}"} if role in ROLES else {}
                if method == "GET":
                    answer = await client.get("/alarms", params=payload, headers=headers)  # type: ignore[arg-type]
                elif method == "LOT":
                    lot = urllib.parse.quote(str(payload), safe="")
                    answer = await client.get(f"/lots/{lot}/cells", headers=headers)
                else:
                    answer = await client.post("/actions", data=json.dumps(payload), headers=headers)
                answers.append((answer.status, await answer.json()))
        return answers

    for (role, (method, payload)), (status, body) in zip(requests, asyncio.run(run()), strict=True):
        unavailable = status == 503 and method == "LOT" and "LINEWATCH_INFLUX__URL" in body["error"]
        assert status < 500 or unavailable, (role, method, payload, body)
        if status >= 400:
            assert isinstance(body, dict) and body.get("error"), (role, method, payload, body)
        if role == "nobody":  # refused, unless no route takes the path (a lot with a brace or slash in it)
            assert status == 401 or (method == "LOT" and status == 404 and "Not Found" in body["error"])


def test_the_console_is_served_from_the_package_and_sign_in_names_the_role(plant: PlantModel) -> None:
    alerter = alerter_with(plant, 1)

    async def run() -> list[tuple[int, str]]:
        async with TestClient(TestServer(build_api(alerter, USERS, "http://grafana:3000"))) as client:
            pages = []
            for path, token in (
                ("/console", None),
                ("/console/static/console.js", None),
                ("/me", ROLES["viewer"]),
                ("/me", None),
            ):
                answer = await client.get(path, headers={"Authorization": f"Bearer {token}"} if token else {})
                pages.append((answer.status, await answer.text()))
            return pages

    (page, html), (script, js), (me, who), (anonymous, _) = asyncio.run(run())
    assert page == 200 and 'src="/console/static/console.js"' in html and "http" not in html.replace("http-equiv", "")
    assert script == 200 and "Authorization" in js and "EventSource" not in js  # the token never goes in a URL
    assert me == 200 and json.loads(who) == {
        "user": "viewer-user",
        "role": "viewer",
        "grafana_url": "http://grafana:3000",
    }
    assert anonymous == 401


def test_alarms_of_other_workers_come_from_their_events_and_take_actions(plant: PlantModel) -> None:
    from datetime import UTC, datetime, timedelta

    from linewatch.core.contract import AlarmEvent, equipment_fields

    alerter = alerter_with(plant, 1)  # this worker holds the first five units
    other = plant.equipment[7]
    t0 = datetime(2026, 12, 1, 8, 0, tzinfo=UTC)

    def event(alarm_id: str, unit: Any, state: Any, previous: Any, minute: int, user: str | None = None) -> AlarmEvent:
        return AlarmEvent(
            **equipment_fields(unit.ref), schema_version=1, event_id=f"{alarm_id}@{minute}", alarm_id=alarm_id,  # type: ignore[arg-type]
            ts=t0 + timedelta(minutes=minute), kind="transition", condition="spec_limit", previous=previous,
            state=state, cause="condition active" if user is None else state, priority="high", annunciate=True,
            message="too wet", user=user,
        )  # fmt: skip

    theirs = f"{other.id}/spec_limit/dew_point"
    alerter.view.apply(event(theirs, other, "unacknowledged", "normal", 1))
    alerter.view.apply(event(theirs, other, "acknowledged", "unacknowledged", 2, user="olga"))
    mine = f"{plant.equipment[0].id}/spec_limit/s0"
    alerter.view.apply(event(mine, plant.equipment[0], "normal", "unacknowledged", 3))  # older news than the table
    _, rows, headers = call(alerter, "GET", "/alarms")
    by_id = {row["alarm_id"]: row for row in rows}
    assert headers["X-Total-Count"] == "6" and by_id[mine]["state"] == "unacknowledged"  # the table wins
    assert by_id[theirs]["state"] == "acknowledged" and by_id[theirs]["raised_at"] == "2026-12-01T08:01:00+00:00"
    assert [(s["state"], s["user"]) for s in by_id[theirs]["trail"]] == [
        ("unacknowledged", None),
        ("acknowledged", "olga"),
    ]
    shelve = {"alarm_id": theirs, "action": "shelve", "comment": "dryer service", "duration_s": 600}
    assert call(alerter, "POST", "/actions", shelve)[0] == 202  # its owner applies it (or dead-letters it)
    assert call(alerter, "POST", "/actions", shelve | {"alarm_id": f"{other.id}/spec_limit/nope"})[0] == 404
    assert call(alerter, "POST", "/actions", {"alarm_id": theirs, "action": "acknowledge"})[0] == 409  # done already
