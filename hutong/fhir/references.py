"""Finding the Reference elements inside a resource (references.html)."""

from __future__ import annotations

from typing import Any


def reference_holders(node: Any) -> list[dict[str, Any]]:
    """Every object in ``node`` (at any depth) with a string ``reference``: the
    Reference elements, which callers may read or rewrite in place."""
    out: list[dict[str, Any]] = []
    stack = [node]
    while stack:
        n = stack.pop()
        if isinstance(n, dict):
            if isinstance(n.get("reference"), str):
                out.append(n)
            stack.extend(v for v in n.values() if isinstance(v, dict | list))
        elif isinstance(n, list):
            stack.extend(x for x in n if isinstance(x, dict | list))
    return out
