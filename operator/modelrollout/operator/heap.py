"""Give the heap back to the operating system after a burst.

CPython frees an object as soon as it is unreferenced, but glibc's ``malloc`` keeps
the freed pages of its main heap for reuse. A burst (start-up: every rollout listed,
reconciled and written at once; a wave of applies) leaves a replica holding the peak
it never needs again, which counts against its memory limit. ``malloc_trim(0)``
returns those pages. Measured with 500 finished rollouts (docs/benchmarks.md,
"Idle cost"): 331 MiB resident after start-up, 183 MiB after one trim.

Where ``malloc_trim`` does not exist (musl, macOS) this is a no-op.
"""

from __future__ import annotations

import asyncio
import ctypes
import logging
import time
from collections.abc import Callable

__all__ = ["TRIM_EVERY", "malloc_trim", "trim_forever"]

log = logging.getLogger("modelrollout")

#: Seconds between trims. A trim walks malloc's free lists: a few milliseconds.
TRIM_EVERY = 30.0


def _libc_trim() -> Callable[[], int] | None:
    try:
        fn = ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_size_t]
    fn.restype = ctypes.c_int
    return lambda: int(fn(0))


#: glibc's ``malloc_trim(0)``, or None where there is none.
malloc_trim = _libc_trim()


async def trim_forever(
    every: float = TRIM_EVERY, trim: Callable[[], int] | None = malloc_trim
) -> None:
    """Trim the heap every ``every`` seconds until cancelled (a no-op without glibc)."""
    if trim is None:
        log.debug("no malloc_trim here: the heap is not trimmed")
        return
    while True:
        await asyncio.sleep(every)
        began = time.monotonic()
        trim()
        took = time.monotonic() - began
        if took > 0.05:
            log.debug("malloc_trim took %.3f s", took)
