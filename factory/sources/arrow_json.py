"""The fast path for JSON: pyarrow.json parses only the top-level keys a recipe maps, with types
taken from a sample of records, into an Arrow table. Any surprise (a type that changes, a syntax
error, a record that is not an object) makes it return None and the caller decodes that stretch
of the file record by record instead, so the fast path never changes what a row becomes."""

from __future__ import annotations

import io
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.json as pajson

from factory.recipe.model import SourceBase
from factory.sources.fields import parse_path

SAMPLE = 256


def needed_keys(spec: SourceBase) -> list[str]:
    keys: list[str] = []
    for path in spec.field_paths():
        first = parse_path(path)[0]
        if isinstance(first, str) and first not in keys:
            keys.append(first)
    return keys


def _has_null_type(t: pa.DataType) -> bool:
    if pa.types.is_null(t):
        return True
    if pa.types.is_list(t) or pa.types.is_large_list(t):
        return _has_null_type(t.value_type)
    if pa.types.is_struct(t):
        return any(_has_null_type(t.field(i).type) for i in range(t.num_fields))
    return False


def sample_schema(sample: list[Any], keys: list[str]) -> pa.Schema | None:
    """Arrow types of ``keys`` as the sample shows them; None when a type is unclear."""
    if not sample or not all(type(r) is dict for r in sample):
        return None
    fields = []
    for key in keys:
        values = [r[key] for r in sample if r.get(key) is not None]
        if not values:
            fields.append(pa.field(key, pa.string()))   # unseen: a later non-string falls back
            continue
        try:
            t = pa.array(values).type
        except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):
            return None
        if _has_null_type(t) or pa.types.is_struct(t) and t.num_fields == 0:
            return None
        fields.append(pa.field(key, t))
    return pa.schema(fields)


def read_objects(data: bytes, schema: pa.Schema, *, multiline: bool) -> pa.Table | None:
    """Whitespace-separated JSON objects → a table with exactly ``schema``'s columns."""
    try:
        return pajson.read_json(
            io.BytesIO(data),
            # Blocks are parsed in parallel; one object must fit in a block (a bigger one raises,
            # and the caller takes the careful path), and pretty-printed objects are larger.
            read_options=pajson.ReadOptions(block_size=(16 << 20) if multiline else (2 << 20)),
            parse_options=pajson.ParseOptions(explicit_schema=schema, unexpected_field_behavior="ignore",
                                              newlines_in_values=multiline),
        )
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
        return None


def loads_sample(chunks: list[bytes]) -> list[Any] | None:
    try:
        return [orjson.loads(c) for c in chunks]
    except orjson.JSONDecodeError:
        return None
