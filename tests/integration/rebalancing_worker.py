"""A slow faust worker with a table, as the scorer and alerter are: takes batches, stores each key's last offset a
batch at a time (`store_batch`) and appends "partition offset" to OUT for every record it processed.
Usage: python rebalancing_worker.py BOOTSTRAP TOPIC PARTITIONS OUT worker
"""

import asyncio
import sys
from pathlib import Path
from typing import Any

import faust

from linewatch.core.logs import configure
from linewatch.core.settings import KafkaSettings
from linewatch.core.streams import faust_app, store_batch, take_batches

bootstrap, topic, partitions, out = sys.argv[1], sys.argv[2], int(sys.argv[3]), Path(sys.argv[4])
configure(f"rebalancing-{out.stem}")  # the seek-back lines and assignments go with a failure
app = faust_app("rebalancing", KafkaSettings(bootstrap_servers=bootstrap, partitions=partitions))
table = app.Table("last", partitions=partitions, key_type=bytes, value_type=bytes)
processed = out.open("a", buffering=1)


@app.agent(app.topic(topic), name="process")  # type: ignore[untyped-decorator]
async def process(stream: Any) -> None:
    async for events in take_batches(stream, 64, 0.05):
        # Slow enough that a worker joining finds fetched records not yet handed to the stream.
        await asyncio.sleep(0.15)
        processed.write("".join(f"{e.message.partition} {e.message.offset}\n" for e in events))
        last = {e.key: e for e in events}
        store_batch(stream, table, last, {key: str(e.message.offset).encode() for key, e in last.items()})


faust.Worker(app, loglevel="warning", override_logging=False, redirect_stdouts=False).execute_from_commandline()
