"""JSON Lines (plain or gzipped): one record per line; a bad line is that line's problem.

The file is read in blocks of whole lines. A clean block goes through pyarrow.json (the fast
path, columnar); a block with any bad line is decoded line by line with orjson, so the bad lines
are rejected with their numbers and reasons and every other line still becomes a row.
"""

from __future__ import annotations

from typing import IO, Iterator

import numpy as np
import orjson

from factory.sources.arrow_json import SAMPLE, loads_sample, needed_keys, read_objects, sample_schema
from factory.sources.base import BATCH_RECORDS, UTF8_BOM, RawBatch, Reader, Reject, open_binary, printable, register_reader

BLOCK_BYTES = 16 << 20
_WS = np.array([0x20, 0x09, 0x0D, 0x0A], dtype=np.uint8)


@register_reader("jsonl")
class JsonlReader(Reader):
    def batches(self) -> Iterator[RawBatch]:
        keys = needed_keys(self.spec)
        row, line_base = 0, 0
        with open_binary(self.path) as f:
            for block in _blocks(f):
                self.stats.bytes += len(block)
                fast = _fast_block(block, keys)
                if fast is not None:
                    table, content_lines, text_of, blank = fast
                    self.stats.blank_lines += blank
                    for start in range(0, table.num_rows, BATCH_RECORDS):
                        n = min(BATCH_RECORDS, table.num_rows - start)
                        yield RawBatch(
                            table=table.slice(start, n),
                            rows=np.arange(row + start, row + start + n),
                            lines=line_base + content_lines[start:start + n],
                            raw_text=lambda i, s=start: text_of(s + i),
                        )
                    row += table.num_rows
                else:
                    for batch in self._careful(block, row, line_base):
                        row += len(batch)
                        yield batch
                line_base += block.count(b"\n") + (0 if block.endswith(b"\n") else 1)

    def _careful(self, block: bytes, row: int, line_base: int) -> Iterator[RawBatch]:
        batch = RawBatch()
        loads = orjson.loads
        for lineno, line in enumerate(block.split(b"\n"), start=line_base + 1):
            if not line.strip():
                if lineno - line_base <= block.count(b"\n"):   # the split after a final newline is not a line
                    self.stats.blank_lines += 1
                continue
            try:
                batch.records.append(loads(line))
                batch.rows.append(row)
                batch.lines.append(lineno)
            except orjson.JSONDecodeError as e:
                batch.rejects.append(Reject(row, lineno, _reason(line, e), printable(line.decode("utf-8", "surrogateescape").rstrip("\r"))))
            row += 1
            if len(batch) >= BATCH_RECORDS:
                yield batch
                batch = RawBatch()
        if len(batch):
            yield batch


def _blocks(f: IO[bytes]) -> Iterator[bytes]:
    """Blocks of whole lines, about BLOCK_BYTES each."""
    carry = b""
    first = True
    while True:
        chunk = f.read(BLOCK_BYTES)
        if first and chunk.startswith(UTF8_BOM):
            chunk = chunk[3:]
        first = False
        if not chunk:
            if carry:
                yield carry
            return
        data = carry + chunk
        cut = data.rfind(b"\n")
        if cut < 0:
            carry = data
            continue
        carry = data[cut + 1:]
        yield data[: cut + 1]


def _fast_block(block: bytes, keys: list[str]):
    """(table, 1-based line of each record within the block, raw text getter, blank lines)."""
    b = np.frombuffer(block, dtype=np.uint8)
    newlines = np.flatnonzero(b == 0x0A)
    starts = np.concatenate(([0], newlines + 1))
    ends = np.concatenate((newlines, [len(b)]))
    if starts[-1] == len(b):            # the block ends with a newline: no line after it
        starts, ends = starts[:-1], ends[:-1]
    if len(starts) == 0:
        return None
    # A line has content when its first byte is not whitespace; the rare line that starts with
    # whitespace is looked at whole. Work per line, not per byte.
    nonempty = ends > starts
    first = np.full(len(starts), 0x0A, dtype=np.uint8)
    first[nonempty] = b[starts[nonempty]]
    has = ~np.isin(first, _WS)
    for j in np.flatnonzero(nonempty & ~has).tolist():
        has[j] = bool(block[starts[j]:ends[j]].strip())
    content = np.flatnonzero(has)
    if len(content) == 0:
        return None
    sample = loads_sample([block[starts[i]:ends[i]] for i in content[:SAMPLE]])
    schema = sample_schema(sample, keys) if sample is not None else None
    if schema is None:
        return None
    table = read_objects(block, schema, multiline=False)
    if table is None or table.num_rows != len(content):
        return None

    def text_of(i: int) -> str:
        j = content[i]
        return printable(block[starts[j]:ends[j]].decode("utf-8", "surrogateescape").rstrip("\r"))

    return table, content + 1, text_of, int(len(starts) - len(content))


def _reason(line: bytes, err: orjson.JSONDecodeError) -> str:
    try:
        line.decode("utf-8")
    except UnicodeDecodeError as e:
        return f"invalid UTF-8 byte 0x{line[e.start]:02x} at byte {e.start}"
    return f"invalid JSON: {err.msg} at column {err.colno}"
