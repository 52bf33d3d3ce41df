"""`send_acknowledged`: the agents' sends straight to the aiokafka producer inside faust's return only once Kafka
acknowledged every record, and a refused record fails the batch (the agent then does not acknowledge its input)."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import pytest

from linewatch.core.streams import send_acknowledged


class Producer:
    """The aiokafka producer inside faust's, as the helper uses it: `send` hands back a future that Kafka's answer
    resolves."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes | None, bytes]] = []
        self.futures: list[asyncio.Future[Any]] = []

    async def send(self, topic: str, value: bytes, *, key: bytes | None) -> asyncio.Future[Any]:
        self.sent.append((topic, key, value))
        self.futures.append(asyncio.get_running_loop().create_future())
        return self.futures[-1]


def topic_on(producer: Producer) -> Any:
    faust_producer = SimpleNamespace(_ensure_producer=lambda: producer)
    return SimpleNamespace(app=SimpleNamespace(producer=faust_producer), get_topic_name=lambda: "linewatch.valid")


def test_returns_once_every_record_is_acknowledged() -> None:
    async def main() -> None:
        producer = Producer()
        sending = asyncio.create_task(send_acknowledged(topic_on(producer), [(b"a", b"1"), (None, b"2")]))
        await asyncio.sleep(0)
        assert producer.sent == [("linewatch.valid", b"a", b"1"), ("linewatch.valid", None, b"2")]
        producer.futures[1].set_result("ack")
        await asyncio.sleep(0.01)
        assert not sending.done()  # the first record is not acknowledged yet
        producer.futures[0].set_result("ack")
        await asyncio.wait_for(sending, 1)

    asyncio.run(main())


def test_a_refused_record_fails_the_batch() -> None:
    async def main() -> None:
        producer = Producer()
        sending = asyncio.create_task(send_acknowledged(topic_on(producer), [(b"a", b"1"), (b"b", b"2")]))
        await asyncio.sleep(0)
        producer.futures[0].set_result("ack")
        producer.futures[1].set_exception(RuntimeError("not leader"))
        with pytest.raises(RuntimeError, match="not leader"):
            await asyncio.wait_for(sending, 1)

    asyncio.run(main())
