"""A persistent, bounded queue of MQTT messages waiting for the broker (SQLite in the state directory).

The pipeline appends; the publisher sends in append order and removes a message only once the broker has
acknowledged it (PUBACK for QoS 1), so nothing is lost while the broker is away or across a restart of
the daemon. A message may be delivered twice (it was sent, the acknowledgement was lost, the daemon
restarted): subscribers drop duplicates by the ids inside the payload (a lattice's utterance id and seq).

Bounded: at most ``max_messages`` messages and ``max_bytes`` bytes (payload plus topic). When an append
would go over either bound, the oldest *droppable* messages (lattices, by the publisher's choice) are
deleted until the new one fits; only if no droppable message is left are the oldest others deleted. Each
drop is counted (persistently, :attr:`Outbox.dropped`) and logged as a warning. Appending never blocks
on the network and never fails because the outbox is full.

Safe across threads (the pipeline thread appends while the publisher's outbox thread sends and removes):
one SQLite connection in WAL mode guarded by a lock. ``synchronous=NORMAL``: a commit survives the process being
killed; after a power cut the last commits may be lost, which spares the SD card a sync per message.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from daemon.config import Config

__all__ = ["DEFAULT_MAX_BYTES", "DEFAULT_MAX_MESSAGES", "Outbox", "OutboxError", "OutboxMessage", "open_outbox"]

logger = logging.getLogger(__name__)

DEFAULT_MAX_MESSAGES = 10_000
DEFAULT_MAX_BYTES = 64 * 1024 * 1024  # bytes
_SCHEMA_VERSION = 1  # PRAGMA user_version of the database layout below

_CREATE = """
CREATE TABLE IF NOT EXISTS messages (
    id INTEGER PRIMARY KEY AUTOINCREMENT,  -- append order; AUTOINCREMENT never reuses an id
    topic TEXT NOT NULL,
    payload BLOB NOT NULL,
    qos INTEGER NOT NULL,
    retain INTEGER NOT NULL,
    droppable INTEGER NOT NULL,
    size INTEGER NOT NULL                  -- bytes counted against max_bytes
);
CREATE INDEX IF NOT EXISTS messages_droppable ON messages (droppable, id);
CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
"""


_COLUMNS = "id, topic, payload, qos, retain, droppable"
_SQL_TOTALS = "SELECT COUNT(*), COALESCE(SUM(size), 0) FROM messages"
_SQL_OLDEST_DROPPABLE = "SELECT id, topic, size FROM messages WHERE droppable = 1 ORDER BY id LIMIT 1"
_SQL_OLDEST = "SELECT id, topic, size FROM messages ORDER BY id LIMIT 1"
_SQL_INSERT = "INSERT INTO messages (topic, payload, qos, retain, droppable, size) VALUES (?, ?, ?, ?, ?, ?)"


class OutboxError(RuntimeError):
    """The outbox database cannot be opened or used."""


@dataclass(frozen=True)
class OutboxMessage:
    id: int  # increases with append order
    topic: str
    payload: bytes
    qos: int  # 0, 1 or 2
    retain: bool
    droppable: bool  # may be dropped when the outbox is full


def _message(row: tuple[Any, ...]) -> OutboxMessage:
    return OutboxMessage(row[0], row[1], bytes(row[2]), row[3], bool(row[4]), bool(row[5]))


class Outbox:
    """See the module docstring. Use as a context manager or call :meth:`close`."""

    def __init__(
        self,
        path: Path | str,
        *,
        max_messages: int = DEFAULT_MAX_MESSAGES,
        max_bytes: int = DEFAULT_MAX_BYTES,
    ) -> None:
        if max_messages < 1 or max_bytes < 1:
            raise ValueError(f"outbox bounds must be > 0: max_messages={max_messages}, max_bytes={max_bytes}")
        self.path = Path(path)
        self.max_messages = max_messages
        self.max_bytes = max_bytes
        self._lock = threading.Lock()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # isolation_level=None: we issue BEGIN/COMMIT ourselves. check_same_thread=False: the lock
            # serialises use of the one connection from the pipeline and network threads.
            self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=10.0)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            version = self._db.execute("PRAGMA user_version").fetchone()[0]
            if version not in (0, _SCHEMA_VERSION):
                raise OutboxError(
                    f"{self.path}: outbox layout version {version} is not {_SCHEMA_VERSION} "
                    "(written by another harkd version?); move the file away to start afresh"
                )
            self._db.executescript(_CREATE)
            self._db.execute(f"PRAGMA user_version={_SCHEMA_VERSION}")
        except (sqlite3.Error, OSError) as exc:
            raise OutboxError(f"{self.path}: cannot open the outbox database: {exc}") from exc
        pending = len(self)
        if pending:
            logger.info("outbox %s holds %d undelivered message(s) from before", self.path, pending)

    # -- writing ----------------------------------------------------------------------------------------

    def append(self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False, droppable: bool = True) -> int:
        """Queue a message; returns its id. Drops the oldest messages if full (see the module docstring)."""
        if qos not in (0, 1, 2):
            raise ValueError(f"qos must be 0, 1 or 2, not {qos!r}")
        size = len(payload) + len(topic.encode("utf-8"))
        if size > self.max_bytes:
            raise ValueError(f"message of {size} bytes on {topic} exceeds max_bytes={self.max_bytes}")
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                count, total = self._db.execute(_SQL_TOTALS).fetchone()
                dropped_now = 0
                while count + 1 > self.max_messages or total + size > self.max_bytes:
                    victim = (
                        self._db.execute(_SQL_OLDEST_DROPPABLE).fetchone() or self._db.execute(_SQL_OLDEST).fetchone()
                    )
                    self._db.execute("DELETE FROM messages WHERE id = ?", (victim[0],))
                    count, total, dropped_now = count - 1, total - victim[2], dropped_now + 1
                    logger.warning(
                        "outbox full (%d messages / %d bytes max): dropped undelivered message %d on %s",
                        self.max_messages,
                        self.max_bytes,
                        victim[0],
                        victim[1],
                    )
                if dropped_now:
                    self._db.execute(
                        "INSERT INTO counters (name, value) VALUES ('dropped', ?) "
                        "ON CONFLICT(name) DO UPDATE SET value = value + excluded.value",
                        (dropped_now,),
                    )
                cursor = self._db.execute(
                    _SQL_INSERT,
                    (topic, payload, qos, int(retain), int(droppable), size),
                )
                self._db.execute("COMMIT")
            except sqlite3.Error as exc:
                self._rollback()
                raise OutboxError(f"{self.path}: cannot append to the outbox: {exc}") from exc
        message_id = cursor.lastrowid
        if message_id is None:  # sqlite3 always sets it after an INSERT
            raise OutboxError(f"{self.path}: no id for the appended message")
        return message_id

    def remove(self, message_id: int) -> bool:
        """Forget a message the broker has acknowledged. False if it was not there (already dropped)."""
        with self._lock:
            try:
                cursor = self._db.execute("DELETE FROM messages WHERE id = ?", (message_id,))
            except sqlite3.Error as exc:
                raise OutboxError(f"{self.path}: cannot remove message {message_id}: {exc}") from exc
        return cursor.rowcount > 0

    # -- reading ------------------------------------------------------------------------------------------

    def pending(self, *, after_id: int = 0, limit: int = 100) -> list[OutboxMessage]:
        """Up to ``limit`` queued messages with ids greater than ``after_id``, oldest first."""
        with self._lock:
            try:
                rows = self._db.execute(
                    f"SELECT {_COLUMNS} FROM messages WHERE id > ? ORDER BY id LIMIT ?",
                    (after_id, limit),
                ).fetchall()
            except sqlite3.Error as exc:
                raise OutboxError(f"{self.path}: cannot read the outbox: {exc}") from exc
        return [_message(r) for r in rows]

    def get(self, message_id: int) -> OutboxMessage | None:
        with self._lock:
            row = self._db.execute(f"SELECT {_COLUMNS} FROM messages WHERE id = ?", (message_id,)).fetchone()
        return None if row is None else _message(row)

    def __len__(self) -> int:
        with self._lock:
            count: int = self._db.execute("SELECT COUNT(*) FROM messages").fetchone()[0]
        return count

    @property
    def size_bytes(self) -> int:
        """Bytes counted against ``max_bytes`` (payloads plus topics)."""
        with self._lock:
            total: int = self._db.execute("SELECT COALESCE(SUM(size), 0) FROM messages").fetchone()[0]
        return total

    @property
    def dropped(self) -> int:
        """Messages dropped because the outbox was full, ever (kept across restarts)."""
        with self._lock:
            row = self._db.execute("SELECT value FROM counters WHERE name = 'dropped'").fetchone()
        return 0 if row is None else int(row[0])

    # -- lifecycle ----------------------------------------------------------------------------------------

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> Outbox:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def _rollback(self) -> None:
        try:
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")
        except sqlite3.Error:
            logger.exception("outbox %s: rollback failed", self.path)


def open_outbox(config: Config) -> Outbox:
    """The outbox the configuration asks for (``mqtt.outbox``; default ``<state_dir>/outbox.db``)."""
    settings = config.mqtt.outbox
    path = settings.path if settings.path is not None else config.state_dir / "outbox.db"
    return Outbox(path, max_messages=settings.max_messages, max_bytes=settings.max_bytes)
