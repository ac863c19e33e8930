"""Bounds on the free text the engine writes: every message and reason fits a status.

Messages quote what a tenant wrote (a route's name, a query, an address) and what a
server said. However long those are, the status must stay writable (the API server
refuses a request over 3 MiB, and a status that cannot be written is a rollout nobody
can follow) and an Event readable, so each message and reason is cut to
:data:`MAX_TEXT` characters, saying how much was cut. Pure.
"""

from __future__ import annotations

from typing import TypeVar

MAX_TEXT = 1024
"""The most characters of one message or reason in the status, an Event or a notice."""

_TEXT_KEYS = frozenset({"message", "reason"})

T = TypeVar("T")


def clip(text: str, limit: int = MAX_TEXT) -> str:
    """``text`` if it fits in ``limit`` characters, else its start and how much was cut."""
    if len(text) <= limit:
        return text
    width = len(f"... ({len(text)} more characters cut)")
    keep = max(0, limit - width)
    return (text[:keep] + f"... ({len(text) - keep} more characters cut)")[:limit]


def bounded(status: T, limit: int = MAX_TEXT) -> T:
    """A copy of a wire-form status with every ``message`` and ``reason`` clipped."""
    if isinstance(status, dict):
        return {  # type: ignore[return-value]
            k: clip(v, limit) if k in _TEXT_KEYS and isinstance(v, str) else bounded(v, limit)
            for k, v in status.items()
        }
    if isinstance(status, list):
        return [bounded(v, limit) for v in status]  # type: ignore[return-value]
    return status
