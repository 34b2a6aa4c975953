"""The recipe model (pydantic v2). ``schemas/recipe.schema.json`` is generated from it.

Every model forbids unknown keys: a typo is an error, never a silently ignored setting.
Field paths in ``fields`` are dotted paths into a source record with list indexing,
e.g. ``instances[0].output``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal, Union

from pydantic import Discriminator, Field, Tag, field_validator, model_validator

from factory.recipe.base import Strict
from factory.recipe.generation import DPOExport, Export, Prices, SelectorExport, SFTExport, TeacherOptions  # noqa: F401 (re-exported)
from factory.rows import ROLES

NAME_PATTERN = r"^[a-z0-9][a-z0-9_.-]*$"
DOMAIN_PATTERN = r"^[a-z0-9][a-z0-9_-]*$"
# The dataset card's catch-all config is called this, so no domain may take the name.
RESERVED_DOMAINS = ("default",)

Role = Literal["system", "user", "assistant"]
FieldPath = Annotated[str, Field(min_length=1, description="dotted path into the record, e.g. a.b[0].c")]




# ---- field mappings, one per row kind --------------------------------------------------------

class QAFields(Strict):
    """Where a question–answer row's parts live in a source record."""

    question: FieldPath = Field(description="the question / instruction")
    context: FieldPath | None = Field(None, description="input / context appended to the question after a blank line")
    answer: FieldPath | None = Field(None, description="gold answer (or the whole solution for gsm8k/thought/think)")
    trace: FieldPath | None = Field(None, description="existing reasoning text (rationale, <Thought>, <think>, gsm8k solution)")
    options: FieldPath | None = Field(None, description="multiple-choice options: list of 'A)text' strings or {label: text}")
    facts: FieldPath | None = Field(None, description="list of supporting facts")
    subquestions: FieldPath | None = Field(None, description="list of sub-questions (decomposition)")
    system: FieldPath | None = Field(None, description="system prompt")


class Turn(Strict):
    """One turn of a conversation assembled from record columns."""

    role: str = Field(description="speaker as named in the source; mapped through `roles`")
    content: FieldPath | list[FieldPath] = Field(description="field path, or paths joined by a blank line")


class ConversationFields(Strict):
    """A conversation comes from exactly one of: a list of turn objects (`messages`), fixed
    columns (`turns`), or a transcript string with speaker prefixes (`transcript`)."""

    messages: FieldPath | None = Field(None, description="path to a list of {role, content} objects")
    role_key: str = Field("role", description="role key inside each message object (ShareGPT: from)")
    content_key: str = Field("content", description="content key inside each message object (ShareGPT: value)")
    turns: list[Turn] | None = Field(None, min_length=1, description="turns built from record columns")
    transcript: FieldPath | None = Field(None, description="'Speaker: text' transcript; speakers are the keys of `roles`")
    system: FieldPath | None = Field(None, description="system prompt")

    @model_validator(mode="after")
    def _one_layout(self) -> "ConversationFields":
        given = [k for k in ("messages", "turns", "transcript") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(
                "give exactly one of messages, turns, transcript"
                + (f" (got {', '.join(given)})" if given else "")
            )
        return self


class PreferenceFields(Strict):
    """A preference pair: transcripts (hh-rlhf style) or message lists or plain strings."""

    chosen: FieldPath = Field(description="preferred transcript / messages / completion")
    rejected: FieldPath = Field(description="dispreferred transcript / messages / completion")
    prompt: FieldPath | None = Field(None, description="prompt, when chosen/rejected hold only completions")


# ---- sources -------------------------------------------------------------------------------

class HFOptions(Strict):
    config: str | None = Field(None, description="dataset configuration name")
    data_files: str | list[str] | None = Field(None, description="data_files passed to load_dataset")
    revision: str | None = Field(None, description="hub revision (commit, tag or branch)")


class TraceOptions(Strict):
    calculator: Literal["action", "strip", "inline"] = Field(
        "action",
        description="gsm8k <<a=b>> annotations: structured calculator ACTION steps, stripped, or left inline",
    )
    aqua_answer: Literal["text", "letter"] = Field(
        "text", description="aqua: answer as the correct option's text, or its letter"
    )


class SourceBase(Strict):
    name: str = Field(pattern=NAME_PATTERN, description="unique source name; part of every row id")
    path: str = Field(min_length=1, description="file or directory (relative to the recipe file), or a hub dataset name for format hf")
    format: Literal["auto", "jsonl", "json", "csv", "parquet", "hf"] = Field(
        "auto", description="auto: by extension (.gz is looked through) and content"
    )
    json_key: str | None = Field(None, description="json: the key holding the list of records when the file is an object")
    csv_delimiter: str = Field(",", min_length=1, max_length=1, description="csv: field delimiter")
    hf: HFOptions = Field(default_factory=HFOptions, description="format hf: load_dataset options")
    split: str = Field("train", description="split to read (hf) and to record as provenance")
    output_split: str = Field("train", pattern=r"^[a-z][a-z0-9_]*$", description="split the rows are written to")
    limit: int | None = Field(None, ge=1, description="read at most this many records")
    domain: str = Field("general", pattern=DOMAIN_PATTERN,
                        description="domain tag for every row of this source; 'auto': classified per row (see domains:)")
    license: str | None = Field(None, description="license of the source data (recorded on each row and in the card)")
    id_field: FieldPath | None = Field(None, description="record field that keys the row id (default: the record index)")
    keep: list[FieldPath] = Field(default_factory=list, description="extra fields kept, as JSON, in the row's meta column")
    unescape_newlines: bool = Field(False, description="turn literal two-character \\n sequences in text into newlines")

    def field_paths(self) -> list[str]:
        """Every record path this source reads (fields, id_field, keep)."""
        paths = [p for p in self._mapped_paths() if p]
        return paths + ([self.id_field] if self.id_field else []) + list(self.keep)

    def _mapped_paths(self) -> list[str | None]:
        raise NotImplementedError

    @field_validator("domain")
    @classmethod
    def _not_reserved(cls, v: str) -> str:
        if v in RESERVED_DOMAINS:
            raise ValueError(f"'{v}' is reserved for the card's all-domains config")
        return v


class QASource(SourceBase):
    kind: Literal["qa"] = "qa"
    fields: QAFields
    trace_format: Literal["none", "gsm8k", "aqua", "strategyqa", "thought", "think", "rationale"] = Field(
        "none", description="how existing reasoning in the source is standardised"
    )
    trace_options: TraceOptions = Field(default_factory=TraceOptions)

    def _mapped_paths(self) -> list[str | None]:
        f = self.fields
        return [f.question, f.context, f.answer, f.trace, f.options, f.facts, f.subquestions, f.system]


class ConversationSource(SourceBase):
    kind: Literal["conversation"]
    fields: ConversationFields
    roles: dict[str, Role] = Field(default_factory=dict, description="source speaker -> system/user/assistant")

    def _mapped_paths(self) -> list[str | None]:
        f = self.fields
        turns = [p for t in (f.turns or []) for p in ([t.content] if isinstance(t.content, str) else t.content)]
        return [f.messages, f.transcript, f.system, *turns]


class PreferenceSource(SourceBase):
    kind: Literal["preference"]
    fields: PreferenceFields
    roles: dict[str, Role] = Field(
        default_factory=lambda: {"Human": "user", "Assistant": "assistant"},
        description="transcript speaker -> role",
    )

    def _mapped_paths(self) -> list[str | None]:
        return [self.fields.chosen, self.fields.rejected, self.fields.prompt]


def _source_kind(value: Any) -> str | None:
    if isinstance(value, dict):
        return value.get("kind", "qa")
    return getattr(value, "kind", None)


Source = Annotated[
    Union[
        Annotated[QASource, Tag("qa")],
        Annotated[ConversationSource, Tag("conversation")],
        Annotated[PreferenceSource, Tag("preference")],
    ],
    Discriminator(_source_kind),
]
SOURCE_KINDS = ("qa", "conversation", "preference")


# ---- cleaning ------------------------------------------------------------------------------

DedupField = Literal["question", "answer", "messages", "chosen", "rejected", "steps"]


class Normalization(Strict):
    """How text is normalised before it is compared (exact, MinHash and n-gram matching)."""

    nfkc: bool = Field(True, description="Unicode NFKC (full-width forms, ligatures, compatibility digits)")
    lowercase: bool = True
    strip_templates: bool = Field(True, description="drop chat-template tokens (<|im_start|>, [INST], <s>, ### Response:, Human:/Assistant: …)")
    keep_digits: bool = Field(True, description="digits are kept: questions differing only in numbers stay different")


class MinHashOptions(Strict):
    threshold: float = Field(0.8, gt=0, le=1, description="verified Jaccard at or above which two rows are near-duplicates")
    num_perm: int = Field(128, ge=8, le=1024, description="permutations (signature length) = bands × rows")
    bands: int = Field(16, ge=1, description="LSH bands")
    rows: int = Field(8, ge=1, description="signature rows per band")
    ngram: int = Field(5, ge=1, le=32, description="word n-gram shingles; a shorter text is one shingle")
    seed: int = Field(20251122, description="seed of the permutations (recorded in the manifest)")

    @model_validator(mode="after")
    def _bands_fit(self) -> "MinHashOptions":
        if self.bands * self.rows != self.num_perm:
            raise ValueError(f"bands × rows must equal num_perm ({self.bands} × {self.rows} != {self.num_perm})")
        return self


class EvalSet(Strict):
    """An evaluation set to decontaminate against, read with the same readers as sources."""

    name: str | None = Field(None, description="benchmark name in quarantine and manifest (default: file stem)")
    path: str = Field(min_length=1, description="file or directory, relative to the recipe file")
    format: Literal["auto", "jsonl", "json", "csv", "parquet", "hf"] = "auto"
    json_key: str | None = None
    csv_delimiter: str = Field(",", min_length=1, max_length=1)
    hf: HFOptions = Field(default_factory=HFOptions)
    split: str = "test"
    limit: int | None = Field(None, ge=1)
    field: FieldPath | None = Field(None, description="one text field (e.g. question)")
    fields: list[FieldPath] = Field(default_factory=list, description="several text fields; n-grams also span across them")
    ngram: int = Field(13, ge=3, le=64, description="word n-gram length that counts as an overlap")

    @model_validator(mode="after")
    def _some_field(self) -> "EvalSet":
        if not self.field and not self.fields:
            raise ValueError("give field or fields")
        return self

    def text_fields(self) -> list[str]:
        return ([self.field] if self.field else []) + [f for f in self.fields if f != self.field]

    @property
    def label(self) -> str:
        return self.name or Path(self.path).name.split(".")[0]


class DedupOptions(Strict):
    fields: list[DedupField] = Field(default_factory=lambda: ["question", "answer"], min_length=1,
                                     description="text compared for duplicates (messages/chosen/rejected/steps: their text)")
    exact: bool = Field(True, description="drop rows whose normalised text is identical")
    minhash: MinHashOptions | None = Field(default_factory=MinHashOptions, description="near-duplicates; null turns it off")
    normalize: Normalization = Field(default_factory=Normalization)
    when: list[Literal["before_teacher", "after_teacher"]] = Field(
        default_factory=lambda: ["before_teacher"], min_length=1,
        description="before_teacher: nobody pays to generate a trace for a duplicate; after_teacher: also compare generated text")
    decontaminate: list[EvalSet] = Field(default_factory=list, description="evaluation sets whose n-grams must not appear in training rows")


class ValidateOptions(Strict):
    suite: str | None = Field(None, description="one expectation suite (JSON) for every row kind; relative to the recipe file")
    suites: dict[Literal["qa", "conversation", "preference"], str] = Field(
        default_factory=dict, description="a suite per row kind (default: schemas/expectations/<kind>.json)")
    max_chars: int = Field(100_000, ge=1, description="upper bound on question/answer length used by the default suites")


# ---- reasoning structure -------------------------------------------------------------------

StepTag = Literal["THOUGHT", "ACTION", "CHECK", "SUMMARY"]


class StepOptions(Strict):
    split: Literal["spacy", "none"] = Field(
        "spacy", description="spacy: split every step into sentences (blank English pipeline + sentencizer with rules "
                             "for list markers, line breaks, equations, numbers and quotes); none: keep the source's steps")
    model: str | None = Field(None, description="an installed spaCy pipeline to split with instead (e.g. en_core_web_sm)")
    tags: dict[StepTag, list[str]] = Field(default_factory=dict,
                                           description="regular expressions per tag that replace the built-in rules for that tag")
    order: Literal["keep", "dependency"] = Field(
        "keep", description="dependency: reorder steps so that each comes after the steps it uses (stable topological order)")


class MixOptions(Strict):
    """Domain balance, applied deterministically (seeded) after cleaning."""

    weights: dict[str, float] = Field(default_factory=dict, description="share of the output per domain (normalised); unlisted domains are dropped")
    caps: dict[str, int] = Field(default_factory=dict, description="at most this many rows per domain")
    temperature: float | None = Field(None, gt=0, le=1, description="sample domain d in proportion to n_d^T (T<1 flattens)")
    total: int | None = Field(None, ge=1, description="rows wanted in all (default: as many as the weights allow)")
    seed: int = Field(0, description="seed of the row sampling")

    @model_validator(mode="after")
    def _one_strategy(self) -> "MixOptions":
        given = [k for k in ("weights", "temperature") if getattr(self, k)]
        if len(given) > 1:
            raise ValueError("give weights or temperature, not both")
        if any(w < 0 for w in self.weights.values()) or (self.weights and sum(self.weights.values()) <= 0):
            raise ValueError("weights must be non-negative and not all zero")
        return self


class DeriveOptions(Strict):
    """New rows made from existing ones, without a teacher; each keeps its parent's id."""

    subquestion_pairs: bool = Field(True, description="a row per sub-question with a known or matching answer")
    contrast: bool = Field(True, description="where one question has several traces, a row that contrasts two of them")
    min_fact_overlap: float = Field(0.5, ge=0, le=1, description="a StrategyQA fact answers a sub-question when their word overlap reaches this")
    domain_wording: bool = Field(False, description="generic sub-questions name their domain ('…essential?' → '…essential in math?')")



# ---- output --------------------------------------------------------------------------------

class ShardOptions(Strict):
    partition_by: Literal["domain"] = Field("domain", description="shards are grouped by this column")
    max_rows: int = Field(50_000, ge=1, description="rows per Parquet file at most")
    compression: Literal["zstd", "snappy", "gzip", "none"] = "zstd"
    compression_level: int | None = Field(None, description="codec level (zstd: 1-22)")
    row_group_rows: int = Field(10_000, ge=1, description="rows per Parquet row group")


class Recipe(Strict):
    name: str = Field(pattern=NAME_PATTERN, description="recipe name; default output is shards/<name>")
    description: str = Field("", description="what the dataset is; goes into the dataset card")
    output: str | None = Field(None, description="output directory (relative to the working directory)")
    license: str | None = Field(None, description="license of the produced dataset (default: from the sources)")
    sources: list[Source] = Field(min_length=1, description="where rows come from, in this order")
    domains: dict[str, list[str]] = Field(default_factory=dict,
                                          description="domain: auto — keyword patterns per domain, added to (or replacing) the built-in taxonomy")
    steps: StepOptions | None = Field(None, description="split, tag and order reasoning steps")
    teacher: TeacherOptions | None = Field(None, description="generate traces with a teacher model")
    derive: DeriveOptions | None = Field(None, description="derived rows: sub-question pairs, contrasting paths")
    dedup: DedupOptions | None = Field(None, description="exact + MinHash near-duplicate removal and decontamination")
    mix: MixOptions | None = Field(None, description="domain balance of the output")
    validate_: ValidateOptions | None = Field(None, alias="validate", description="Great Expectations suites run before shards are final")
    exports: list[Union[Export, Literal["sft", "dpo", "selector"]]] = Field(default_factory=list, description="training views written under <out>/exports/<kind>/: a kind's name (defaults) or its options")
    shards: ShardOptions = Field(default_factory=ShardOptions, description="output layout")

    @field_validator("exports", mode="before")
    @classmethod
    def _export_shorthand(cls, v: Any) -> Any:
        """``exports: [sft, dpo]`` is short for ``[{kind: sft}, {kind: dpo}]``."""
        if isinstance(v, list):
            return [{"kind": x} if isinstance(x, str) else x for x in v]
        return v

    @model_validator(mode="after")
    def _mix_names_real_domains(self) -> "Recipe":
        if self.mix is None:
            return self
        from factory.domains import possible_domains     # the classifier's names, for domain: auto

        known = possible_domains(self)
        for key in ("weights", "caps"):
            unknown = sorted(set(getattr(self.mix, key)) - set(known))
            if unknown:
                raise ValueError(f"mix.{key}: no source can produce domain {', '.join(repr(d) for d in unknown)} "
                                 f"(expected one of: {', '.join(known)})")
        return self

    @property
    def output_dir(self) -> str:
        return self.output or f"shards/{self.name}"


def recipe_json_schema() -> dict[str, Any]:
    schema = Recipe.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "CoT Factory recipe"
    return schema


__all__ = [
    "Recipe", "QASource", "ConversationSource", "PreferenceSource", "Source", "SOURCE_KINDS",
    "QAFields", "ConversationFields", "PreferenceFields", "Turn", "TraceOptions", "ShardOptions",
    "HFOptions", "recipe_json_schema", "ROLES",
]
