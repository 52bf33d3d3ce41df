"""The gateway's parts without servers: Sparkplug B host logic, frames from single values, the store-and-forward
buffer, JSON topics."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.reasoncodes import ReasonCode

from linewatch.core import sparkplug
from linewatch.core.contract import deadletter_decoder, telemetry_decoder
from linewatch.core.plant import PlantModel
from linewatch.core.stats import StatsCounter
from linewatch.services.gateway.buffer import Buffer
from linewatch.services.gateway.frames import Assembler, bindings
from linewatch.services.gateway.mqtt import JsonTopics, MqttSource
from linewatch.services.gateway.settings import MqttSettings
from linewatch.services.gateway.sparkplug import SparkplugHost

T0 = datetime(2026, 12, 1, 6, 0, tzinfo=UTC)


def small_plant() -> PlantModel:
    return PlantModel.model_validate(
        {
            "site": "site",
            "sources": {"sparkplug": "{site}/{line}/{equipment}/{sensor}", "mqtt": "plant/{equipment}#data.{sensor}"},
            "classes": {
                "press": {
                    "sensors": {"force": {"unit": "kN", "normal": [0, 10]}, "temp": {"unit": "degC", "normal": [0, 90]}}
                }
            },
            "areas": [{"name": "a", "lines": [{"name": "l1", "equipment": [{"class": "press", "ids": ["P1", "P2"]}]}]}],
        }
    )


def host() -> tuple[SparkplugHost, Assembler, StatsCounter]:
    plant = small_plant()
    assembler = Assembler(plant, frame_max_samples=100)
    stats = StatsCounter("gateway")
    return SparkplugHost(bindings(plant, "sparkplug"), assembler, stats, rebirth_interval_s=60), assembler, stats


def message(seq: int, *metrics: dict[str, Any], timestamp: int = 1_000) -> bytes:
    payload = sparkplug.Payload(timestamp=timestamp, seq=seq)
    for metric in metrics:
        payload.metrics.add(**metric)
    return bytes(payload.SerializeToString())


def frames(assembler: Assembler) -> list[Any]:
    return [telemetry_decoder.decode(f.payload) for f in assembler.drain(time.monotonic())]


def test_births_name_aliases_and_alias_only_data_becomes_samples_at_source_time() -> None:
    spb, assembler, _ = host()
    assert spb.handle("spBv1.0/site/NBIRTH/l1", message(0)) == []
    birth = message(
        1,
        {"name": "force", "alias": 1, "datatype": 10, "is_null": True},
        {"name": "temp", "alias": 2, "datatype": 9, "float_value": 20.5},
    )
    spb.handle("spBv1.0/site/DBIRTH/l1/P1", birth)
    data = message(
        2,
        {"alias": 1, "timestamp": 5_000, "datatype": 10, "double_value": 3.25},
        {"alias": 2, "timestamp": 5_000, "datatype": 9, "float_value": 21.0},
    )
    assert spb.handle("spBv1.0/site/DDATA/l1/P1", data) == []
    out = frames(assembler)
    samples = {s.ts: s.values for f in out for s in f.samples}
    assert samples == {
        datetime.fromtimestamp(1, UTC): {"temp": 20.5},
        datetime.fromtimestamp(5, UTC): {"force": 3.25, "temp": 21.0},
    }
    assert [(f.equipment_id, f.units) for f in out] == [("P1", {"force": "kN", "temp": "degC"})]


def test_a_sequence_gap_and_data_before_a_birth_ask_the_edge_node_to_rebirth() -> None:
    spb, _, stats = host()
    requests = spb.handle("spBv1.0/site/DDATA/l1/P1", message(7, {"alias": 1, "datatype": 10, "double_value": 1.0}))
    assert [topic for topic, _ in requests] == ["spBv1.0/site/NCMD/l1"]
    command = sparkplug.Payload.FromString(requests[0][1])
    assert command.metrics[0].name == sparkplug.REBIRTH_METRIC and command.metrics[0].boolean_value
    spb.rebirth_interval_s = 0.0
    spb.handle("spBv1.0/site/NBIRTH/l1", message(0))
    spb.handle(
        "spBv1.0/site/DBIRTH/l1/P1", message(1, {"name": "force", "alias": 1, "datatype": 10, "double_value": 1})
    )
    assert spb.handle("spBv1.0/site/DDATA/l1/P1", message(2, {"alias": 1, "datatype": 10, "double_value": 2})) == []
    gap = spb.handle("spBv1.0/site/DDATA/l1/P1", message(5, {"alias": 1, "datatype": 10, "double_value": 3}))
    assert [topic for topic, _ in gap] == ["spBv1.0/site/NCMD/l1"]
    assert stats.counters["sparkplug_sequence_gaps"] == 1 and stats.counters["sparkplug_before_birth"] == 1


def test_deaths_make_the_units_stale_and_bad_payloads_are_dead_letters() -> None:
    spb, assembler, stats = host()
    spb.handle("spBv1.0/site/NBIRTH/l1", message(0, {"name": "bdSeq", "datatype": 4, "long_value": 3}))
    spb.handle("spBv1.0/site/DDEATH/l1/P2", message(1))
    assert spb.stale == {"P2"} and stats.counters["equipment_stale"] == 1
    spb.handle("spBv1.0/site/NDEATH/l1", message(0, {"name": "bdSeq", "datatype": 4, "long_value": 3}))
    assert spb.stale == {"P1", "P2"}
    spb.handle("spBv1.0/site/DDATA/l1/P1", b"\x08\x96\x01\xff\xff")
    spb.handle("spBv1.0/site/NBIRTH/l1", message(0))
    assert spb.stale == set()
    spb.handle(
        "spBv1.0/site/DDATA/l1/P1",
        message(
            1,
            {"name": "force", "datatype": 12, "string_value": "n/a"},
            {"name": "other", "datatype": 10, "double_value": 1},
            {"alias": 99, "datatype": 10, "double_value": 1},
        ),
    )
    reasons = [deadletter_decoder.decode(letter).reason for _, letter in assembler.take_letters()]
    assert reasons == ["malformed_sparkplug", "not_a_number", "unknown_alias"]
    assert stats.counters["unknown_tags"] == 1


def test_signed_integers_travel_as_twos_complement() -> None:
    payload = sparkplug.Payload.FromString(
        message(0, {"name": "x", "datatype": sparkplug.INT16, "int_value": (1 << 32) - 3})
    )
    assert sparkplug.metric_value(payload.metrics[0]) == -3.0


def test_values_of_one_instant_from_separate_notifications_travel_as_one_sample() -> None:
    plant = small_plant()
    assembler = Assembler(plant, frame_max_samples=2)
    for second in range(5):
        assembler.add("P1", T0 + timedelta(seconds=second), {"force": float(second)})
        assembler.add("P1", T0 + timedelta(seconds=second), {"temp": 20.0}, uncertain={"temp"})
    assert assembler.drain(time.monotonic() - 60.0) == []  # still held for late values
    out = frames(assembler)
    assert [len(f.samples) for f in out] == [2, 2, 1]  # many samples a frame, in time order, at most the bound
    assert [s.values for f in out for s in f.samples][1] == {"force": 1.0, "temp": 20.0}
    assert all(s.uncertain == ["temp"] for f in out for s in f.samples)
    assert out[0].seq < out[1].seq < out[2].seq


def test_the_buffer_keeps_records_across_a_restart_replays_what_a_lost_topic_had_and_counts_what_it_drops(
    tmp_path: Path,
) -> None:
    path = tmp_path / "buffer.sqlite"
    buffer = Buffer(path, max_bytes=10_000, replay_window_s=600)
    buffer.put([("raw", b"P1", b"a" * 1000, 10) for _ in range(5)], {"P1": T0})
    sent = buffer.pending(3)
    buffer.topic_recreated("raw", "id-1")
    buffer.acked(sent, {"raw": "id-1"})
    buffer.close()

    buffer = Buffer(path, max_bytes=10_000, replay_window_s=600)  # a restart: what was not sent is still there
    assert [r.id for r in buffer.pending(10)] == [4, 5]
    assert buffer.positions() == {"P1": T0}
    assert buffer.topic_recreated("raw", "id-1") == 0
    assert buffer.topic_recreated("raw", "id-2") == 3  # the broker came back without the topic
    assert [r.id for r in buffer.pending(10)] == [1, 2, 3, 4, 5]
    dropped = buffer.put([("raw", b"P2", b"b" * 3000, 30) for _ in range(3)], {})
    assert (dropped.records, dropped.values, dropped.keys) == (4, 40, ["P1"])
    assert buffer.counts() == (4, 1000 + 9000)


def test_json_topics_map_fields_to_sensors_and_refuse_what_is_not_a_number() -> None:
    plant = small_plant()
    assembler = Assembler(plant, frame_max_samples=100)
    stats = StatsCounter("gateway")
    topics = JsonTopics(bindings(plant, "mqtt"), assembler, stats, timestamp_field="ts")
    topics.handle("plant/P1", json.dumps({"ts": "2026-12-01T06:00:00Z", "data": {"force": 2, "temp": "hot"}}).encode())
    topics.handle("plant/P2", json.dumps({"ts": 1796104800000, "data": {"force": 1.5}}).encode())
    topics.handle("plant/P2", b"{not json")
    out = {f.equipment_id: f.samples for f in frames(assembler)}
    assert out["P1"][0].values == {"force": 2.0} and out["P1"][0].ts == T0
    assert out["P2"][0].values == {"force": 1.5} and out["P2"][0].ts == datetime.fromtimestamp(1796104800, UTC)
    reasons = sorted(deadletter_decoder.decode(letter).reason for _, letter in assembler.take_letters())
    assert reasons == ["invalid_json", "not_a_number"]


def test_subscriptions_the_broker_refuses_or_grants_at_qos_0_are_said_in_the_log(
    caplog: pytest.LogCaptureFixture,
) -> None:
    plant = small_plant()
    stats = StatsCounter("gateway")
    source = MqttSource(
        MqttSettings(host="broker"),
        None,
        JsonTopics(bindings(plant, "mqtt"), Assembler(plant, 100), stats, "ts"),
        stats,
    )
    topics = source.subscriptions()
    assert topics == ["plant/P1", "plant/P2"]

    def suback(mid: int, *codes: int) -> dict[str, Any]:
        """What the gateway logs for a SUBACK with these reason codes to the SUBSCRIBE of every topic."""
        caplog.clear()
        source._subscribing[mid] = topics
        source._on_subscribe(
            source.client, None, mid, [ReasonCode(PacketTypes.SUBACK, identifier=c) for c in codes], None
        )
        return {r.getMessage().split(":")[0]: r for r in caplog.records}

    with caplog.at_level("INFO", logger="linewatch.services.gateway.mqtt"):
        logged = suback(1, 1, 1)
        assert list(logged) == ["MQTT subscribed"] and logged["MQTT subscribed"].topics == topics
        logged = suback(2, 0x87, 0)  # an ACL that denies P1 (EMQX, HiveMQ, AWS IoT say so; mosquitto 2.0 does not)
        refused = logged["MQTT broker refused subscriptions"]
        assert refused.levelname == "ERROR" and refused.refused == {"plant/P1": "Not authorized"}
        qos0 = logged["MQTT broker granted QoS 0 only"]
        assert qos0.levelname == "WARNING" and qos0.topics == ["plant/P2"]
        assert logged["MQTT subscribed"].topics == ["plant/P2"]
