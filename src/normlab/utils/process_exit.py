"""A process that imported torch spends ~0.7 s of its exit in the interpreter's final garbage
collection (measured here: `python -c "import torch"` exits in 0.70 s, 0.18 s after
`gc.freeze()`). Every sweep pays it in its parent and in each stack worker, after the work is
done, so the entry points freeze the heap once their work is written."""

from __future__ import annotations

import gc


def freeze_heap_for_exit() -> None:
    """Move every live object out of the collector's reach: the final collection at exit then
    has nothing to walk. Call it last, when no more garbage worth collecting will be made;
    atexit handlers (W&B's teardown, log flushing) still run as usual."""
    gc.freeze()
