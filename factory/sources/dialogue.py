"""Conversations and preference pairs: speakers mapped to system/user/assistant.

Three conversation layouts: fixed columns (``turns``, mapped column-wise), a list of turn
objects (``messages``) and a speaker-prefixed transcript (``transcript``), both parsed per record.
Preference pairs hold whole transcripts (hh-rlhf), message lists or bare completions; the longest
shared prefix of the two sides becomes the prompt.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Any, Callable

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

from factory.errors import InputError
from factory.recipe.model import ConversationSource, PreferenceSource, SourceBase
from factory.sources.base import RawBatch, Reject
from factory.sources.mapping import MESSAGE_TYPE, Batch, FieldProblem, has_text, register_mapper, type_name, unescape, where

Message = dict[str, str]
_CANONICAL = {"system": "system", "user": "user", "assistant": "assistant"}


class RoleMap:
    def __init__(self, roles: dict[str, str]):
        self.roles = {**_CANONICAL, **roles}
        self.folded = {k.casefold(): v for k, v in self.roles.items()}

    def get(self, speaker: Any) -> str | None:
        if isinstance(speaker, str):
            return self.roles.get(speaker) or self.folded.get(speaker.strip().casefold())
        return None

    def __call__(self, speaker: Any) -> str:
        role = self.get(speaker)
        if role is None:
            raise FieldProblem(f"unknown role {speaker!r} (map it under roles:; known: {', '.join(sorted(self.roles))})")
        return role


@lru_cache(maxsize=64)
def _speaker_pattern(speakers: tuple[str, ...]) -> re.Pattern[str]:
    names = "|".join(re.escape(s) for s in sorted(speakers, key=len, reverse=True))
    return re.compile(rf"(?:^|\n)[ \t]*({names})[ \t]*:[ \t]?")


def parse_transcript(text: str, roles: RoleMap, speakers: tuple[str, ...]) -> list[Message] | None:
    """'\\n\\nHuman: hi\\n\\nAssistant: hello' → messages; None when no speaker prefix is found."""
    marks = list(_speaker_pattern(speakers).finditer(text))
    if not marks:
        return None
    if text[: marks[0].start()].strip():
        raise FieldProblem(f"transcript has text before the first speaker: {text[:40]!r}")
    return [
        {"role": roles(m.group(1)), "content": text[m.end(): nxt.start() if nxt else len(text)].strip()}
        for m, nxt in zip(marks, marks[1:] + [None])
    ]


def _last(messages: list[Message], role: str) -> str | None:
    for m in reversed(messages):
        if m["role"] == role:
            return m["content"]
    return None


def _message_list(value: Any, roles: RoleMap, role_key: str, content_key: str, name: str) -> list[Message]:
    if not isinstance(value, list):
        raise FieldProblem(f"wrong type for '{name}': expected a list of messages, got {type_name(value)}")
    out = []
    for i, item in enumerate(value):
        if not isinstance(item, dict) or role_key not in item or content_key not in item:
            raise FieldProblem(f"'{name}'[{i}]: expected an object with '{role_key}' and '{content_key}'")
        content = item[content_key]
        if not isinstance(content, str):
            raise FieldProblem(f"wrong type for '{name}'[{i}].{content_key}: expected string, got {type_name(content)}")
        out.append({"role": roles(item[role_key]), "content": content.strip()})
    return out


def _text(value: Any, name: str, path: str) -> str:
    if value is None:
        raise FieldProblem(f"missing field {where(name, path)}")
    if not isinstance(value, str):
        raise FieldProblem(f"wrong type for {where(name, path)}: expected string, got {type_name(value)}")
    return value


def _per_record(spec: SourceBase, raw: RawBatch, build: Callable[[dict[str, Any]], dict[str, Any]]) -> tuple[pl.DataFrame, list[Reject]]:
    """Map record by record (nested layouts); columns still become Arrow arrays in one go."""
    b = Batch(raw)
    cols: dict[str, list[Any]] = {"question": [], "answer": [], "messages": [], "chosen": [], "rejected": []}
    for i, record in enumerate(b.records):
        values: dict[str, Any] = {}
        if i not in b.problems.first:
            try:
                values = build(record)
            except FieldProblem as e:
                b.problems.add(i, str(e))
        for name, col in cols.items():
            col.append(values.get(name))
    return b.finish(spec, {
        "question": pa.array(cols["question"], type=pa.string()),
        "answer": pa.array(cols["answer"], type=pa.string()),
        "messages": pa.array(cols["messages"], type=MESSAGE_TYPE),
        "chosen": pa.array(cols["chosen"], type=MESSAGE_TYPE),
        "rejected": pa.array(cols["rejected"], type=MESSAGE_TYPE),
    })


@register_mapper("conversation")
def map_conversation(spec: SourceBase, raw: RawBatch) -> tuple[pl.DataFrame, list[Reject]]:
    assert isinstance(spec, ConversationSource)
    if spec.fields.turns:
        df, rejects = _map_turns(spec, raw)
    else:
        df, rejects = _per_record(spec, raw, _conversation_builder(spec))
    if spec.unescape_newlines:
        df = df.with_columns(
            messages=pl.col("messages").list.eval(pl.struct(role=pl.element().struct.field("role"),
                                                            content=unescape(pl.element().struct.field("content")))),
            question=unescape(pl.col("question")), answer=unescape(pl.col("answer")),
        )
    return df, rejects


def _map_turns(spec: ConversationSource, raw: RawBatch) -> tuple[pl.DataFrame, list[Reject]]:
    """Fixed columns → messages, column-wise: each turn's parts joined by a blank line."""
    roles = RoleMap(spec.roles)
    turns = spec.fields.turns or []
    mapped = [roles.get(t.role) for t in turns]
    if None in mapped or "user" not in mapped or "assistant" not in mapped:
        raise InputError(f"source '{spec.name}': turns need roles that map to a user and an assistant turn "
                         f"(roles: {', '.join(sorted(roles.roles))}; turns: {', '.join(t.role for t in turns)})")
    b = Batch(raw)
    columns: dict[str, pa.Array] = {}
    for k, turn in enumerate(turns):
        paths = [turn.content] if isinstance(turn.content, str) else turn.content
        for j, path in enumerate(paths):
            columns[f"_t{k}_{j}"] = b.text(f"turns[{k}].content", path)
    columns["system"] = b.text("system", spec.fields.system)
    # A turn with no text in any of its columns is a missing field, reported before filtering.
    for k, turn in enumerate(turns):
        paths = [turn.content] if isinstance(turn.content, str) else turn.content
        parts = [columns[f"_t{k}_{j}"] for j in range(len(paths))]
        has = None
        for arr in parts:
            filled = pc.fill_null(has_text(arr), False)
            has = filled if has is None else pc.or_(has, filled)
        b.problems.add_where(pc.invert(has), lambda i, k=k, p=paths: f"missing field {where(f'turns[{k}].content', p[0])}")
    df, rejects = b.finish(spec, columns)
    # Each turn's text is computed once into a column, then the messages are assembled from
    # the columns (polars would otherwise evaluate the strip/concat again per use).
    turn_cols = {}
    for k, turn in enumerate(turns):
        parts = [c for c in df.columns if c.startswith(f"_t{k}_")]
        cleaned = [pl.when(pl.col(c).str.contains(r"\S")).then(pl.col(c).str.strip_chars()) for c in parts]
        turn_cols[f"_turn{k}"] = cleaned[0] if len(cleaned) == 1 else pl.concat_str(cleaned, separator="\n\n", ignore_nulls=True)
    df = df.with_columns(**turn_cols)
    system = None
    if spec.fields.system:
        system = df.select(pl.when(pl.col("system").str.contains(r"\S")).then(pl.col("system").str.strip_chars()))
        system = system.to_series().to_arrow()
    messages = fixed_turn_messages([df[f"_turn{k}"].to_arrow() for k in range(len(turns))], mapped, system)
    last_user = max(i for i, r in enumerate(mapped) if r == "user")
    answer = pl.col(f"_turn{len(turns) - 1}") if mapped[-1] == "assistant" else pl.lit(None, dtype=pl.String)
    return df.select(
        "_row", "_line", "_key", "_meta", question=pl.col(f"_turn{last_user}"), answer=answer,
    ).with_columns(messages=pl.Series(messages)), rejects


def fixed_turn_messages(contents: list[pa.Array], roles: list[str], system: pa.Array | None) -> pa.Array:
    """Messages of conversations with the same turns in every row, built on Arrow buffers: the
    turn columns are interleaved with one take (polars' concat_list of structs was the slowest
    step of a counsel-chat run). A system turn is included where that row has one."""
    cols = ([system] if system is not None else []) + contents
    names = (["system"] if system is not None else []) + roles
    n, t = len(contents[0]), len(cols)
    keep = np.ones((n, t), dtype=bool)
    if system is not None:
        keep[:, 0] = system.is_valid().to_numpy(zero_copy_only=False)
    flat = pa.concat_arrays([c.combine_chunks() if isinstance(c, pa.ChunkedArray) else c for c in cols]).cast(pa.string())
    index = (np.arange(t)[None, :] * n + np.arange(n)[:, None])[keep]      # row-major, kept turns
    offsets = np.zeros(n + 1, dtype=np.int32)
    np.cumsum(keep.sum(axis=1), out=offsets[1:])
    role = pa.array(names, type=pa.string()).take(pa.array(np.tile(np.arange(t), (n, 1))[keep]))
    values = pa.StructArray.from_arrays([role, flat.take(pa.array(index))], names=["role", "content"])
    return pa.ListArray.from_arrays(pa.array(offsets), values)


def _conversation_builder(spec: ConversationSource) -> Callable[[dict[str, Any]], dict[str, Any]]:
    from factory.sources.fields import compile_path

    f = spec.fields
    roles = RoleMap(spec.roles)
    speakers = tuple(roles.roles)
    get_messages = compile_path(f.messages) if f.messages else None
    get_transcript = compile_path(f.transcript) if f.transcript else None
    get_system = compile_path(f.system) if f.system else None

    def build(record: dict[str, Any]) -> dict[str, Any]:
        if get_messages is not None:
            value = get_messages(record)
            if value is None:
                raise FieldProblem(f"missing field {where('messages', f.messages)}")
            msgs = _message_list(value, roles, f.role_key, f.content_key, "messages")
        else:
            assert get_transcript is not None and f.transcript is not None
            msgs = parse_transcript(_text(get_transcript(record), "transcript", f.transcript), roles, speakers)
            if msgs is None:
                raise FieldProblem(f"transcript has no speaker prefix (expected one of: {', '.join(speakers)})")
        sys_text = get_system(record) if get_system else None
        if isinstance(sys_text, str) and sys_text.strip():
            msgs = [{"role": "system", "content": sys_text.strip()}] + msgs
        user = _last(msgs, "user")
        if user is None or _last(msgs, "assistant") is None:
            raise FieldProblem("a conversation needs at least one user and one assistant turn")
        final = msgs[-1]["content"] if msgs[-1]["role"] == "assistant" else None
        return {"question": user, "answer": final, "messages": msgs}

    return build


@register_mapper("preference")
def map_preference(spec: SourceBase, raw: RawBatch) -> tuple[pl.DataFrame, list[Reject]]:
    assert isinstance(spec, PreferenceSource)
    from factory.sources.fields import compile_path

    f = spec.fields
    roles = RoleMap(spec.roles)
    speakers = tuple(spec.roles)
    getters = {"chosen": compile_path(f.chosen), "rejected": compile_path(f.rejected)}
    get_prompt = compile_path(f.prompt) if f.prompt else None

    def side(name: str, path: str, record: dict[str, Any]) -> list[Message]:
        value = getters[name](record)
        if isinstance(value, list):
            return _message_list(value, roles, "role", "content", name)
        text = _text(value, name, path)
        if not text.strip():
            raise FieldProblem(f"empty field {where(name, path)}")
        parsed = parse_transcript(text, roles, speakers)
        return parsed if parsed is not None else [{"role": "assistant", "content": text.strip()}]

    def build(record: dict[str, Any]) -> dict[str, Any]:
        chosen, rejected = side("chosen", f.chosen, record), side("rejected", f.rejected, record)
        prompt: list[Message] = []
        if get_prompt is not None and f.prompt is not None:
            value = get_prompt(record)
            if isinstance(value, list):
                prompt = _message_list(value, roles, "role", "content", "prompt")
            else:
                text = _text(value, "prompt", f.prompt)
                prompt = parse_transcript(text, roles, speakers) or [{"role": "user", "content": text.strip()}]
        # Whatever the layout, the prompt is the longest shared prefix (an explicit prompt included).
        full_c, full_r = _with_prompt(prompt, chosen), _with_prompt(prompt, rejected)
        if full_c == full_r:
            raise FieldProblem("chosen and rejected are identical")
        n = 0
        while n < min(len(full_c), len(full_r)) and full_c[n] == full_r[n]:
            n += 1
        if n == 0:
            raise FieldProblem("chosen and rejected share no prompt (give fields.prompt)")
        shared = full_c[:n]
        question = _last(shared, "user")
        if question is None:
            raise FieldProblem("the shared prompt has no user turn")
        return {"question": question, "messages": shared, "chosen": full_c[n:], "rejected": full_r[n:]}

    return _per_record(spec, raw, build)


def _with_prompt(prompt: list[Message], side: list[Message]) -> list[Message]:
    """Prefix ``side`` with ``prompt`` unless it already starts with it (full transcripts)."""
    if prompt and side[: len(prompt)] != prompt:
        return prompt + side
    return side
