"""One W&B run per run folder for life: its mode, its id, and its history across a resume.

The id is made once and kept in the folder (<run>/wandb/normlab-run-id), so a resumed or re-run
cell logs to the same run (resume="allow"): online, W&B continues that run. Offline, W&B cannot
append to an earlier offline run (wandb/wandb#2423, #4624): every init writes a new
offline-run-<time>-<id> folder, and `wandb sync` does not merge two of them (#3841, #5865). So a
resumed offline run first logs again the rows logged before the checkpoint (those metrics.csv
keeps; from the earlier offline run when it holds them all), and once it finishes the earlier
offline folders of its id go: the folder holds one offline run, whose history has every step once.
"""

from __future__ import annotations

import json
import os
import shutil
import struct
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from normlab.config.errors import ConfigError
from normlab.utils.files import write_text_atomic

RUN_ID_FILE = "normlab-run-id"  # in <run>/wandb
STEP_KEY = "trainer/global_step"  # Lightning's WandbLogger adds it to every row it logs
MODES = ("online", "offline", "disabled")
LEGACY_MODES = {"dryrun": "offline", "run": "online"}  # what old W&B versions called them


def wandb_mode(mode: Any) -> str:
    """The W&B mode of a run: `logger.wandb.mode` when set, else $WANDB_MODE, else offline."""
    if mode is not None:
        return getattr(mode, "value", mode)
    given = os.environ.get("WANDB_MODE", "").strip()
    if not given:
        return "offline"
    resolved = LEGACY_MODES.get(given.lower(), given.lower())
    if resolved not in MODES:
        raise ConfigError(
            f"WANDB_MODE={given}: W&B's mode is one of {', '.join(MODES)}; "
            "fix the environment variable or set logger.wandb.mode"
        )
    return resolved


def folder_run_id(run_dir: Path) -> str:
    """The folder's W&B run id: read from the folder, or made (random) and kept there.

    Random rather than a hash of the path: two machines (or a folder deleted and made again)
    with the same paths must not continue each other's online runs."""
    path = Path(run_dir) / "wandb" / RUN_ID_FILE
    if path.is_file():
        kept = path.read_text().strip()
        if kept:
            return kept
    run_id = uuid.uuid4().hex[:16]
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, run_id + "\n")
    return run_id


def offline_runs(run_dir: Path, run_id: str) -> list[Path]:
    """The folder's offline W&B runs of `run_id`, oldest first."""
    return sorted((Path(run_dir) / "wandb").glob(f"offline-run-*-{run_id}"))


def _records(log: Path) -> Iterator[bytes]:
    """The records of a .wandb file: W&B's 7-byte header, then LevelDB's log framing (32 KiB
    blocks of chunks: crc32c (4), length (2), type (1: full, 2: first, 3: middle, 4: last))."""
    data = log.read_bytes()
    if data[:4] != b":W&B":
        return
    block, position, pending = 32768, 7, b""
    while position + 7 <= len(data):
        if block - position % block < 7:  # a block's tail too short for a chunk header
            position += block - position % block
            continue
        _, length, kind = struct.unpack("<IHB", data[position : position + 7])
        chunk = data[position + 7 : position + 7 + length]
        position += 7 + length
        if kind == 0:  # zero padding up to the next block
            position += (block - position % block) % block
            continue
        pending = chunk if kind in (1, 2) else pending + chunk
        if kind in (1, 4):
            yield pending


def offline_history(run: Path) -> list[dict[str, Any]]:
    """The history rows an offline run logged (W&B's `_step`, `_runtime` ... left out); a
    killed run's file ends in a cut record, which is dropped."""
    from wandb.proto import wandb_internal_pb2

    rows = []
    for log in run.glob("run-*.wandb"):
        for data in _records(log):
            record = wandb_internal_pb2.Record()
            try:
                record.ParseFromString(data)
            except Exception:  # the cut end of a killed run's file
                break
            if record.WhichOneof("record_type") != "history":
                continue
            row = {
                item.key or ".".join(item.nested_key): json.loads(item.value_json)
                for item in record.history.item
            }
            rows.append({key: value for key, value in row.items() if not key.startswith("_")})
    return rows


def _media(row: dict[str, Any]) -> dict[str, Any]:
    """A stored row as wandb.log takes it: W&B flattens a histogram to name._type / .values /
    .bins, which become a wandb.Histogram again."""
    import numpy as np
    import wandb

    histograms = [key[: -len("._type")] for key, kind in row.items() if kind == "histogram"]
    rebuilt = dict(row)
    for name in histograms:
        counts, edges = (rebuilt.pop(f"{name}.{part}") for part in ("values", "bins"))
        del rebuilt[f"{name}._type"]
        rebuilt[name] = wandb.Histogram(np_histogram=(np.asarray(counts), np.asarray(edges)))
    return rebuilt


def csv_rows_as_history(rows: list[dict[str, str]]) -> list[dict[str, Any]]:
    """metrics.csv rows (one per log call, as W&B's) as the rows Lightning logged to W&B."""
    history = []
    for row in rows:
        values = {key: float(value) for key, value in row.items() if value and key != "step"}
        history.append({**values, STEP_KEY: int(row["step"])})
    return history


def replay_before(
    run: Any, run_dir: Path, run_id: str, step: int, csv_rows: list[dict[str, str]]
) -> tuple[int, str]:
    """Log to `run` again the rows logged before optimizer step `step` (the checkpoint's);
    returns how many and where from.

    From the folder's earlier offline run of `run_id` that reached the furthest step (an earlier
    resume replayed the rows before it; a run killed while replaying holds only part of them)
    when it holds them all, histograms included; else from metrics.csv's rows before the
    checkpoint (`csv_rows`, scalars): W&B's service writes the .wandb file in buffered chunks, so
    a SIGKILLed run's file can end well before its last logged row."""
    current = Path(run.dir).parent
    earlier = [offline_history(old) for old in offline_runs(run_dir, run_id) if old != current]
    rows = max(
        earlier,
        key=lambda rows: max((row.get(STEP_KEY, -1) for row in rows), default=-1),
        default=[],
    )
    kept = [row for row in rows if STEP_KEY in row and row[STEP_KEY] < step]
    source = "the earlier offline run"
    if len(kept) < len(csv_rows):
        kept, source = csv_rows_as_history(csv_rows), "metrics.csv"
    for row in kept:
        run.log(_media(row))
    return len(kept), source


def drop_earlier_runs(run: Any, run_dir: Path, run_id: str) -> None:
    """Remove the folder's other offline runs of `run_id` once `run` has finished."""
    current = Path(run.dir).parent
    for old in offline_runs(run_dir, run_id):
        if old != current:
            shutil.rmtree(old, ignore_errors=True)
