"""Store-and-forward: every record the gateway sends is written to an SQLite file first and leaves it only once
Kafka has acknowledged it, so a broker away for a while or a gateway restart loses nothing.

Acknowledged records stay for `replay_window_s`, with the id of the topic that acknowledged them: a broker that
comes back without its state (a topic with a new id) gets them again, since what it held unprocessed is gone.
Resends are harmless downstream: points keep their source timestamps and tags, so InfluxDB overwrites.
When unsent records pass `max_bytes`, the oldest are dropped, counted, and reported (a log line and a dead
letter that says how many values of which equipment were lost)."""

from __future__ import annotations

import json
import logging
import sqlite3
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

log = logging.getLogger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS records (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    topic TEXT NOT NULL,
    key BLOB,
    value BLOB NOT NULL,
    bytes INTEGER NOT NULL,
    values_count INTEGER NOT NULL,
    acked_topic_id TEXT,   -- NULL: not sent yet
    acked_at REAL
);
CREATE INDEX IF NOT EXISTS records_pending ON records (acked_topic_id, id);
CREATE TABLE IF NOT EXISTS positions (source TEXT PRIMARY KEY, ts TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS topic_ids (topic TEXT PRIMARY KEY, topic_id TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS sparkplug_aliases (
    grp TEXT, edge_node TEXT, aliases TEXT NOT NULL, PRIMARY KEY (grp, edge_node)  -- JSON: device -> alias -> name
);
"""


@dataclass(frozen=True)
class Record:
    id: int
    topic: str
    key: bytes | None
    value: bytes
    values_count: int


@dataclass(frozen=True)
class Dropped:
    records: int
    values: int
    keys: list[str]


class Buffer:
    def __init__(self, path: Path, max_bytes: int, replay_window_s: float) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")  # a committed record survives a power cut, not only a crash
        self._db.executescript(_SCHEMA)
        self._max_bytes = max_bytes
        self._replay_window_s = replay_window_s
        self._pending_bytes = self._db.execute(
            "SELECT coalesce(sum(bytes), 0) FROM records WHERE acked_topic_id IS NULL"
        ).fetchone()[0]

    def put(self, records: list[tuple[str, bytes | None, bytes, int]], positions: dict[str, datetime]) -> Dropped:
        """Keep records (topic, key, value, values in it) and the sources' newest timestamps, in one transaction;
        returns what the bound dropped to make room."""
        size = sum(len(value) for _, _, value, _ in records)
        with self._transaction():
            self._db.executemany(
                "INSERT INTO records (topic, key, value, bytes, values_count) VALUES (?, ?, ?, ?, ?)",
                [(topic, key, value, len(value), count) for topic, key, value, count in records],
            )
            self._db.executemany(
                "INSERT INTO positions (source, ts) VALUES (?, ?) ON CONFLICT(source) DO UPDATE SET ts = "
                "max(ts, excluded.ts)",
                [(source, ts.isoformat()) for source, ts in positions.items()],
            )
            self._pending_bytes += size
            return self._bound()

    def _bound(self) -> Dropped:
        dropped, values, keys = 0, 0, set()
        while self._pending_bytes > self._max_bytes:
            oldest = self._db.execute(
                "SELECT id, key, bytes, values_count FROM records WHERE acked_topic_id IS NULL ORDER BY id LIMIT 256"
            ).fetchall()
            if not oldest:
                break
            for row_id, key, size, count in oldest:
                if self._pending_bytes <= self._max_bytes:
                    break
                self._db.execute("DELETE FROM records WHERE id = ?", (row_id,))
                self._pending_bytes -= size
                dropped, values = dropped + 1, values + count
                keys.add(key.decode("utf-8", "replace") if key else "")
        return Dropped(dropped, values, sorted(keys))

    def pending(self, limit: int) -> list[Record]:
        rows = self._db.execute(
            "SELECT id, topic, key, value, values_count FROM records WHERE acked_topic_id IS NULL ORDER BY id LIMIT ?",
            (limit,),
        ).fetchall()
        return [Record(*row) for row in rows]

    def acked(self, records: list[Record], topic_ids: dict[str, str]) -> None:
        now = time.time()
        with self._transaction():
            self._db.executemany(
                "UPDATE records SET acked_topic_id = ?, acked_at = ? WHERE id = ?",
                [(topic_ids.get(r.topic, "?"), now, r.id) for r in records],
            )
            self._pending_bytes -= sum(len(r.value) for r in records)
            self._db.execute(
                "DELETE FROM records WHERE acked_topic_id IS NOT NULL AND acked_at < ?", (now - self._replay_window_s,)
            )

    def topic_id(self, topic: str) -> str | None:
        row = self._db.execute("SELECT topic_id FROM topic_ids WHERE topic = ?", (topic,)).fetchone()
        return None if row is None else str(row[0])

    def topic_recreated(self, topic: str, topic_id: str) -> int:
        """The broker now has `topic` under `topic_id`: records an older topic acknowledged are sent again.
        Returns how many."""
        with self._transaction():
            again = self._db.execute(
                "SELECT id, bytes FROM records WHERE topic = ? AND acked_topic_id IS NOT NULL AND acked_topic_id != ?",
                (topic, topic_id),
            ).fetchall()
            self._db.executemany(
                "UPDATE records SET acked_topic_id = NULL, acked_at = NULL WHERE id = ?", [(i,) for i, _ in again]
            )
            self._pending_bytes += sum(size for _, size in again)
            self._db.execute(
                "INSERT INTO topic_ids (topic, topic_id) VALUES (?, ?) ON CONFLICT(topic) DO UPDATE SET "
                "topic_id = excluded.topic_id",
                (topic, topic_id),
            )
        return len(again)

    def positions(self) -> dict[str, datetime]:
        return {
            source: datetime.fromisoformat(ts) for source, ts in self._db.execute("SELECT source, ts FROM positions")
        }

    def load(self) -> dict[tuple[str, str], dict[str, dict[int, str]]]:
        """Sparkplug B aliases per edge node: device -> alias -> metric name."""
        return {
            (group, node): {device: {int(a): n for a, n in names.items()} for device, names in json.loads(text).items()}
            for group, node, text in self._db.execute("SELECT grp, edge_node, aliases FROM sparkplug_aliases")
        }

    def keep(self, group: str, edge_node: str, aliases: dict[str, dict[int, str]]) -> None:
        self._db.execute(
            "INSERT INTO sparkplug_aliases (grp, edge_node, aliases) VALUES (?, ?, ?) ON CONFLICT(grp, edge_node) "
            "DO UPDATE SET aliases = excluded.aliases",
            (group, edge_node, json.dumps(aliases)),
        )

    def counts(self) -> tuple[int, int]:
        """(records waiting, of them bytes)."""
        row = self._db.execute(
            "SELECT count(*), coalesce(sum(bytes), 0) FROM records WHERE acked_topic_id IS NULL"
        ).fetchone()
        return int(row[0]), int(row[1])

    def close(self) -> None:
        self._db.close()

    def _transaction(self) -> _Transaction:
        return _Transaction(self._db)


class _Transaction:
    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def __enter__(self) -> None:
        self._db.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: object, *_: object) -> None:
        self._db.execute("COMMIT" if exc_type is None else "ROLLBACK")
