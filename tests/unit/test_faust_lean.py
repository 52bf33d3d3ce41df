"""The trimmed faust Schema and Monitor every service's app uses (`linewatch.core.streams.faust_app`)."""

from __future__ import annotations

import asyncio
from typing import Any

from linewatch.core.settings import KafkaSettings
from linewatch.core.streams import faust_app


def app_and_message() -> tuple[Any, Any]:
    from faust.types import TP
    from faust.types.tuples import Message

    app = faust_app("lean-test", KafkaSettings(bootstrap_servers="127.0.0.1:9"))
    message = Message("t", 1, 5, 0.0, 0, [("h", b"1")], b"key", b"value", None, tp=TP("t", 1))
    return app, message


def test_a_raw_topic_hands_on_the_bytes_kafka_gave_as_faust_does() -> None:
    import faust

    app, message = app_and_message()
    event = asyncio.run(app.topic("t").schema.compile(app)(message))
    assert type(app.topic("t").schema) is not faust.Schema
    faust_decode: Any = faust.Schema().compile(app)
    faust_event = asyncio.run(faust_decode(message))
    assert (event.key, event.value, event.message) == (b"key", b"value", message)
    assert (event.key, event.value, event.headers) == (faust_event.key, faust_event.value, faust_event.headers)


def test_a_typed_topic_still_decodes_with_its_codec() -> None:
    app, message = app_and_message()
    message.value = b'{"a": 1}'
    event = asyncio.run(app.topic("t", value_serializer="json").schema.compile(app)(message))
    assert event.value == {"a": 1}


def test_the_monitor_keeps_what_faust_reads_and_drops_the_rest() -> None:
    app, message = app_and_message()
    monitor = app.monitor
    monitor.on_message_in(message.tp, 5, message)
    monitor.on_stream_event_in(message.tp, 5, None, None)
    assert message.tp in monitor.stream_inbound_time  # faust's slow-processing check reads it
    assert monitor.messages_received_total == 0 and monitor.events_total == 0
