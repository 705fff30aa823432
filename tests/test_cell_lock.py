"""Cell locks are leases: a requeued cell on another node takes over a lock nobody refreshes."""

import json
import os
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from normlab.sweep import CELL_LEASE_ENV, CellLock, cell_lease_seconds


def write_lock(run_dir, *, host: str, pid: int, age_s: float) -> None:
    """A lock file as another process left it, last refreshed `age_s` seconds ago."""
    path = run_dir / ".cell.lock"
    path.write_text(json.dumps({"pid": pid, "host": host, "since": time.time() - age_s}))
    stamp = time.time() - age_s
    os.utime(path, (stamp, stamp))


def test_old_lease_from_another_host_is_taken_over(tmp_path):
    write_lock(tmp_path, host="other-node", pid=os.getpid(), age_s=120)
    lock = CellLock(tmp_path, lease_s=60)
    try:
        assert lock.acquire()
        assert json.loads((tmp_path / ".cell.lock").read_text())["host"] == socket.gethostname()
    finally:
        lock.release()


def test_fresh_lease_from_another_host_is_respected(tmp_path):
    write_lock(tmp_path, host="other-node", pid=os.getpid(), age_s=5)
    lock = CellLock(tmp_path, lease_s=60)
    assert not lock.acquire()
    assert json.loads((tmp_path / ".cell.lock").read_text())["host"] == "other-node"


def test_dead_pid_on_this_host_is_stale_at_once(tmp_path):
    write_lock(tmp_path, host=socket.gethostname(), pid=2**22 + 12345, age_s=0)
    lock = CellLock(tmp_path, lease_s=60)
    try:
        assert lock.acquire()
    finally:
        lock.release()


def test_lock_being_written_is_not_stale(tmp_path):
    (tmp_path / ".cell.lock").write_text("")  # created (O_EXCL), its owner not yet written
    assert not CellLock(tmp_path, lease_s=60).acquire()


def test_holder_refresh_keeps_the_lease_fresh(tmp_path):
    holder = CellLock(tmp_path, lease_s=0.4)  # refreshed every 0.1 s
    assert holder.acquire()
    try:
        time.sleep(1.2)  # three leases: stale by now without the refreshes
        assert time.time() - (tmp_path / ".cell.lock").stat().st_mtime < 0.4
        assert not CellLock(tmp_path, lease_s=0.4).acquire()
    finally:
        holder.release()


def test_release_stops_the_refresh_thread_and_frees_the_cell(tmp_path):
    holder = CellLock(tmp_path, lease_s=0.4)
    assert holder.acquire()
    thread = holder._refresher
    assert thread.is_alive() and thread.daemon
    holder.release()
    assert not thread.is_alive()
    assert not (tmp_path / ".cell.lock").exists()
    second = CellLock(tmp_path)
    assert second.acquire()
    second.release()


def test_holder_that_lost_its_lease_leaves_the_new_owner_alone(tmp_path):
    holder = CellLock(tmp_path, lease_s=60)
    assert holder.acquire()
    write_lock(tmp_path, host="other-node", pid=1, age_s=0)  # taken over while it was stalled
    holder.release()
    assert json.loads((tmp_path / ".cell.lock").read_text())["host"] == "other-node"


def test_lease_comes_from_the_environment(monkeypatch, tmp_path):
    monkeypatch.delenv(CELL_LEASE_ENV, raising=False)
    assert cell_lease_seconds() == 600
    monkeypatch.setenv(CELL_LEASE_ENV, "90")
    assert CellLock(tmp_path).lease_s == 90
    for bad in ("0", "ten"):
        monkeypatch.setenv(CELL_LEASE_ENV, bad)
        with pytest.raises(ValueError, match=CELL_LEASE_ENV):
            cell_lease_seconds()


def test_one_of_many_racing_takeovers_wins(tmp_path):
    write_lock(tmp_path, host="other-node", pid=1, age_s=120)
    locks = [CellLock(tmp_path, lease_s=60) for _ in range(8)]
    start = threading.Barrier(len(locks))

    def take(lock: CellLock) -> bool:
        start.wait()
        return lock.acquire()

    with ThreadPoolExecutor(len(locks)) as pool:
        won = list(pool.map(take, locks))
    try:
        assert sum(won) == 1
        [winner] = [lock for lock, ok in zip(locks, won, strict=True) if ok]
        assert json.loads((tmp_path / ".cell.lock").read_text())["token"] == winner._token
        assert not (tmp_path / ".cell.lock.takeover").exists()
    finally:
        for lock in locks:
            lock.release()
