"""The canonical row: one Arrow schema, defined here and nowhere else.

Every stage takes and returns tables with exactly this schema (``conform`` enforces it), every
shard is written with it, and ``schemas/row.schema.json`` is generated from it
(``python -m factory.schemas``).
"""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

STEP_TAGS = ("THOUGHT", "ACTION", "CHECK", "SUMMARY")
KINDS = ("qa", "conversation", "preference")
ROLES = ("system", "user", "assistant")


def _f(name: str, typ: pa.DataType, doc: str, nullable: bool = True) -> pa.Field:
    return pa.field(name, typ, nullable=nullable, metadata={"doc": doc})


MESSAGE = pa.struct([
    _f("role", pa.string(), "system | user | assistant"),
    _f("content", pa.string(), "turn text"),
])
CALL = pa.struct([
    _f("tool", pa.string(), "tool name, e.g. calculator"),
    _f("input", pa.string(), "what was sent to the tool, e.g. 48/2"),
    _f("output", pa.string(), "what the tool returned, e.g. 24"),
])
STEP = pa.struct([
    _f("tag", pa.string(), "THOUGHT | ACTION | CHECK | SUMMARY"),
    _f("text", pa.string(), "the step, as a reader sees it"),
    _f("depends_on", pa.list_(pa.int32()), "indices of earlier steps this step uses"),
    _f("calls", pa.list_(CALL), "structured tool calls made in this step (GSM8K <<a=b>>)"),
])
SUBQUESTION = pa.struct([
    _f("question", pa.string(), "the sub-question"),
    _f("answer", pa.string(), "its answer, where known"),
    _f("refs", pa.list_(pa.int32()), "indices of earlier sub-questions it refers to (#1 -> 0)"),
])
OPTION = pa.struct([
    _f("label", pa.string(), "option letter, e.g. A"),
    _f("text", pa.string(), "option text"),
])
SOURCE = pa.struct([
    _f("name", pa.string(), "source name in the recipe"),
    _f("path", pa.string(), "path or dataset name as written in the recipe"),
    _f("split", pa.string(), "split of the source that was read"),
    _f("row", pa.int64(), "0-based record index in the source"),
    _f("line", pa.int64(), "1-based line where the record starts (text formats)"),
    _f("license", pa.string(), "license of the source"),
])
TEACHER = pa.struct([
    _f("provider", pa.string(), "openai | anthropic | local"),
    _f("model", pa.string(), "model name"),
    _f("prompt_sha", pa.string(), "sha256 of the rendered prompt"),
    _f("input_tokens", pa.int64(), "prompt tokens"),
    _f("output_tokens", pa.int64(), "completion tokens"),
    _f("cost_usd", pa.float64(), "cost of the request (null: no price known for the model)"),
    _f("sample", pa.int32(), "which of the question's samples this is (0-based)"),
    _f("finish_reason", pa.string(), "stop | length (truncated) | the provider's value"),
    _f("request_key", pa.string(), "response-cache key: hash of everything sent"),
    _f("response", pa.string(), "the reply text as received, before parsing"),
    _f("reasoning", pa.string(), "native reasoning the provider returned (reasoning_content, thinking blocks, <think>)"),
])
RECIPE = pa.struct([
    _f("name", pa.string(), "recipe name"),
    _f("sha", pa.string(), "sha256 of the resolved recipe"),
])

ROW_SCHEMA = pa.schema([
    _f("id", pa.string(), "stable id: hash of source name + source row key", nullable=False),
    _f("domain", pa.string(), "domain tag: partitioning, balancing, prompt wording", nullable=False),
    _f("kind", pa.string(), "qa | conversation | preference", nullable=False),
    _f("split", pa.string(), "output split the row is written to", nullable=False),
    _f("source", SOURCE, "provenance of the raw row", nullable=False),
    _f("question", pa.string(), "the issue / prompt (conversation: the last user turn)"),
    _f("messages", pa.list_(MESSAGE), "conversation (preference: the shared prompt turns)"),
    _f("subquestions", pa.list_(SUBQUESTION), "the sub-question path"),
    _f("steps", pa.list_(STEP), "reasoning steps"),
    _f("answer", pa.string(), "final answer / output"),
    _f("gold_answer", pa.string(), "reference answer from the source"),
    _f("answer_correct", pa.bool_(), "answer matches gold_answer after normalisation"),
    _f("options", pa.list_(OPTION), "multiple-choice options"),
    _f("facts", pa.list_(pa.string()), "supporting facts from the source"),
    _f("chosen", pa.list_(MESSAGE), "preferred continuation of messages"),
    _f("rejected", pa.list_(MESSAGE), "dispreferred continuation of messages"),
    _f("trace_format", pa.string(), "which standardiser produced steps/answer", nullable=False),
    _f("teacher", TEACHER, "null when the trace came from the source"),
    _f("flags", pa.list_(pa.string()), "row-level warnings, e.g. truncated"),
    _f("meta", pa.string(), "JSON object of extra source fields kept by the recipe"),
    _f("parent_id", pa.string(), "derived rows: id of the row they were made from"),
    _f("cluster_id", pa.string(), "dedup: id of the row kept for this row's duplicate cluster (null: no dedup ran)"),
    _f("cluster_size", pa.int32(), "dedup: rows in the cluster, the removed ones included"),
    _f("kept", pa.bool_(), "dedup: true for the row kept from its cluster (removed rows are in quarantine)"),
    _f("recipe", RECIPE, "recipe that made the row", nullable=False),
])

COLUMNS = tuple(ROW_SCHEMA.names)


# Ids are 16 hex digits, stable across runs and machines, in two families:
# - a source keyed by a field (``id_field``): blake2b-64 of "<source>\x1f<key>";
# - a source keyed by record index: splitmix64(seed(source) XOR index), where seed(source) is
#   blake2b-64 of "<source>\x1f#". splitmix64 is a bijection on 64-bit integers, so ids within
#   such a source can never collide, and it is computed for a whole batch in numpy.

def make_id(source_name: str, key: str) -> str:
    """Id of a row keyed by an ``id_field`` value."""
    return hashlib.blake2b(f"{source_name}\x1f{key}".encode(), digest_size=8).hexdigest()


def make_ids(source_name: str, keys: list[str]) -> list[str]:
    """``make_id`` for many keys: the hash state of the shared prefix is computed once."""
    prefix = hashlib.blake2b(f"{source_name}\x1f".encode(), digest_size=8)
    out = []
    for key in keys:
        h = prefix.copy()
        h.update(key.encode())
        out.append(h.hexdigest())
    return out


def _seed(source_name: str) -> np.uint64:
    return np.uint64(int.from_bytes(hashlib.blake2b(f"{source_name}\x1f#".encode(), digest_size=8).digest(), "big"))


def make_row_ids(source_name: str, rows: np.ndarray) -> pa.Array:
    """Ids of rows keyed by their record index (vectorised; see above)."""
    with np.errstate(over="ignore"):
        z = np.asarray(rows, dtype=np.uint64) ^ _seed(source_name)
        z = z + np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    hexed = z.astype(">u8").tobytes().hex().encode()
    offsets = np.arange(0, 16 * len(z) + 1, 16, dtype=np.int32)
    return pa.StringArray.from_buffers(len(z), pa.py_buffer(offsets), pa.py_buffer(hexed))


def make_row_id(source_name: str, row: int) -> str:
    return make_row_ids(source_name, np.array([row]))[0].as_py()


def conform(df: pl.DataFrame) -> pa.Table:
    """Return ``df`` as an Arrow table with exactly ROW_SCHEMA: missing columns become null
    (lists: empty), extra columns are dropped, nested structs gain missing fields and take the
    canonical field order. Works on Arrow buffers: existing children are reused, not copied."""
    table = df.to_arrow()
    n = table.num_rows
    columns = []
    for f in ROW_SCHEMA:
        if f.name in table.column_names:
            columns.append(conform_array(table.column(f.name).combine_chunks(), f.type))
        else:
            columns.append(missing_array(f.type, n))
    return pa.Table.from_arrays(columns, schema=ROW_SCHEMA)


def missing_array(t: pa.DataType, n: int) -> pa.Array:
    """A column nobody filled: empty lists for list types, nulls otherwise."""
    if pa.types.is_list(t):
        return pa.ListArray.from_arrays(pa.array(np.zeros(n + 1, dtype=np.int32)), pa.array([], type=t.value_type), type=t)
    return pa.nulls(n, type=t)


def conform_array(arr: pa.Array, want: pa.DataType) -> pa.Array:
    have = arr.type
    if have == want:
        return arr
    if pa.types.is_null(have):
        return missing_array(want, len(arr))
    if pa.types.is_list(want) and (pa.types.is_list(have) or pa.types.is_large_list(have)):
        # Lists are never null in a canonical row (a missing list is an empty one): offsets are
        # rebuilt from the lengths, null lists counting 0, over the values of the others.
        lengths = pc.fill_null(pc.list_value_length(arr), 0).to_numpy(zero_copy_only=False)
        offsets = np.zeros(len(arr) + 1, dtype=np.int32)
        np.cumsum(lengths, out=offsets[1:])
        values = conform_array(arr.flatten(), want.value_type)
        return pa.ListArray.from_arrays(pa.array(offsets), values, type=want)
    if pa.types.is_struct(want) and pa.types.is_struct(have):
        present = {have.field(i).name: child for i, child in enumerate(arr.flatten())}
        children = [
            conform_array(present[f.name], f.type) if f.name in present else missing_array(f.type, len(arr))
            for f in want
        ]
        return pa.StructArray.from_arrays(children, fields=list(want), mask=arr.is_null() if arr.null_count else None)
    return arr.cast(want)


def empty_table() -> pa.Table:
    return ROW_SCHEMA.empty_table()


# ---- JSON Schema export ---------------------------------------------------------------------

def _json_type(t: pa.DataType) -> dict[str, Any]:
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        return {"type": "string"}
    if pa.types.is_integer(t):
        return {"type": "integer"}
    if pa.types.is_floating(t):
        return {"type": "number"}
    if pa.types.is_boolean(t):
        return {"type": "boolean"}
    if pa.types.is_list(t):
        return {"type": "array", "items": _json_type(t.value_type)}
    if pa.types.is_struct(t):
        return _json_object([t.field(i) for i in range(t.num_fields)])
    raise TypeError(f"no JSON type for {t}")


def _json_field(f: pa.Field) -> dict[str, Any]:
    spec = _json_type(f.type)
    if f.nullable:
        spec = {"anyOf": [spec, {"type": "null"}]}
    spec["description"] = f.metadata[b"doc"].decode() if f.metadata else ""
    spec["x-arrow-type"] = str(f.type)
    return spec


def _json_object(fields: list[pa.Field]) -> dict[str, Any]:
    return {
        "type": "object",
        "additionalProperties": False,
        "required": [f.name for f in fields],
        "properties": {f.name: _json_field(f) for f in fields},
    }


def row_json_schema() -> dict[str, Any]:
    schema = _json_object(list(ROW_SCHEMA))
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": "https://github.com/cot-factory/cot-factory/schemas/row.schema.json",
        "title": "CoT Factory canonical row",
        "description": "Generated from factory.rows.ROW_SCHEMA; do not edit by hand.",
        **schema,
    }
