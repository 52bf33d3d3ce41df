"""The alerter's agents: `evaluate` turns telemetry, scores and operator actions into alarm events; `notify`
sends notifications and Grafana annotations for them. State lives in faust tables keyed by equipment id,
co-partitioned with the input topics."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass, field
from typing import Any

import msgspec
from msgspec import structs

from linewatch.core.contract import (
    AlarmEvent,
    EquipmentRef,
    alarm_action_decoder,
    alarm_event_decoder,
    encoder,
    scores_decoder,
    seen_before,
    telemetry_decoder,
)
from linewatch.core.kafka import partition_of, source_of
from linewatch.core.plant import PlantModel
from linewatch.core.settings import Topics
from linewatch.core.stats import StatsCounter
from linewatch.core.streams import dead_letter_event, publish_stats, send_acknowledged, store_batch, take_batches
from linewatch.services.alerter.annotations import Annotator
from linewatch.services.alerter.engine import ActionNotApplicable, AlarmEngine, UnknownAlarm
from linewatch.services.alerter.notify import DeliveryFailed, Notifier, should_notify
from linewatch.services.alerter.rationalization import Rationalizer
from linewatch.services.alerter.silence import CHECK_EVERY_S, Place, Placed, Silences
from linewatch.services.alerter.state import UnitState, state_decoder, state_encoder
from linewatch.services.alerter.view import AlarmView

SERVICE = "alerter"
log = logging.getLogger(__name__)
SENT_MEMORY = 500  # event ids remembered per unit, so a redelivered event is not notified twice
BATCH_RECORDS = 1000
BATCH_WITHIN_S = 0.01


class NotifyState(msgspec.Struct):
    sent: list[str] = []
    annotations: dict[str, tuple[int, int, str]] = {}
    applied: dict[str, int] = {}


notify_decoder = msgspec.json.Decoder(NotifyState)


@dataclass
class Alerter:
    """What the agents and the operator API share."""

    plant: PlantModel
    alarm_state: Any  # faust Table: equipment id -> UnitState (JSON)
    actions_topic: Any
    rationalizer: Rationalizer
    stats: StatsCounter
    view: AlarmView = field(default_factory=AlarmView)  # every partition's alarms, from their events

    def units(self) -> list[tuple[str, UnitState]]:
        """The units of this worker's partitions (one worker: the whole plant)."""
        return [(key.decode(), state_decoder.decode(value)) for key, value in self.alarm_state.items() if value]


def apply(
    engine: AlarmEngine, plant: PlantModel, topics: Topics, unit: UnitState, topic: str, value: bytes
) -> list[AlarmEvent] | None:
    """The alarm events of one record applied to its unit; None for a copy of a frame applied already (a dose,
    an SPC chart or a settle time would count it twice)."""
    if topic == topics.valid:
        frame = telemetry_decoder.decode(value)
        return None if seen_before(unit.recent_frames, frame) else engine.on_frame(unit, frame)
    if topic == topics.scores:
        return engine.on_scores(unit, scores_decoder.decode(value))
    action = alarm_action_decoder.decode(value)
    equipment = plant.equipment_by_id.get(action.equipment_id)
    if equipment is None:
        raise UnknownAlarm(f"unknown equipment {action.equipment_id}")
    ref: EquipmentRef = equipment.ref
    return engine.on_action(unit, ref, action)


def heard(
    silences: Silences,
    engine: AlarmEngine,
    plant: PlantModel,
    key: bytes,
    event: Any,
    unit: UnitState,
    wall: float,
    mono: float,
    silent_for_s: float = 0.0,
) -> None:
    """A unit's records applied: its wait for a no-data alarm starts again."""
    equipment = plant.equipment_by_id.get(key.decode(errors="replace"))
    after = engine.silent_after(unit, equipment.equipment_class) if equipment else None
    silences.heard(key, event, unit.last_ts, after, wall, mono, silent_for_s)


def register(
    app: Any,
    topics: Topics,
    partitions: int,
    plant: PlantModel,
    engine: AlarmEngine,
    notifier: Notifier,
    annotator: Annotator,
    stats_interval_s: float,
) -> Alerter:
    inputs = app.topic(topics.valid, topics.scores, topics.alarm_actions)
    alarms_topic = app.topic(topics.alarms)
    deadletter_topic = app.topic(topics.deadletter)
    alarm_state = app.Table("alarm-state", partitions=partitions, key_type=bytes, value_type=bytes)
    notify_state = app.Table("notify-state", partitions=partitions, key_type=bytes, value_type=bytes)
    stats = StatsCounter(SERVICE)
    alerter = Alerter(plant, alarm_state, app.topic(topics.alarm_actions), engine.rationalizer, stats)
    silences = Silences()
    looked_at: set[Any] = set()  # the valid topic's partitions this worker has
    unseen: set[Any] = set()  # of those, the ones whose units' stored state is still to be looked at

    @app.agent(inputs, name="evaluate")  # type: ignore[untyped-decorator]
    async def evaluate(stream: Any) -> None:
        # What arrived within 10 ms, in order: each unit's state is read and written (a changelog record) once a
        # batch, not once a record.
        async for events in take_batches(stream, BATCH_RECORDS, BATCH_WITHIN_S, idle_s=CHECK_EVERY_S):
            touched: dict[bytes, UnitState] = {}
            taken: dict[bytes, list[Any]] = {}  # the events each unit took this batch, to rebuild it after a failure
            last_event: dict[bytes, Any] = {}
            outgoing: list[tuple[bytes, AlarmEvent]] = []
            for event in events:
                message, key = event.message, event.key
                position = f"{message.topic}:{message.partition}"
                stats.took(message.topic)
                if key is None:
                    await dead_letter_event(
                        deadletter_topic, event, SERVICE, "missing_key", "records are keyed by equipment id"
                    )
                    continue
                if key not in touched:
                    touched[key], taken[key] = stored_state(key), []
                unit = touched[key]
                if unit.applied.get(position, -1) >= message.offset:
                    stats.counters["redelivered_skipped"] += 1  # applied before a restart; its events are out
                    continue
                value = event.value or b""
                try:
                    produced = apply(engine, plant, topics, unit, message.topic, value)
                    if produced is None:
                        stats.counters["frame_copies_skipped"] += 1
                        produced = []
                except (UnknownAlarm, ActionNotApplicable) as exc:
                    await dead_letter_event(deadletter_topic, event, SERVICE, "action_rejected", str(exc))
                    stats.counters["actions_rejected"] += 1
                    produced = []
                except Exception as exc:
                    # faust would skip the record and commit past it: dead-letter it, and take the unit back to
                    # its last good state (the failed step may have changed part of it).
                    reason = "invalid_message" if isinstance(exc, msgspec.MsgspecError) else "internal_error"
                    log.exception("alarm evaluation failed", extra=structs.asdict(source_of(message)))
                    await dead_letter_event(deadletter_topic, event, SERVICE, reason, f"{type(exc).__name__}: {exc}")
                    stats.counters["dead_letters"] += 1
                    touched[key] = rebuilt(key, taken[key])
                    continue
                outgoing += [(key, produced_event) for produced_event in produced]
                unit.applied[position] = message.offset
                taken[key].append(event)
                last_event[key] = event
            await send_events(outgoing)
            store_batch(
                stream, alarm_state, last_event, {key: state_encoder.encode(touched[key]) for key in last_event}
            )
            wall, mono = time.time(), time.monotonic()
            for key, event in last_event.items():
                heard(silences, engine, plant, key, event, touched[key], wall, mono)
            await judge_silences(stream)

    async def judge_silences(stream: Any) -> None:
        """The no-data alarms of the units this worker heard live and has not heard from since."""
        mono = time.monotonic()
        # Not in a rebalance: whose units these are is being decided.
        if not app.flow_control.is_active() or not silences.time_to_look(mono):
            return
        actives = app.assignor.assigned_actives()
        await watch_taken_partitions(stream, actives)
        outgoing: list[tuple[bytes, AlarmEvent]] = []
        written: dict[bytes, UnitState] = {}
        last_event: dict[bytes, Any] = {}
        for key, watch, now in silences.due(mono, actives):
            unit = stored_state(key)
            equipment = plant.equipment_by_id.get(key.decode(errors="replace"))
            if equipment is None or unit.last_ts != watch.last_ts:
                continue
            produced = engine.on_silence(unit, equipment.ref, now)
            if produced:
                outgoing += [(key, e) for e in produced]
                written[key], last_event[key] = unit, watch.event
        if outgoing:
            await send_events(outgoing)
            store_batch(stream, alarm_state, last_event, {key: state_encoder.encode(written[key]) for key in written})

    async def watch_taken_partitions(stream: Any, actives: set[Any]) -> None:
        """The units of partitions this worker has taken, from their stored state: a unit that went silent while no
        worker was looking (a restart, a rebalance) is watched from its last sample on. Not before the worker has
        applied what the partition held (the records of the time no worker was looking): a unit whose frames wait
        there is not silent."""
        mine = {tp for tp in actives if tp.topic == topics.valid}
        unseen.intersection_update(mine)
        unseen.update(mine - looked_at)
        looked_at.intersection_update(mine)
        looked_at.update(mine)
        if not unseen or not stream.channel.queue.empty():
            return
        taken = {tp.partition for tp in unseen if await caught_up(tp)}
        unseen.difference_update({tp for tp in unseen if tp.partition in taken})
        if not taken:
            return
        wall, mono = time.time(), time.monotonic()
        for key, value in list(alarm_state.items()):
            partition = partition_of(key, partitions)
            if value and partition in taken and key not in silences.watched:
                unit = state_decoder.decode(value)
                place = Placed(Place(topics.valid, partition))
                heard(silences, engine, plant, key, place, unit, wall, mono, max(0.0, wall - unit.last_ts))

    async def caught_up(tp: Any) -> bool:
        """The worker has fetched all the partition holds (its queue, empty, has given it all to the agent)."""
        try:
            highwater = app.consumer.highwater(tp)  # known once a fetch of the partition has been answered
            position = None if highwater is None else await asyncio.wait_for(app.consumer.position(tp), 1.0)
        except Exception:  # a partition going to another worker as this looks, or still being placed: look again
            return False
        return position is not None and highwater is not None and position >= highwater

    async def send_events(outgoing: list[tuple[bytes, AlarmEvent]]) -> None:
        # Acknowledged by Kafka before the state says so: a crash in between repeats them, never loses them.
        await send_acknowledged(alarms_topic, [(key, encoder.encode(e)) for key, e in outgoing])
        stats.counters["alarm_events"] += len(outgoing)
        stats.counters["alarms_raised"] += sum(should_notify(e) and e.kind == "transition" for _, e in outgoing)

    def stored_state(key: bytes) -> UnitState:
        stored = alarm_state.get(key)
        return state_decoder.decode(stored) if stored else UnitState()

    def rebuilt(key: bytes, events: list[Any]) -> UnitState:
        """The unit as stored, with the events it took this batch before a failure applied again (their alarm
        events are already on their way)."""
        unit = stored_state(key)
        for event in events:
            message = event.message
            with contextlib.suppress(UnknownAlarm, ActionNotApplicable):
                apply(engine, plant, topics, unit, message.topic, event.value or b"")
            unit.applied[f"{message.topic}:{message.partition}"] = message.offset
        return unit

    @app.agent(alarms_topic, name="notify")  # type: ignore[untyped-decorator]
    async def notify(stream: Any) -> None:
        async for event in stream.events():
            message = event.message
            position = f"{message.topic}:{message.partition}"
            stored = notify_state.get(event.key or b"")
            state = notify_decoder.decode(stored) if stored else NotifyState()
            where = structs.asdict(source_of(message))
            if state.applied.get(position, -1) >= message.offset:
                log.info("alarm event handled before a restart", extra=where)
                continue
            try:
                alarm = alarm_event_decoder.decode(event.value or b"")
            except msgspec.MsgspecError as exc:
                await dead_letter_event(deadletter_topic, event, SERVICE, "invalid_message", str(exc))
                continue
            if alarm.event_id not in state.sent:
                try:
                    routes = await notifier.handle(alarm)
                    await annotator.handle(alarm, state.annotations)
                except Exception as exc:
                    # Not silently lost: the event and the reason go to the dead-letter topic for a resend.
                    reason = "notification_failed" if isinstance(exc, DeliveryFailed) else "annotation_failed"
                    log.exception("alarm delivery failed", extra={"event_id": alarm.event_id})
                    await dead_letter_event(deadletter_topic, event, SERVICE, reason, f"{type(exc).__name__}: {exc}")
                    stats.counters[reason] += 1
                    routes = []
                stats.counters["notifications_sent"] += len(routes)
                state.sent = [*state.sent[-(SENT_MEMORY - 1) :], alarm.event_id]
                if routes:  # the notification audit trail: what went out, from where
                    log.info("notified", extra={"event_id": alarm.event_id, "routes": routes} | where)
            elif should_notify(alarm):
                log.info("already notified", extra={"event_id": alarm.event_id} | where)
            state.applied[position] = message.offset
            notify_state[event.key or b""] = encoder.encode(state)

    publish_stats(app, topics.stats, stats, stats_interval_s)

    return alerter
