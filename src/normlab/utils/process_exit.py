"""A process that imported torch spends a large part of a second of its exit in the interpreter's
final garbage collection, walking torch's many objects. Every sweep pays it in its parent and in
each stack worker, after the work is done, so the entry points freeze the heap once their work
is written (`gc.freeze()`: the final collection then skips those objects)."""

from __future__ import annotations

import gc


def freeze_heap_for_exit() -> None:
    """Move every live object out of the collector's reach: the final collection at exit then
    has nothing to walk. Call it last, when no more garbage worth collecting will be made;
    atexit handlers (W&B's teardown, log flushing) still run as usual."""
    gc.freeze()
