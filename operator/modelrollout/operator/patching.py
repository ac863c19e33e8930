"""JSON merge patches (RFC 7386) between two versions of a status."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def merge_patch(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """The smallest merge patch that turns ``old`` into ``new`` (empty: nothing changed).

    Keys that disappear are sent as ``None`` (delete); lists are replaced whole,
    as merge patches do; nested objects are patched key by key.
    """
    patch: dict[str, Any] = {}
    for key in old.keys() - new.keys():
        patch[key] = None
    for key, value in new.items():
        before = old.get(key)
        if isinstance(value, dict) and isinstance(before, dict):
            sub = merge_patch(before, value)
            if sub:
                patch[key] = sub
        elif value != before or key not in old:
            patch[key] = value
    return patch


def plain(x: Any) -> Any:
    """kopf hands out read-only views; the core wants plain dicts and lists."""
    if isinstance(x, Mapping):
        return {str(k): plain(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [plain(v) for v in x]
    return x
