"""A sweep cell's bookkeeping, in one place: stable sweep folders, finished-cell skipping, per-cell
locks, failure records and archived attempts, and the keys that never change a result.

A sweep's folder is keyed by its command line (experiment + overrides), so re-running the same
command finds the same folder and each cell's folder (keyed by that cell's overrides) again:
finished cells are skipped, missing / failed / killed ones are run (killed ones resume from
their checkpoint). Different command lines never share a folder, even in the same second.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import socket
import threading
import time
import uuid
from pathlib import Path

log = logging.getLogger("normlab")

SWEEP_KEY_ENV = "NORMLAB_SWEEP_KEY"
# Keys (and key prefixes, ending in "." or "/") that change how or where a cell runs, never
# what it computes: left out of the sweep key, of cell folder names and of the report's
# configurations. The one list; conf/train.yaml reads it through ${cell_name_excludes:}.
RESULT_NEUTRAL_KEYS = (
    "threads",
    "trainer.process_group_timeout_s",
    "paths.",
    "hydra/launcher",
    "hydra.launcher.",
    "hydra.verbose",
)
# constant within one sweep (they name its folder), so a cell's folder name leaves them out too
SWEEP_NAMING_KEYS = ("experiment", "name")


def is_result_neutral(key: str) -> bool:
    """Whether setting `key` (`+`/`~` prefix allowed) leaves every result unchanged."""
    key = key.lstrip("+~")
    return any(
        key.startswith(entry) if entry.endswith((".", "/")) else key == entry
        for entry in RESULT_NEUTRAL_KEYS
    )


def cell_name_excludes(overrides: list[str]) -> list[str]:
    """The override keys Hydra leaves out of a cell's folder name (`override_dirname`)."""
    keys = [override.split("=", 1)[0].lstrip("+~") for override in overrides]
    return [*SWEEP_NAMING_KEYS, *dict.fromkeys(key for key in keys if is_result_neutral(key))]


SWEPT_KEYS_ENV = "NORMLAB_SWEPT_KEYS"
# a cell folder's name stays under the 255-byte limit of a file name on Linux file systems, with
# room for tools that add to it (rsync's temporary copy is .<name>.XXXXXX)
MAX_CELL_NAME_BYTES = 200


def swept_keys(overrides: list[str]) -> list[str]:
    """The keys a command line sweeps (`seed=0,1,2`, `optimizer.lr=range(...)`), Hydra's aside."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import OverrideParseException

    try:
        parsed = OverridesParser.create().parse_overrides(overrides)
    except OverrideParseException:  # Hydra reports it, in its own words
        return []
    return [o.key_or_group for o in parsed if o.is_sweep_override() and not o.is_hydra_override()]


def _path_safe(text: str) -> str:
    return text.replace("/", "%2F")


def _cut(text: str, limit: int) -> str:
    """`text` cut to at most `limit` bytes, at an override boundary where there is one."""
    if len(text.encode()) <= limit:
        return text
    kept = text.encode()[:limit].decode(errors="ignore")
    return kept.rsplit(",", 1)[0] if "," in kept else kept


def cell_folder_name(override_dirname: str, overrides: list[str], sweeper_keys: list[str]) -> str:
    """A sweep cell's folder name: its result-changing overrides (Hydra's override_dirname, "/"
    written %2F) when that fits MAX_CELL_NAME_BYTES; else only the swept ones (the command
    line's, $NORMLAB_SWEPT_KEYS, and the sweeper's `params`) and a hash of them all. The same
    overrides give the same name, so a re-run finds its cells; .hydra/overrides.yaml and
    config.yaml keep the full overrides."""
    full = _path_safe(override_dirname)
    if len(full.encode()) <= MAX_CELL_NAME_BYTES:
        return full
    swept = set(sweeper_keys) | set(filter(None, os.environ.get(SWEPT_KEYS_ENV, "").split(",")))
    excluded = set(cell_name_excludes(overrides))
    kept = sorted(
        o
        for o in overrides
        if (key := o.split("=", 1)[0].lstrip("+~")) in swept and key not in excluded
    )
    suffix = "--" + hashlib.sha256(full.encode()).hexdigest()[:10]
    named = _cut(_path_safe(",".join(kept)), MAX_CELL_NAME_BYTES - len(suffix))
    return f"{named or 'cell'}{suffix}"


def sweep_key(overrides: list[str]) -> str:
    """A short, stable name for a sweep's command line (order of overrides ignored)."""
    relevant = sorted(o for o in overrides if not is_result_neutral(o.split("=", 1)[0]))
    digest = hashlib.sha256("\n".join(relevant).encode()).hexdigest()[:10]
    return f"sweep-{digest}"


def cell_status(run_dir: Path) -> str:
    """completed | failed | diverged | preempted | pruned (an Optuna trial stopped early) |
    incomplete (started, no result) | missing."""
    result = run_dir / "result.json"
    if result.is_file():
        try:
            return json.loads(result.read_text()).get("status", "incomplete")
        except (OSError, json.JSONDecodeError):
            return "incomplete"
    return "incomplete" if (run_dir / "config.yaml").is_file() else "missing"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


CELL_LEASE_ENV = "NORMLAB_CELL_LEASE_S"
DEFAULT_CELL_LEASE_S = 600.0
# a takeover guard is held for milliseconds; one older than this was left by a crash
_TAKEOVER_GUARD_S = 60.0


def cell_lease_seconds() -> float:
    """How long a cell lock stays valid without a refresh: $NORMLAB_CELL_LEASE_S, or 10 minutes."""
    text = os.environ.get(CELL_LEASE_ENV, str(DEFAULT_CELL_LEASE_S))
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not value > 0:
        raise ValueError(f"{CELL_LEASE_ENV}={text}: must be a number of seconds > 0, e.g. 600")
    return value


def _age_s(path: Path) -> float | None:
    try:
        return time.time() - path.stat().st_mtime
    except FileNotFoundError:
        return None


def slurm_incarnation() -> dict:
    """This process's SLURM job (array-aware) and its restart count; empty outside SLURM."""
    array, element = os.environ.get("SLURM_ARRAY_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID")
    job = f"{array}_{element}" if array else os.environ.get("SLURM_JOB_ID")
    if job is None:
        return {}
    return {"slurm_job": job, "slurm_restart": int(os.environ.get("SLURM_RESTART_COUNT", 0))}


def _earlier_incarnation(owner: dict) -> bool:
    """Whether a lock's owner was this same SLURM job before a requeue (it is gone: a job runs
    once at a time), so the requeued job, on any node, need not wait out the lease."""
    mine = slurm_incarnation()
    if not mine or owner.get("slurm_job") != mine["slurm_job"]:
        return False
    return int(owner.get("slurm_restart", -1)) < mine["slurm_restart"]


class CellLock:
    """An exclusive lock file in a cell folder, so two identical sweeps never run one cell twice.

    The lock is a lease: while it is held a daemon thread touches the file every lease/4, so
    a lock whose file is older than the lease belongs to a process that is gone, on any host
    (a cell requeued on another node takes it over). A lock left by a dead process on this
    host is stale at once. So is one left by the same SLURM job before its requeue (the lock
    records the job and its SLURM_RESTART_COUNT).
    """

    def __init__(self, run_dir: Path, lease_s: float | None = None):
        self.path = Path(run_dir) / ".cell.lock"
        self.lease_s = cell_lease_seconds() if lease_s is None else lease_s
        self.held = False
        self._token = uuid.uuid4().hex
        self._stop = threading.Event()
        self._refresher: threading.Thread | None = None

    def acquire(self) -> bool:
        """True when this process now owns the cell."""
        if not self._create() and not self._take_over():
            return False
        self.held = True
        self._stop.clear()
        self._refresher = threading.Thread(
            target=self._refresh, name=f"cell-lease {self.path.parent.name}", daemon=True
        )
        self._refresher.start()
        return True

    def _create(self) -> bool:
        try:
            fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            return False
        owner = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.time()}
        owner.update(slurm_incarnation())
        with os.fdopen(fd, "w") as handle:
            json.dump({**owner, "token": self._token, "lease_s": self.lease_s}, handle)
        return True

    def _take_over(self) -> bool:
        """Replace a stale lock. One process at a time (an O_EXCL guard file), and the lock is
        judged again under the guard, so two processes never both take over one stale lock."""
        guard = self.path.with_name(".cell.lock.takeover")
        if (_age_s(guard) or 0.0) > _TAKEOVER_GUARD_S:
            guard.unlink(missing_ok=True)
        try:
            os.close(os.open(guard, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        except FileExistsError:
            return False  # another process is taking it over right now
        try:
            if not self._stale():
                return False
            self.path.unlink(missing_ok=True)
            return self._create()
        finally:
            guard.unlink(missing_ok=True)

    def _owner(self) -> dict | None:
        try:
            return json.loads(self.path.read_text())
        except (OSError, json.JSONDecodeError):
            return None  # gone, or its owner is still writing it

    def _stale(self) -> bool:
        age = _age_s(self.path)
        if age is None:
            return True
        owner = self._owner() or {}
        lease = float(owner.get("lease_s", self.lease_s))
        if age > lease:
            return True
        if _earlier_incarnation(owner):  # left by this SLURM job before it was requeued
            return True
        return owner.get("host") == socket.gethostname() and not _pid_alive(
            int(owner.get("pid", 0))
        )

    def holder(self) -> str:
        """Who holds the lock, in words (pid and host)."""
        owner = self._owner() or {}
        return f"pid {owner.get('pid', '?')} on {owner.get('host', '?')}"

    def _refresh(self) -> None:
        while not self._stop.wait(self.lease_s / 4):
            if (self._owner() or {}).get("token") != self._token:
                log.warning("lost the lock of %s (taken over after a missed lease)", self.path)
                return
            try:
                os.utime(self.path)
            except OSError as exc:  # a shared filesystem hiccup: the next refresh tries again
                log.warning("could not refresh the lock of %s: %s", self.path, exc)

    def release(self) -> None:
        """Stop refreshing and remove the lock file (when it is still this process's)."""
        if not self.held:
            return
        self._stop.set()
        if self._refresher is not None:
            self._refresher.join()
            self._refresher = None
        if (self._owner() or {}).get("token") == self._token:
            self.path.unlink(missing_ok=True)
        self.held = False


class StoppedBySignal(SystemExit):
    """A stop signal (SIGTERM, SIGINT) outside a SLURM job: the run, or the running cells of a
    sweep or search, saved their checkpoints, and the whole command ends with the signal's exit
    status (128 + its number: 143, 130). A SystemExit, so every launcher and sweeper lets it
    through; a re-run of the same command resumes."""

    def __init__(self, signal_name: str):
        import signal

        number = getattr(signal, signal_name, signal.SIGTERM)
        super().__init__(128 + int(number))
        self.signal_name = signal_name


def stop_on(signal_name: str | None) -> None:
    """Raise StoppedBySignal for a cell preempted by `signal_name` outside a SLURM job (under
    SLURM a preempted cell's job is requeued and the sweep goes on)."""
    from normlab.utils.ranks import slurm_manages_tasks

    if signal_name and not slurm_manages_tasks():
        log.warning("%s: the sweep stops; re-run the same command to resume it", signal_name)
        raise StoppedBySignal(signal_name)


def record_failure(run_dir: Path, error: str, status: str = "failed") -> None:
    """result.json for a run that did not complete, so sweeps and reports can list it. A
    preempted cell keeps its status (it resumes from its checkpoint); the error joins it."""
    from normlab.utils.files import write_json_atomic

    path = Path(run_dir) / "result.json"
    if cell_status(run_dir) == "preempted":
        result = json.loads(path.read_text())
        write_json_atomic(path, {**result, "after_preemption_error": error})
        return
    write_json_atomic(path, {"status": status, "error": error})


def archive_attempt(run_dir: Path, resumes: bool = False) -> None:
    """Move a failed attempt's files to attempts/<time>/ before the cell is run again. A cell
    that `resumes` from a checkpoint keeps its metrics.csv in place (a copy goes to attempts/):
    the resumed run keeps its rows before the checkpoint."""
    target = run_dir / "attempts" / time.strftime("%Y%m%d-%H%M%S")
    target.mkdir(parents=True, exist_ok=True)
    for name in ("result.json", "metrics.csv", "error.log", "train.log"):
        source = run_dir / name
        if not source.exists():
            continue
        if name == "metrics.csv" and resumes:
            shutil.copy2(source, target / name)
        else:
            source.rename(target / name)


def cell_score(best: float | None, run_dir: Path) -> float:
    """A sweep cell's objective: val/acc_best, or 0.0 (the worst accuracy) when the cell failed,
    diverged or was skipped, so a search (Optuna) scores the trial instead of stopping."""
    return best if best is not None and cell_status(run_dir) == "completed" else 0.0


# a cell with one of these needs no more work: a divergence is a result, not an error, and so
# is a search trial its study pruned
FINISHED = ("completed", "diverged", "pruned")


def finished_result(run_dir: Path) -> dict | None:
    """result.json of a cell that needs no more work (FINISHED); None when it must (still)
    run."""
    if cell_status(run_dir) not in FINISHED:
        return None
    return json.loads((run_dir / "result.json").read_text())
