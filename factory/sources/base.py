"""Reader interface: a source file → batches of raw records, each with its row and line number.

A reader never raises for one bad record: it hands the record back as a ``Reject`` with the
reason, and goes on. It raises ``InputError`` only when the source as a whole cannot be read.
"""

from __future__ import annotations

import gzip
import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar, Iterator, Sequence

import pyarrow as pa

from factory.registry import Registry

from factory.errors import InputError
from factory.recipe.model import SourceBase

BATCH_RECORDS = 65536
GZIP_MAGIC = b"\x1f\x8b"


@dataclass(slots=True)
class Reject:
    """A record (or line) that could not become a row, with everything needed to find it."""

    row: int | None
    line: int | None
    reason: str
    raw: str


@dataclass
class RawBatch:
    """Good records of one batch, either as Python objects (``records``) or as an Arrow table
    (``table``, from a reader's fast path), plus the rejects of the same stretch of the file."""

    records: list[Any] | None = None
    rows: Sequence[int] = field(default_factory=list)          # 0-based record index (list or numpy)
    lines: Sequence[int | None] | None = field(default_factory=list)   # None: the format has no lines
    rejects: list[Reject] = field(default_factory=list)
    table: pa.Table | None = None
    raw_text: Callable[[int], str] | None = None    # original text of good record i, when known

    def __post_init__(self) -> None:
        if self.records is None and self.table is None:
            self.records = []

    def __len__(self) -> int:
        return len(self.rows) + len(self.rejects)

    @property
    def good(self) -> int:
        return len(self.rows)

    def get_records(self) -> list[Any]:
        if self.records is None:
            assert self.table is not None
            self.records = self.table.to_pylist()
        return self.records

    def raw(self, i: int) -> str:
        if self.raw_text is not None:
            return self.raw_text(i)
        import orjson

        return printable(orjson.dumps(self.get_records()[i], default=str).decode())


@dataclass
class ReadStats:
    records: int = 0          # records seen (good + rejected)
    blank_lines: int = 0      # empty lines skipped in line-oriented formats
    bytes: int = 0


class Reader:
    """Base class: subclasses implement ``batches``; ``read`` applies the recipe's ``limit``."""

    format: ClassVar[str]

    def __init__(self, spec: SourceBase, path: Path):
        self.spec = spec
        self.path = path
        self.stats = ReadStats()

    def batches(self) -> Iterator[RawBatch]:
        raise NotImplementedError

    def read(self, limit: int | None = None) -> Iterator[RawBatch]:
        remaining = limit
        for batch in self.batches():
            if remaining is not None and len(batch) > remaining:
                batch = _truncate(batch, remaining)
            self.stats.records += len(batch)
            yield batch
            if remaining is not None:
                remaining -= len(batch)
                if remaining <= 0:
                    return


def _truncate(batch: RawBatch, n: int) -> RawBatch:
    """Keep the first ``n`` records of the batch in file order, good or rejected."""
    if not batch.rejects:
        return RawBatch(
            records=batch.records[:n] if batch.records is not None else None,
            rows=batch.rows[:n], lines=batch.lines[:n] if batch.lines is not None else None,
            table=batch.table.slice(0, n) if batch.table is not None else None, raw_text=batch.raw_text,
        )
    records = batch.get_records()
    items = [(r, "ok", i) for i, r in enumerate(batch.rows)] + [(j.row, "rej", i) for i, j in enumerate(batch.rejects)]
    items.sort(key=lambda t: (t[0] if t[0] is not None else -1))
    keep = items[:n]
    ok = sorted(i for _, what, i in keep if what == "ok")
    rej = sorted(i for _, what, i in keep if what == "rej")
    return RawBatch(
        records=[records[i] for i in ok],
        rows=[batch.rows[i] for i in ok],
        lines=[batch.lines[i] for i in ok] if batch.lines is not None else None,
        rejects=[batch.rejects[i] for i in rej],
        raw_text=(lambda i, f=batch.raw_text, ok=ok: f(ok[i])) if batch.raw_text else None,
    )


READERS: Registry[type[Reader]] = Registry("reader format", name_attr="format")
register_reader = READERS.register


def is_gzip(path: Path) -> bool:
    with open(path, "rb") as f:
        return f.read(2) == GZIP_MAGIC


def open_binary(path: Path) -> io.BufferedIOBase:
    """Open a file for reading bytes, looking through gzip whatever the file is called."""
    try:
        return gzip.open(path, "rb") if is_gzip(path) else open(path, "rb")  # type: ignore[return-value]
    except OSError as e:
        raise InputError(f"{path}: cannot open: {e.strerror or e}") from None


UTF8_BOM = b"\xef\xbb\xbf"


def read_bytes(path: Path) -> bytes:
    """The whole file (gzip looked through), without a UTF-8 byte-order mark (Excel writes one)."""
    with open_binary(path) as f:
        try:
            data = f.read()
        except (OSError, EOFError) as e:  # truncated / corrupt gzip
            raise InputError(f"{path}: cannot read: {e}") from None
    return data[3:] if data.startswith(UTF8_BOM) else data


def decode(data: bytes) -> tuple[str, bool]:
    """UTF-8 text of ``data``; bad bytes survive as lone surrogates so that only the records
    holding them are rejected. Returns (text, had_errors)."""
    try:
        return data.decode("utf-8"), False
    except UnicodeDecodeError:
        return data.decode("utf-8", "surrogateescape"), True


def first_bad_byte(value: Any) -> str | None:
    """Describe the first undecodable byte inside a record decoded with surrogateescape."""
    if isinstance(value, str):
        for i, ch in enumerate(value):
            if "\udc80" <= ch <= "\udcff":
                return f"invalid UTF-8 byte 0x{ord(ch) - 0xDC00:02x} at character {i}"
        return None
    if isinstance(value, dict):
        for k, v in value.items():
            found = first_bad_byte(k) or first_bad_byte(v)
            if found:
                return found
    elif isinstance(value, list):
        for v in value:
            found = first_bad_byte(v)
            if found:
                return found
    return None


def printable(text: str) -> str:
    """Raw text safe to store: undecodable bytes written as \\xNN escapes."""
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def sniff_format(path: Path) -> str:
    """Pick a reader for ``path`` from its name (``.gz`` looked through) and, for ``.json``,
    its content: AQuA-RAT ships JSON Lines under a ``.json`` name."""
    if path.is_dir():
        return "hf"
    name = path.name.lower()
    if name.endswith(".gz"):
        name = name[:-3]
    suffix = Path(name).suffix
    if suffix in (".jsonl", ".ndjson"):
        return "jsonl"
    if suffix in (".csv", ".tsv"):
        return "csv"
    if suffix in (".parquet", ".pq"):
        return "parquet"
    if suffix == ".json":
        return "jsonl" if _looks_like_jsonl(path) else "json"
    raise InputError(f"{path}: cannot tell the format from the name; set format: jsonl | json | csv | parquet | hf")


def _looks_like_jsonl(path: Path) -> bool:
    import orjson

    with open_binary(path) as f:
        head = f.read(1 << 20)
    stripped = head.lstrip()
    if not stripped.startswith(b"{"):
        return False
    first, sep, rest = stripped.partition(b"\n")
    if not sep or not rest.strip():
        return False
    try:
        orjson.loads(first)
    except orjson.JSONDecodeError:
        return False
    return rest.lstrip().startswith(b"{")
