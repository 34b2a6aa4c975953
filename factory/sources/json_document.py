"""JSON documents: a top-level array of records, or an object holding the list under ``json_key``.

A well-formed array of objects goes through pyarrow.json (only the mapped keys), each element's
line found by a vectorised scan of the bytes; an
array with a syntax error or bad bytes is decoded one element at a time instead, so that the
records before the error are kept (the unreadable rest goes to quarantine whole) and only the
records holding bad bytes are rejected.
"""

from __future__ import annotations

import json
from typing import Any, Iterator

import numpy as np
import pyarrow as pa

from factory.errors import InputError
from factory.sources.base import (
    BATCH_RECORDS, RawBatch, Reader, Reject, decode, first_bad_byte, printable, read_bytes, register_reader,
)
from factory.sources.arrow_json import SAMPLE, loads_sample, needed_keys, read_objects, sample_schema
from factory.sources.fields import compile_path

_WS = " \t\r\n"


@register_reader("json")
class JsonDocumentReader(Reader):
    def batches(self) -> Iterator[RawBatch]:
        data = read_bytes(self.path)
        self.stats.bytes = len(data)
        if self.spec.json_key is None:
            fast = _fast_array(data, needed_keys(self.spec))
            if fast is not None:
                table, lines, text_of = fast
                for start in range(0, table.num_rows, BATCH_RECORDS):
                    end = min(start + BATCH_RECORDS, table.num_rows)
                    yield RawBatch(table=table.slice(start, end - start), rows=np.arange(start, end),
                                   lines=lines[start:end], raw_text=lambda i, s=start: text_of(s + i))
                return
        text, had_errors = decode(data)
        start = _skip_ws(text, 0)
        if self.spec.json_key is None and text.startswith("[", start):
            items = _array_items(text, start)
        else:
            items = self._keyed_items(text)
        batch = RawBatch()
        for row, (record, line, error) in enumerate(items):
            if error is not None:
                batch.rejects.append(Reject(row, line, error, printable(record)))
            else:
                bad = first_bad_byte(record) if had_errors else None
                if bad:
                    batch.rejects.append(Reject(row, line, bad, printable(json.dumps(record, ensure_ascii=False))))
                else:
                    batch.records.append(record)
                    batch.rows.append(row)
                    batch.lines.append(line)
            if len(batch) >= BATCH_RECORDS:
                yield batch
                batch = RawBatch()
        if len(batch):
            yield batch

    def _keyed_items(self, text: str) -> Iterator[tuple[Any, int | None, str | None]]:
        try:
            doc = json.loads(text)
        except json.JSONDecodeError as e:
            raise InputError(f"{self.path}:{e.lineno}: invalid JSON: {e.msg} (column {e.colno})") from None
        if not isinstance(doc, dict):
            raise InputError(f"{self.path}: expected a JSON array or object, got {type(doc).__name__}")
        if self.spec.json_key is None:
            lists = [k for k, v in doc.items() if isinstance(v, list)]
            raise InputError(
                f"{self.path}: the file is a JSON object; set json_key to the key that holds the records"
                + (f" (lists under: {', '.join(lists)})" if lists else "")
            )
        records = compile_path(self.spec.json_key)(doc)
        if not isinstance(records, list):
            raise InputError(f"{self.path}: json_key '{self.spec.json_key}' does not hold a list")
        for record in records:
            yield record, None, None


def _fast_array(data: bytes, keys: list[str]) -> tuple[pa.Table, np.ndarray, Any] | None:
    """A well-formed array of objects → (table of the mapped keys, line of each element, raw
    text getter); None for anything else (syntax error, bad bytes, non-object elements)."""
    layout = _array_layout(data)
    if layout is None:
        return None
    starts, ends, seps, outer = layout
    if len(starts) == 0:
        return None
    sample = loads_sample([data[a:e + 1] for a, e in zip(starts[:SAMPLE], ends[:SAMPLE])])
    schema = sample_schema(sample, keys) if sample is not None else None
    if schema is None:
        return None
    # The array becomes a stream of objects: its brackets and separating commas turn to spaces.
    stream = np.frombuffer(data, dtype=np.uint8).copy()
    stream[np.concatenate((seps, outer))] = 0x20
    table = read_objects(stream.tobytes(), schema, multiline=True)
    if table is None or table.num_rows != len(starts):
        return None
    newlines = np.flatnonzero(np.frombuffer(data, dtype=np.uint8) == 0x0A)
    lines = np.searchsorted(newlines, starts) + 1

    def text_of(i: int) -> str:
        return printable(data[starts[i]:ends[i] + 1].decode("utf-8", "surrogateescape"))

    return table, lines, text_of


def _array_layout(data: bytes):
    """Byte positions of the objects of a top-level JSON array, from a vectorised scan: quotes
    (minus escaped ones) delimit strings; braces outside strings give the object depth, so the
    separators are the commas between objects (square brackets inside records never matter).
    Returns (object starts, object ends, separating commas, outer brackets) or None when the
    document is not a plain array of objects."""
    b = np.frombuffer(data, dtype=np.uint8)
    quotes = np.flatnonzero(b == 0x22)
    # A byte is escaped when an odd-length run of backslashes ends right before it.
    slashes = np.flatnonzero(b == 0x5C)
    breaks = np.diff(slashes) > 1
    run_starts = slashes[np.concatenate(([True], breaks))] if slashes.size else slashes
    run_ends = slashes[np.concatenate((breaks, [True]))] + 1 if slashes.size else slashes
    escaped = run_ends[(run_ends - run_starts) % 2 == 1]
    if escaped.size:
        hit = np.searchsorted(escaped, quotes)
        hit_ok = hit < escaped.size
        is_escaped = np.zeros(quotes.size, dtype=bool)
        is_escaped[hit_ok] = escaped[hit[hit_ok]] == quotes[hit_ok]
        quotes = quotes[~is_escaped]
    if quotes.size % 2:
        return None
    outside = lambda pos: pos[np.searchsorted(quotes, pos) % 2 == 0]  # noqa: E731
    opens = outside(np.flatnonzero(b == 0x7B))      # {
    closes = outside(np.flatnonzero(b == 0x7D))     # }
    if opens.size != closes.size or opens.size == 0:
        return None
    pos = np.concatenate((opens, closes))
    delta = np.concatenate((np.ones(opens.size, np.int64), -np.ones(closes.size, np.int64)))
    order = np.argsort(pos, kind="stable")
    pos, delta = pos[order], delta[order]
    depth_after = np.cumsum(delta)
    if (depth_after < 0).any():
        return None
    starts = pos[(delta == 1) & (depth_after == 1)]
    ends = pos[(delta == -1) & (depth_after == 0)]
    # Between two objects only whitespace and one comma may stand; before the first, the
    # array's '['; after the last, its ']'. Anything else (scalars, nested top-level arrays)
    # takes the careful path.
    head = np.flatnonzero(~np.isin(b[: starts[0]], _WS_BYTES))
    tail = np.flatnonzero(~np.isin(b[ends[-1] + 1:], _WS_BYTES))
    if head.size != 1 or b[head[0]] != 0x5B or tail.size != 1 or b[ends[-1] + 1 + tail[0]] != 0x5D:
        return None
    first, last = int(head[0]), int(ends[-1] + 1 + tail[0])
    commas = outside(np.flatnonzero(b == 0x2C))
    between = np.searchsorted(pos, commas, side="right") - 1
    seps = commas[(between >= 0) & (depth_after[np.maximum(between, 0)] == 0)]
    if len(seps) != len(starts) - 1 or ((seps < ends[:-1]) | (seps > starts[1:])).any():
        return None
    return starts, ends, seps, np.array([first, last])


_WS_BYTES = np.array([0x20, 0x09, 0x0D, 0x0A], dtype=np.uint8)


def _skip_ws(text: str, i: int) -> int:
    n = len(text)
    while i < n and text[i] in _WS:
        i += 1
    return i


def _array_items(text: str, start: int) -> Iterator[tuple[Any, int | None, str | None]]:
    decoder = json.JSONDecoder()
    i = _skip_ws(text, start + 1)
    line, pos = 1, 0
    if i < len(text) and text[i] == "]":
        return
    while True:
        line += text.count("\n", pos, i)
        pos = i
        try:
            value, end = decoder.raw_decode(text, i)
        except json.JSONDecodeError as e:
            yield text[i:], line, f"invalid JSON: {e.msg} at line {e.lineno} column {e.colno}; the rest of the file from here could not be read"
            return
        yield value, line, None
        i = _skip_ws(text, end)
        if i < len(text) and text[i] == ",":
            i = _skip_ws(text, i + 1)
            continue
        if i < len(text) and text[i] == "]":
            return
        line += text.count("\n", pos, i)
        yield text[i:], line, "invalid JSON: expected ',' or ']' after an array element; the rest of the file from here could not be read"
        return
