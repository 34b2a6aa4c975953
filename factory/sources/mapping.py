"""Field mapping: raw records → typed Arrow columns of one row kind, by the recipe's ``fields``.

Mapping is column-wise: one list comprehension per field, converted by pyarrow in C. Only a
column that holds an unexpected value is walked element by element, to name the bad rows. A row
with a missing required field or a wrong type becomes a ``Reject`` naming the field, the path and
what was expected; the rest of the batch goes on. One mapper per ``kind``, registered by name.
"""

from __future__ import annotations

import re
from typing import Any, Callable

import numpy as np
import orjson
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

from factory.recipe.model import QASource, SourceBase
from factory.registry import Registry
from factory.sources.base import RawBatch, Reject
from factory.sources.fields import compile_parts, compile_path, parse_path

OPTION_TYPE = pa.list_(pa.struct([("label", pa.string()), ("text", pa.string())]))
MESSAGE_TYPE = pa.list_(pa.struct([("role", pa.string()), ("content", pa.string())]))
TEXT_LIST = pa.list_(pa.string())


class FieldProblem(Exception):
    pass


def type_name(v: Any) -> str:
    return {dict: "object", list: "array", str: "string", bool: "boolean", int: "number", float: "number"}.get(type(v), type(v).__name__)


def where(name: str, path: str | None) -> str:
    return f"'{name}'" + (f" (path '{path}')" if path and path != name else "")


class Problems:
    """The first problem of each row of a batch, by position in the batch."""

    def __init__(self) -> None:
        self.first: dict[int, str] = {}

    def add(self, i: int, reason: str) -> None:
        self.first.setdefault(i, reason)

    def add_where(self, mask: pa.Array | np.ndarray, reason: Callable[[int], str]) -> None:
        arr = mask.to_numpy(zero_copy_only=False) if isinstance(mask, (pa.Array, pa.ChunkedArray)) else mask
        for i in np.flatnonzero(arr):
            self.add(int(i), reason(int(i)))


def has_text(arr: pa.Array) -> pa.Array:
    """True where a string holds something other than whitespace (a scan, no trimmed copy)."""
    return pc.match_substring_regex(arr, r"\S")


def _is_text(t: pa.DataType) -> bool:
    return pa.types.is_string(t) or pa.types.is_large_string(t)


class Batch:
    """A raw batch seen column-wise. Arrow batches (readers' fast paths) are used as they are;
    Python records are read one list comprehension per field. Records that are not objects are
    rejected up front."""

    def __init__(self, batch: RawBatch):
        self.raw = batch
        self.problems = Problems()
        self.n = batch.good
        self.table = batch.table
        self._records: list[Any] | None = None
        if self.table is None:
            records = batch.get_records()
            if not all(type(r) is dict for r in records):
                records = list(records)
                for i, r in enumerate(records):
                    if type(r) is not dict:
                        self.problems.add(i, f"expected a record (JSON object), got {type_name(r)}")
                        records[i] = {}
            self._records = records

    @property
    def records(self) -> list[Any]:
        if self._records is None:
            self._records = self.raw.get_records()
        return self._records

    def arrow(self, path: str | None) -> pa.Array | None:
        """The column for a top-level ``path`` straight from an Arrow batch, else None."""
        if self.table is None or path is None:
            return None
        parts = parse_path(path)
        if len(parts) == 1 and parts[0] in self.table.column_names:
            return self.table.column(parts[0]).combine_chunks()
        return None

    def column(self, path: str | None) -> list[Any]:
        """Python values at ``path`` for every record (None where absent)."""
        if path is None:
            return [None] * self.n
        if self.table is None:
            get = compile_path(path)
            return [get(r) for r in self.records]
        parts = parse_path(path)
        if not isinstance(parts[0], str) or parts[0] not in self.table.column_names:
            return [None] * self.n
        values = self.table.column(parts[0]).to_pylist()
        if len(parts) == 1:
            return values
        rest = compile_parts(parts[1:])
        return [rest(v) for v in values]

    def text(self, name: str, path: str | None, *, required: bool = False, scalars: bool = False) -> pa.Array:
        """A string column; with ``scalars`` numbers and booleans become text (gold answers)."""
        arr = self.arrow(path)
        if arr is not None and _is_text(arr.type):
            arr = arr.cast(pa.string())
        else:
            values = self.column(path)
            try:
                arr = pa.array(values, type=pa.string())
            except (pa.ArrowTypeError, pa.ArrowInvalid):
                arr = pa.array([self._coerce_text(i, v, name, path, scalars) for i, v in enumerate(values)], type=pa.string())
        if required and path is not None:
            blank = pc.invert(pc.fill_null(has_text(arr), False))
            nulls = arr.is_null()
            self.problems.add_where(blank, lambda i: f"{'missing' if nulls[i].as_py() else 'empty'} field {where(name, path)}")
        return arr

    def _coerce_text(self, i: int, v: Any, name: str, path: str | None, scalars: bool) -> str | None:
        if v is None or type(v) is str:
            return v
        if scalars and isinstance(v, bool):
            return "yes" if v else "no"
        if scalars and isinstance(v, (int, float)):
            return str(v)
        self.problems.add(i, f"wrong type for {where(name, path)}: expected string, got {type_name(v)}")
        return None

    def text_list(self, name: str, path: str | None) -> pa.Array:
        arr = self.arrow(path)
        if arr is not None and (pa.types.is_list(arr.type) or pa.types.is_large_list(arr.type)) and _is_text(arr.type.value_type):
            return arr.cast(TEXT_LIST)
        values = self.column(path)
        # pa.array would read a bare string as a list of characters: check the shape first.
        if all(v is None or type(v) is list for v in values):
            try:
                return pa.array(values, type=TEXT_LIST)
            except (pa.ArrowTypeError, pa.ArrowInvalid):
                pass
        return pa.array([self._coerce_list(i, v, name, path) for i, v in enumerate(values)], type=TEXT_LIST)

    def _coerce_list(self, i: int, v: Any, name: str, path: str | None) -> list[str] | None:
        if isinstance(v, str) and v.lstrip().startswith("["):   # a JSON list inside a CSV cell
            try:
                v = orjson.loads(v)
            except orjson.JSONDecodeError:
                pass
        if v is None:
            return None
        if type(v) is not list:
            self.problems.add(i, f"wrong type for {where(name, path)}: expected a list of strings, got {type_name(v)}")
            return None
        out = []
        for j, item in enumerate(v):
            if type(item) is str:
                out.append(item)
            elif isinstance(item, (int, float)) and not isinstance(item, bool):
                out.append(str(item))
            else:
                self.problems.add(i, f"wrong type for {where(name, path)}[{j}]: expected string, got {type_name(item)}")
                return None
        return out

    def options(self, name: str, path: str | None) -> pa.Array:
        if path is None:
            return pa.nulls(self.n, type=OPTION_TYPE)
        out = []
        for i, v in enumerate(self.column(path)):
            if isinstance(v, dict):
                out.append([{"label": str(k), "text": str(t)} for k, t in v.items()])
            else:
                items = self._coerce_list(i, v, name, path)
                out.append(parse_options(items) if items is not None else None)
        return pa.array(out, type=OPTION_TYPE)

    def keys(self, spec: SourceBase) -> pa.Array:
        """The id key of each row: the ``id_field`` value; null when the record index is the key."""
        if spec.id_field is None:
            return pa.nulls(self.n, type=pa.string())
        arr = self.arrow(spec.id_field)
        if arr is not None and arr.null_count == 0 and (_is_text(arr.type) or pa.types.is_integer(arr.type)):
            return arr.cast(pa.string())
        out = []
        for i, v in enumerate(self.column(spec.id_field)):
            if v is None or isinstance(v, (dict, list)):
                self.problems.add(i, f"missing field {where('id_field', spec.id_field)}" if v is None else
                                  f"wrong type for {where('id_field', spec.id_field)}: expected a scalar, got {type_name(v)}")
                out.append(None)
            else:
                out.append(str(v))
        return pa.array(out, type=pa.string())

    def meta(self, spec: SourceBase) -> pa.Array:
        if not spec.keep:
            return pa.nulls(self.n, type=pa.string())
        columns = [(p, self.column(p)) for p in spec.keep]
        return pa.array([orjson.dumps({p: vals[i] for p, vals in columns}, option=orjson.OPT_SORT_KEYS, default=str).decode()
                         for i in range(self.n)], type=pa.string())

    def finish(self, spec: SourceBase, columns: dict[str, pa.Array]) -> tuple[pl.DataFrame, list[Reject]]:
        """Columns + provenance → a DataFrame of the good rows, and the rejects in file order."""
        columns = {
            "_row": pa.array(self.raw.rows, type=pa.int64()),
            "_line": pa.array(self.raw.lines, type=pa.int64()) if self.raw.lines is not None else pa.nulls(self.n, pa.int64()),
            "_key": self.keys(spec),
            "_meta": self.meta(spec),
            **columns,
        }
        df = pl.from_arrow(pa.table(columns))
        assert isinstance(df, pl.DataFrame)
        if not self.problems.first:
            return df, []
        bad = sorted(self.problems.first)
        keep = np.ones(self.n, dtype=bool)
        keep[bad] = False
        lines = self.raw.lines
        rejects = [Reject(int(self.raw.rows[i]), None if lines is None or lines[i] is None else int(lines[i]),
                          self.problems.first[i], self.raw.raw(i)) for i in bad]
        return df.filter(pl.Series(keep)), rejects


_OPTION = re.compile(r"^\s*\(?([A-Za-z])\s*[\).:]\s*(.*)$", re.S)


def parse_options(items: list[str]) -> list[dict[str, str]]:
    """['A)32400', …] → [{label: A, text: 32400}, …]; unlabelled options get A, B, C …"""
    parsed = [_OPTION.match(s) for s in items]
    if parsed and all(parsed):
        return [{"label": m.group(1).upper(), "text": m.group(2).strip()} for m in parsed]  # type: ignore[union-attr]
    return [{"label": chr(ord("A") + i), "text": s.strip()} for i, s in enumerate(items)]


def unescape(expr: pl.Expr) -> pl.Expr:
    """Literal two-character \\n sequences → newlines (Marco-o1 instructions carry them)."""
    return expr.str.replace_all(r"\n", "\n", literal=True)


Mapper = Callable[[SourceBase, RawBatch], tuple[pl.DataFrame, list[Reject]]]
MAPPERS: Registry[Mapper] = Registry("row kind")
register_mapper = MAPPERS.register


@register_mapper("qa")
def map_qa(spec: SourceBase, raw: RawBatch) -> tuple[pl.DataFrame, list[Reject]]:
    assert isinstance(spec, QASource)
    f = spec.fields
    b = Batch(raw)
    df, rejects = b.finish(spec, {
        "question": b.text("question", f.question, required=True),
        "context": b.text("context", f.context),
        "answer": b.text("answer", f.answer, scalars=True),
        "trace": b.text("trace", f.trace),
        "system": b.text("system", f.system),
        "options": b.options("options", f.options),
        "facts": b.text_list("facts", f.facts),
        "subquestions": b.text_list("subquestions", f.subquestions),
    })
    question = pl.col("question").str.strip_chars()
    if f.context is not None:
        context = pl.col("context").str.strip_chars()
        question = pl.when(context.is_not_null() & (context != "")).then(
            pl.concat_str(question, pl.lit("\n\n"), context)).otherwise(question)
    if spec.unescape_newlines:
        question = unescape(question)
    return df.with_columns(question=question).drop("context"), rejects
