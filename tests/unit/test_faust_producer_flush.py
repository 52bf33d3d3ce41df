"""The producer flush that faust's commit awaits before committing offsets covers every send, slow ones too."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

from faust.transport.producer import ProducerBuffer

from linewatch.core.settings import KafkaSettings
from linewatch.core.streams import faust_app


async def test_flush_returns_only_once_a_slow_send_is_out() -> None:
    faust_app("unit-flush", KafkaSettings(bootstrap_servers="127.0.0.1:9"))  # applies linewatch's faust fixes
    published: list[int] = []

    async def publish_message(fut: Any, wait: bool = False) -> None:
        await asyncio.sleep(0.3)  # a send waiting for room in a full batch
        published.append(fut.number)

    buffer = ProducerBuffer()
    buffer.app = SimpleNamespace(conf=SimpleNamespace(producer_threaded=False))  # type: ignore[assignment]
    await buffer.start()
    channel = SimpleNamespace(publish_message=publish_message)
    for number in range(3):
        buffer.put(SimpleNamespace(number=number, message=SimpleNamespace(channel=channel)))  # type: ignore[arg-type]

    await buffer.flush()

    assert published == [0, 1, 2]
    await buffer.stop()
