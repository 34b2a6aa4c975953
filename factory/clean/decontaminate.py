"""Decontamination: training rows that share a word n-gram (default 13, normalised) with an
evaluation set go to quarantine with the benchmark's name and the n-gram that matched.

A row's text is its prompt and answer joined (question, answer, messages, chosen, rejected), so
n-grams that span the prompt/answer boundary count too; the evaluation texts are joined the same
way from the fields the recipe names. Evaluation items shorter than n words match a row only
when the row's whole text is that item.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from factory.clean.dedup import row_texts
from factory.clean.text import normalize, ngrams, tokenize_batched, words
from factory.recipe.model import DedupOptions, EvalSet, QAFields, QASource
from factory.sources import open_source
from factory.sources.mapping import Batch
from factory.stages import Stage, StageContext, StageResult, register_stage

ROW_FIELDS = ["question", "answer", "messages", "chosen", "rejected"]


def eval_texts(spec: EvalSet, base_dir: Path) -> pa.Array:
    """The evaluation items' text (their fields joined by a space), read with the source readers."""
    paths = spec.text_fields()
    source = QASource.model_construct(
        name=spec.label, path=spec.path, format=spec.format, json_key=spec.json_key, csv_delimiter=spec.csv_delimiter,
        hf=spec.hf, split=spec.split, limit=spec.limit, domain="eval", license=None, id_field=None, keep=paths,
        unescape_newlines=False, output_split="test", kind="qa", fields=QAFields(question=paths[0]),
        trace_format="none", trace_options=None,
    )
    parts: list[str] = []
    for batch in open_source(source, base_dir).read(spec.limit):
        b = Batch(batch)
        columns = [b.column(p) for p in paths]
        parts.extend(" ".join(str(v) for v in vals if v is not None) for vals in zip(*columns))
    return pa.array(parts, type=pa.string())


@register_stage("decontaminate")
class Decontaminate(Stage):
    def __init__(self, ctx: StageContext, opts: DedupOptions, label: str | None = None):
        super().__init__(ctx, label)
        self.opts = opts
        self._index: list[tuple[EvalSet, np.ndarray, int, int]] | None = None

    def index(self) -> list[tuple[EvalSet, np.ndarray, int, int]]:
        """Per evaluation set: (spec, sorted n-gram hashes, items, items shorter than n)."""
        if self._index is None:
            self._index = []
            for spec in self.opts.decontaminate:
                texts = normalize(eval_texts(spec, self.ctx.loaded.base_dir), self.opts.normalize)
                tok = tokenize_batched(texts)
                grams, _, _ = ngrams(tok, spec.ngram, short="whole")
                self._index.append((spec, np.unique(grams), len(texts), int(np.sum(tok.counts < spec.ngram))))
        return self._index

    def run(self, table: pa.Table) -> StageResult:
        n = table.num_rows
        norm = normalize(row_texts(table, ROW_FIELDS), self.opts.normalize)
        tok = tokenize_batched(norm)
        hit_set = np.full(n, -1, dtype=np.int64)       # which evaluation set matched first
        hit_pos = np.zeros(n, dtype=np.int64)
        report = []
        by_n: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
        for k, (spec, index, items, short) in enumerate(self.index()):
            if spec.ngram not in by_n:
                by_n[spec.ngram] = ngrams(tok, spec.ngram, short="whole")
            grams, doc, pos = by_n[spec.ngram]
            where = np.searchsorted(index, grams)
            found = (where < len(index)) & (index[np.minimum(where, len(index) - 1)] == grams) if len(index) else np.zeros(len(grams), bool)
            first = np.flatnonzero(found)
            docs, at = np.unique(doc[first], return_index=True)
            fresh = hit_set[docs] < 0
            hit_set[docs[fresh]] = k
            hit_pos[docs[fresh]] = pos[first[at]][fresh]
            report.append({"benchmark": spec.label, "path": spec.path, "ngram": spec.ngram, "items": items,
                           "items_shorter_than_ngram": short, "ngrams": int(len(index)), "rows_checked": n,
                           "rows_contaminated": int(len(docs)), "share": round(len(docs) / n, 6) if n else 0.0})
        bad = hit_set >= 0
        reasons, details = [], []
        texts = norm.to_pylist() if bad.any() else []
        index = self.index()
        for i in np.flatnonzero(bad).tolist():
            spec = index[hit_set[i]][0]
            toks = words(texts[i])
            gram = " ".join(toks[hit_pos[i]: hit_pos[i] + spec.ngram])
            reasons.append(f"contaminated: shares a {spec.ngram}-gram with {spec.label}: '{gram}'")
            details.append(json.dumps({"benchmark": spec.label, "ngram": gram, "n": spec.ngram}, ensure_ascii=False))
        mask = pa.array(bad)
        from factory.stages import rejected_rows

        rejected = rejected_rows(table, mask, reasons, details)
        return StageResult(kept=table.filter(pc.invert(mask)), rejected=rejected, report={"benchmarks": report})
