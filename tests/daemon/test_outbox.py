from __future__ import annotations

import logging
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from daemon.config import parse_config
from daemon.outbox import Outbox, OutboxError, open_outbox


def test_append_in_order_and_remove(tmp_path: Path) -> None:
    with Outbox(tmp_path / "outbox.db") as box:
        ids = [box.append(f"t/{i}", f"p{i}".encode(), qos=1) for i in range(5)]
        assert ids == sorted(ids) and len(set(ids)) == 5
        assert [m.payload for m in box.pending()] == [b"p0", b"p1", b"p2", b"p3", b"p4"]
        assert [m.id for m in box.pending(after_id=ids[1], limit=2)] == ids[2:4]
        assert box.remove(ids[0]) and not box.remove(ids[0])
        assert len(box) == 4
        message = box.get(ids[1])
        assert message is not None
        assert (message.topic, message.qos, message.retain, message.droppable) == ("t/1", 1, False, True)
        assert box.get(ids[0]) is None
        # ids are never reused, so order holds after removals
        assert box.append("t/x", b"x") > ids[-1]


def test_survives_a_killed_process(tmp_path: Path) -> None:
    path = tmp_path / "outbox.db"
    script = (
        "import os, sys\n"
        "from daemon.outbox import Outbox\n"
        "box = Outbox(sys.argv[1])\n"
        "for i in range(3):\n"
        "    box.append('harkd/dev/lattice', b'lattice %d' % i, qos=1, retain=i == 2)\n"
        "os._exit(0)  # no close, no clean-up: like a crash\n"
    )
    subprocess.run([sys.executable, "-c", script, str(path)], check=True, timeout=60)
    with Outbox(path) as box:
        pending = box.pending()
        assert [m.payload for m in pending] == [b"lattice 0", b"lattice 1", b"lattice 2"]
        assert [m.retain for m in pending] == [False, False, True]


def test_wal_mode(tmp_path: Path) -> None:
    path = tmp_path / "outbox.db"
    with Outbox(path):
        mode = sqlite3.connect(path).execute("PRAGMA journal_mode").fetchone()[0]
    assert mode == "wal"


def test_full_by_count_drops_oldest_droppable_first(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with Outbox(tmp_path / "outbox.db", max_messages=4) as box:
        box.append("wake", b"w0", droppable=False)
        box.append("lattice", b"l0")
        box.append("lattice", b"l1")
        box.append("wake", b"w1", droppable=False)
        with caplog.at_level(logging.WARNING, logger="daemon.outbox"):
            box.append("lattice", b"l2")
            box.append("lattice", b"l3")
        assert [m.payload for m in box.pending()] == [b"w0", b"w1", b"l2", b"l3"]
        assert box.dropped == 2
        assert len([r for r in caplog.records if "outbox full" in r.getMessage()]) == 2
        # nothing droppable left but the new message and w0/w1: the oldest droppable (l2) goes first
        box.append("wake", b"w2", droppable=False)
        assert [m.payload for m in box.pending()] == [b"w0", b"w1", b"l3", b"w2"]
        box.append("wake", b"w3", droppable=False)
        box.append("wake", b"w4", droppable=False)  # only non-droppable left: the oldest of them goes
        assert [m.payload for m in box.pending()] == [b"w1", b"w2", b"w3", b"w4"]
        assert box.dropped == 5


def test_full_by_bytes(tmp_path: Path) -> None:
    with Outbox(tmp_path / "outbox.db", max_bytes=100) as box:
        for i in range(5):
            box.append("t", bytes([i]) * 29)  # 30 bytes each with the topic
        assert [m.payload[0] for m in box.pending()] == [2, 3, 4]
        assert box.size_bytes == 90
        assert box.dropped == 2
        with pytest.raises(ValueError, match="max_bytes"):
            box.append("t", b"x" * 100)


def test_dropped_count_is_kept_across_restarts(tmp_path: Path) -> None:
    path = tmp_path / "outbox.db"
    with Outbox(path, max_messages=1) as box:
        box.append("t", b"a")
        box.append("t", b"b")
    with Outbox(path, max_messages=1) as box:
        assert box.dropped == 1
        assert [m.payload for m in box.pending()] == [b"b"]


def test_concurrent_appends_and_removes(tmp_path: Path) -> None:
    errors: list[BaseException] = []
    with Outbox(tmp_path / "outbox.db") as box:

        def producer(tag: bytes) -> None:
            try:
                for i in range(300):
                    box.append("t", tag + str(i).encode())
            except BaseException as exc:  # collected and re-raised below
                errors.append(exc)

        def consumer() -> None:
            try:
                removed = 0
                while removed < 200:
                    for message in box.pending(limit=min(10, 200 - removed)):
                        removed += box.remove(message.id)
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=producer, args=(t,)) for t in (b"a", b"b")]
        threads.append(threading.Thread(target=consumer))
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert errors == []
        assert len(box) == 400
        remaining = box.pending(limit=1000)
        for tag in (b"a", b"b"):  # each producer's messages are still in its order
            mine = [int(m.payload[1:]) for m in remaining if m.payload[:1] == tag]
            assert mine == sorted(mine)


def test_bad_arguments_and_files(tmp_path: Path) -> None:
    with Outbox(tmp_path / "outbox.db") as box, pytest.raises(ValueError, match="qos"):
        box.append("t", b"x", qos=3)
    with pytest.raises(ValueError, match="> 0"):
        Outbox(tmp_path / "other.db", max_messages=0)
    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(b"this is not a database" * 100)
    with pytest.raises(OutboxError, match=r"garbage\.db"):
        Outbox(garbage)


def test_from_config(tmp_path: Path) -> None:
    config = parse_config({"device_id": "kitchen", "state_dir": str(tmp_path / "state")})
    with open_outbox(config) as box:
        assert box.path == tmp_path / "state" / "outbox.db"
        assert (box.max_messages, box.max_bytes) == (10000, 64 * 1024 * 1024)
    config = parse_config({"device_id": "k", "mqtt": {"outbox": {"path": str(tmp_path / "o.db"), "max_messages": 5}}})
    with open_outbox(config) as box:
        assert (box.path, box.max_messages) == (tmp_path / "o.db", 5)
