"""faust's consumer on the app's event loop (`linewatch.core.faust_fixes._consume_on_the_loop`), on real faust
objects with no broker: its calls run in the caller's thread, and a consumer that cannot start says so to the
app instead of leaving a thread behind."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest

from linewatch.core.settings import KafkaSettings
from linewatch.core.streams import faust_app


def consumer_thread() -> Any:
    return faust_app("on-loop-test", KafkaSettings(bootstrap_servers="127.0.0.1:9")).consumer._thread


def test_the_consumer_lives_on_the_apps_loop_and_its_calls_run_in_the_callers_thread() -> None:
    async def calls() -> list[tuple[int, str]]:
        delegate = consumer_thread()
        assert delegate.thread_loop is delegate.parent_loop is asyncio.get_running_loop()

        def plain(tag: str) -> tuple[int, str]:
            return threading.get_ident(), tag

        async def coroutine(tag: str) -> tuple[int, str]:
            await asyncio.sleep(0)
            return threading.get_ident(), tag

        # faust's own call_thread waits on a method queue served by a thread that is not started here: it would
        # never answer.
        return [
            await asyncio.wait_for(delegate.call_thread(plain, "plain"), 2.0),
            await asyncio.wait_for(delegate.call_thread(coroutine, "coroutine"), 2.0),
        ]

    here = threading.get_ident()
    assert asyncio.run(calls()) == [(here, "plain"), (here, "coroutine")]


def test_a_consumer_that_cannot_reach_the_broker_fails_its_start_and_leaves_no_thread() -> None:
    from aiokafka.errors import KafkaConnectionError

    threads_before = threading.active_count()

    async def start() -> None:
        delegate = consumer_thread()
        try:
            await asyncio.wait_for(delegate.start(), 30.0)
        finally:
            delegate._stopped.set()  # as a stop would: its serving task shuts the service down and ends
            await asyncio.wait_for(delegate._serving, 10.0)

    with pytest.raises(KafkaConnectionError):
        asyncio.run(start())
    assert threading.active_count() == threads_before
