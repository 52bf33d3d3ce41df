"""The consumer's delivery of a fetched message to the streams without a task per message
(`linewatch.core.faust_fixes`): what it must keep from faust's own `wait_first` race with the suspend flag."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from linewatch.core.faust_fixes import _deliver_without_tasks, finish_started


class DrainingConsumer:
    """What the patched `wait_first` reads of faust's consumer, with faust's own method."""

    def __init__(self) -> None:
        from faust.transport.consumer import Consumer

        _deliver_without_tasks()
        self.suspend_flow = asyncio.Event()
        self.wait_first = Consumer.wait_first.__get__(self)
        self._stopped, self._crashed, self.loop = asyncio.Event(), asyncio.Event(), asyncio.get_running_loop()


def counting_tasks(loop: asyncio.AbstractEventLoop) -> list[Any]:
    made: list[Any] = []

    def factory(loop: asyncio.AbstractEventLoop, coro: Any) -> asyncio.Task[Any]:
        made.append(coro)
        return asyncio.Task(coro, loop=loop)

    loop.set_task_factory(factory)
    return made


def test_a_delivery_that_does_not_wait_makes_no_task() -> None:
    async def main() -> None:
        consumer = DrainingConsumer()
        delivered: list[str] = []

        async def deliver() -> None:
            delivered.append("message")

        tasks = counting_tasks(asyncio.get_running_loop())
        await consumer.wait_first(deliver(), consumer.suspend_flow.wait())
        assert delivered == ["message"]
        assert tasks == []

    asyncio.run(main())


def test_a_delivery_that_waits_is_abandoned_when_the_flow_is_suspended() -> None:
    async def main() -> None:
        consumer = DrainingConsumer()
        queue_has_room = asyncio.get_running_loop().create_future()
        outcome: list[str] = []

        async def deliver() -> None:
            try:
                await queue_has_room
                outcome.append("delivered")
            except asyncio.CancelledError:
                outcome.append("abandoned")
                raise

        waiting = asyncio.ensure_future(consumer.wait_first(deliver(), consumer.suspend_flow.wait()))
        await asyncio.sleep(0.01)
        consumer.suspend_flow.set()  # a rebalance began
        await asyncio.wait_for(waiting, 5)
        assert outcome == ["abandoned"]

    asyncio.run(main())


def test_a_delivery_that_waits_completes_with_its_result_or_error() -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        room = loop.create_future()

        async def deliver() -> int:
            value: int = await room
            await asyncio.sleep(0)
            return value + 1

        coro = deliver()
        loop.call_later(0.01, room.set_result, 41)
        assert await finish_started(coro, coro.send(None)) == 42

        refused = loop.create_future()

        async def refuse() -> None:
            await refused

        refusal = refuse()
        loop.call_later(0.01, refused.set_exception, ValueError("queue closed"))
        with pytest.raises(ValueError, match="queue closed"):
            await finish_started(refusal, refusal.send(None))

    asyncio.run(main())


def test_a_cancellation_in_the_same_turn_as_the_wake_up_reaches_the_delivery() -> None:
    """A rebalance that suspends the flow while the stream's queue makes room: the delivery must be abandoned,
    as a task would abandon it, not carry a revoked partition's message into the stream."""

    async def main() -> None:
        room = asyncio.get_running_loop().create_future()
        outcome: list[str] = []

        async def deliver() -> None:
            try:
                await room
            except asyncio.CancelledError:
                outcome.append("abandoned")
                raise
            outcome.append("delivered")

        coro = deliver()
        running = asyncio.ensure_future(finish_started(coro, coro.send(None)))
        await asyncio.sleep(0)  # it now waits on `room`
        room.set_result(None)
        running.cancel()
        with pytest.raises(asyncio.CancelledError):
            await running
        assert outcome == ["abandoned"]

    asyncio.run(main())
