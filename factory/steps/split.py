"""Split step texts into sentence-sized steps with spaCy.

Default pipeline: ``spacy.blank("en")`` + the rule-based sentencizer (no model download), then a
component that fixes what a sentencizer gets wrong in reasoning traces:
- a line break always starts a new step; a list marker (``1.``, ``2)``, ``-``, ``*``) at the
  start of a line starts one and never ends one;
- no boundary inside a quoted span, an equation (``48 / 2 = 24.``) or a number (``3.50``).
A trained pipeline named in the recipe (``steps.model``) is used instead when installed.

spaCy's cost is its tokenizer, so only texts that may hold more than one sentence go through it
(a cheap vectorised test); a one-sentence step is kept as it is.
"""

from __future__ import annotations

import re
from functools import lru_cache

import polars as pl

# something that may end a sentence inside the text, or a line break inside it
MAY_SPLIT = r"[.!?][\"')\]”’]*\s+\S|\n\s*\S"
_LIST_MARKER = re.compile(r"^(?:\d{1,3}[.)]|[a-zA-Z][.)]|[-*•])$")
_OPEN_QUOTES = {'"', "“", "«", "„"}
# a period after these does not end a sentence ("Rs. 128", "approx. 3 km", "Mr. Lee")
ABBREVIATIONS = {"rs", "mr", "mrs", "ms", "dr", "st", "vs", "etc", "approx", "no", "nos", "fig", "eq", "eqn",
                 "km", "hr", "hrs", "min", "mins", "sec", "secs", "ft", "lb", "lbs", "oz", "kg", "cm", "mm",
                 "sq", "cu", "avg", "dept", "jan", "feb", "mar", "apr", "jun", "jul", "aug", "sep", "sept",
                 "oct", "nov", "dec", "e.g", "i.e", "cf", "al", "inc", "ltd", "co", "jr", "sr", "prof", "rev"}
_CLOSE_QUOTES = {'"', "”", "»"}


@lru_cache(maxsize=4)
def pipeline(model: str | None = None):
    import spacy
    from spacy.language import Language

    if "cot_boundaries" not in Language.factories:
        Language.component("cot_boundaries", func=fix_boundaries)

    if model:
        nlp = spacy.load(model, exclude=["lemmatizer", "textcat"])     # ner stays: terms() uses it
        if not {"parser", "senter", "sentencizer"} & set(nlp.pipe_names):
            nlp.add_pipe("sentencizer")
    else:
        nlp = spacy.blank("en")
        nlp.add_pipe("sentencizer")
    nlp.add_pipe("cot_boundaries", last=True)
    return nlp


def fix_boundaries(doc):
    """Line starts open a step; list markers, quotes and equations never end one."""
    n = len(doc)
    keep_together: set[int] = set()
    starts = [i for i in range(n) if not doc[i].is_space and (i == 0 or "\n" in doc[i - 1].text or doc[i - 1].is_space and "\n" in doc[i - 1].whitespace_ + doc[i - 1].text)]
    for s in starts:
        if s > 0:
            doc[s].is_sent_start = True
        t = doc[s].text
        end = s
        if s + 1 < n and (t.isdigit() and len(t) <= 3 or len(t) == 1 and t.isalpha()) and doc[s + 1].text in (".", ")"):
            end = s + 1
        elif not _LIST_MARKER.match(t):
            continue
        keep_together.update(range(s + 1, min(end + 2, n)))   # the marker and the word after it
    line_starts = set(starts)
    inside_quote = False
    last_start = 0
    for i in range(n):
        text = doc[i].text
        if i in line_starts:
            inside_quote = False
        elif i > 0 and (i in keep_together or inside_quote or _in_equation(doc, i) or _continues(doc, i)
                        or _LIST_MARKER.match(doc[last_start:i].text.strip())):   # an inline "2." opens, never ends
            doc[i].is_sent_start = False
        if i == 0 or doc[i].is_sent_start:
            last_start = i
        if text == '"':
            inside_quote = not inside_quote
        elif text in _OPEN_QUOTES:
            inside_quote = True
        elif text in _CLOSE_QUOTES:
            inside_quote = False
    return doc


def _continues(doc, i: int) -> bool:
    """A sentence does not start with a lowercase word, nor right after an abbreviation's period."""
    text = doc[i].text
    if text[:1].islower():
        return True
    prev = doc[i - 1].text
    if prev == "." and i >= 2:
        return doc[i - 2].text.lower() in ABBREVIATIONS
    return prev.endswith(".") and prev[:-1].lower() in ABBREVIATIONS


def _in_equation(doc, i: int) -> bool:
    """The token sits between two parts of an arithmetic expression ("48 / 2 = 24", "x = 3.5")."""
    prev = doc[i - 1].text
    cur = doc[i].text
    ops = {"=", "+", "-", "*", "/", "×", "÷", "^", "<", ">", "≤", "≥"}
    return prev in ops or cur in ops


def split_texts(texts: list[str], model: str | None = None, batch_size: int = 512) -> list[list[str]]:
    """Sentences of every text (stripped, non-empty); one-sentence texts skip spaCy."""
    if not texts:
        return []
    needs = pl.Series(texts, dtype=pl.String).str.contains(MAY_SPLIT).fill_null(False).to_list()
    out: list[list[str]] = [[t.strip()] if t and t.strip() else [] for t in texts]
    todo = [i for i, n in enumerate(needs) if n]
    if todo:
        nlp = pipeline(model)
        for i, doc in zip(todo, nlp.pipe((texts[i] for i in todo), batch_size=batch_size)):
            out[i] = [s.text.strip() for s in doc.sents if s.text.strip()]
    return out


def terms(texts: list[str], model: str, batch_size: int = 256) -> list[list[str]]:
    """Entities and noun chunks of every text, from a trained pipeline (``steps.model``)."""
    nlp = pipeline(model)
    out = []
    for doc in nlp.pipe(texts, batch_size=batch_size):
        found = {e.text for e in doc.ents}
        if doc.has_annotation("DEP"):
            found |= {c.text for c in doc.noun_chunks if not c.root.is_stop}
        out.append(sorted(found))
    return out
