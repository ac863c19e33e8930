"""The heap trim: freed memory goes back to the OS, on a timer, and nowhere is it fatal."""

from __future__ import annotations

import asyncio

import pytest

from modelrollout.operator import heap

from .fresh import fresh_python

#: In a fresh interpreter: allocate a burst of 1 KiB blocks (malloc's heap, not
#: pymalloc's arenas), free it, and print the RSS before and after one trim.
BURST = """
import gc, sys
from modelrollout.operator.heap import malloc_trim
def rss():
    return int(open('/proc/self/status').read().split('VmRSS:')[1].split()[0]) // 1024
keep = [bytes(1024) for _ in range(200_000)]
tail = bytes(1024)  # allocated last: the top of the heap stays in use
del keep
gc.collect()
before = rss()
malloc_trim()
print(before, rss())
"""


def test_a_trim_gives_freed_memory_back() -> None:
    assert heap.malloc_trim is not None, "glibc's malloc_trim is there on Linux"
    out = fresh_python(BURST).split()
    before, after = int(out[0]), int(out[1])
    # ~200 MiB was freed but kept by malloc; the trim returns most of it
    assert before - after > 100, (before, after)


def test_the_loop_trims_on_each_interval_until_cancelled() -> None:
    calls: list[int] = []

    async def run() -> None:
        task = asyncio.create_task(heap.trim_forever(0.01, lambda: calls.append(1) or 1))
        await asyncio.sleep(0.1)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(run())
    assert 3 <= len(calls) <= 11


def test_without_malloc_trim_the_loop_ends_at_once() -> None:
    async def run() -> None:
        await asyncio.wait_for(heap.trim_forever(0.01, None), 1)

    asyncio.run(run())
