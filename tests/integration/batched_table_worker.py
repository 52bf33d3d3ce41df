"""A faust worker with one table written a batch at a time, as the alerter and scorer write theirs (`store_batch`).

`write`: stores every input value under each of KEYS (one changelog batch per input record), flushes the producer
after the last value and dies by kill -9. `restore`: a new worker that rebuilds the table from the changelog, dumps
it as JSON to OUT once recovery completed, and dies.
Usage: python batched_table_worker.py write|restore BOOTSTRAP OUT LAST_VALUE worker
"""

import asyncio
import json
import os
import signal
import sys
from pathlib import Path
from typing import Any

import faust

from linewatch.core.logs import configure
from linewatch.core.settings import KafkaSettings
from linewatch.core.streams import faust_app, store_batch, take_batches

KEYS = [f"key-{i}".encode() for i in range(10)]
INPUT_TOPIC = "batched-table-input"

mode, bootstrap, out, last_value = sys.argv[1], sys.argv[2], Path(sys.argv[3]), sys.argv[4].encode()
configure(f"batched-table-{mode}")  # the recovery's own account (ends counted) goes with a failure
app = faust_app("batched-table", KafkaSettings(bootstrap_servers=bootstrap, partitions=1))
table = app.Table("values", partitions=1, key_type=bytes, value_type=bytes)
source = app.topic(INPUT_TOPIC)


@app.agent(source, name="store")  # type: ignore[untyped-decorator]
async def store(stream: Any) -> None:
    async for events in take_batches(stream, 1000, 0.01):
        if mode != "write":
            continue
        for event in events:
            store_batch(stream, table, dict.fromkeys(KEYS, event), dict.fromkeys(KEYS, event.value))
            if event.value == last_value:
                await app.producer.flush()
                os.kill(os.getpid(), signal.SIGKILL)


@app.task  # type: ignore[untyped-decorator]
async def dump_when_restored() -> None:
    if mode != "restore":
        return
    await app.tables.recovery.completed.wait()
    await asyncio.sleep(1.0)  # what a short end left in faust's buffers would be applied by now, or never
    out.write_text(json.dumps({key.decode(): value.decode() for key, value in table.items()}))
    os.kill(os.getpid(), signal.SIGKILL)


faust.Worker(app, loglevel="warning", override_logging=False, redirect_stdouts=False).execute_from_commandline()
