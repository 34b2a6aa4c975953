"""Field paths: ``a.b[0].c`` into nested records. A missing step yields None, never raises."""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Any, Callable

_TOKEN = re.compile(r"([^.\[\]]+)|\[(-?\d+)\]")


def parse_path(path: str) -> tuple[str | int, ...]:
    parts: list[str | int] = []
    pos = 0
    for m in _TOKEN.finditer(path):
        between = path[pos:m.start()]
        if between not in ("", "."):
            raise ValueError(f"bad field path {path!r} at {between!r}")
        parts.append(m.group(1) if m.group(1) is not None else int(m.group(2)))
        pos = m.end()
    if pos != len(path) or not parts:
        raise ValueError(f"bad field path {path!r}")
    return tuple(parts)


@lru_cache(maxsize=None)
def compile_path(path: str) -> Callable[[Any], Any]:
    """A getter for ``path``. Plain keys take the fast route: one dict lookup."""
    return compile_parts(parse_path(path))


@lru_cache(maxsize=None)
def compile_parts(parts: tuple[str | int, ...]) -> Callable[[Any], Any]:
    if len(parts) == 1 and isinstance(parts[0], str):
        key = parts[0]

        def get_one(record: Any) -> Any:
            return record.get(key) if isinstance(record, dict) else None

        return get_one

    def get(record: Any) -> Any:
        node = record
        for part in parts:
            if isinstance(part, int):
                if not isinstance(node, list) or not -len(node) <= part < len(node):
                    return None
                node = node[part]
            else:
                if not isinstance(node, dict) or part not in node:
                    return None
                node = node[part]
        return node

    return get
