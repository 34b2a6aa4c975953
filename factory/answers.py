"""Answer normalisation and matching: one normaliser for the teacher's answer check and for
``train/`` evaluation, so "correct" means the same thing when data is made and when it is scored.

A gold answer decides how a prediction is read:
- a number (``1,250``, ``$18``, ``3/4``, ``62.5 %``, ``620 kgs``): the first number the
  prediction states as its answer must equal it (|a − b| ≤ 1e-6·max(1, |b|));
- yes / no (also true / false): the prediction's leading yes/no word;
- an option letter (``C``) with options: the prediction's letter, or the option whose text it
  gives;
- anything else: case-, punctuation- and article-insensitive text equality.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from fractions import Fraction
from typing import Sequence

_NUMBER = re.compile(r"(?<![\w.])-?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:\s*/\s*\d+(?:\.\d+)?)?(?![\w])|(?<![\w.])-?\.\d+")
_YES = {"yes", "true", "correct", "y"}
_NO = {"no", "false", "incorrect", "n"}
_LETTER = re.compile(r"^\(?([A-Ea-e])\)?(?:[.):]|\s|$)")
_ANSWER_LEAD = re.compile(r"^(?:the\s+)?(?:final\s+)?(?:answer|output|result)\s*(?:is|:|=)?\s*", re.I)
_ARTICLES = re.compile(r"\b(?:a|an|the)\b")
_PUNCT = re.compile(r"[^\w\s]")


@dataclass(frozen=True)
class Normalized:
    kind: str           # number | yesno | letter | text
    value: str          # canonical form (numbers as a reduced fraction or decimal string)


def parse_number(text: str) -> Fraction | None:
    """The first number in ``text`` as an exact fraction: commas, currency, units and a
    trailing % are ignored; ``3/4`` is a fraction."""
    m = _NUMBER.search(text.replace("−", "-"))
    if not m:
        return None
    raw = m.group(0).replace(",", "").replace(" ", "")
    try:
        if "/" in raw:
            num, den = raw.split("/")
            return Fraction(num) / Fraction(den) if Fraction(den) != 0 else None
        return Fraction(raw)
    except (ValueError, ZeroDivisionError):
        return None


def _clean(text: str) -> str:
    text = unicodedata.normalize("NFKC", text or "").strip()
    text = _ANSWER_LEAD.sub("", text)
    if "=" in text:                     # "$400 + $76 = $516": the result is what follows the last '='
        text = text.rsplit("=", 1)[1]
    return text.strip().strip("*").strip()


def _text_key(text: str) -> str:
    text = _PUNCT.sub(" ", text.lower())
    return " ".join(_ARTICLES.sub(" ", text).split())


def normalize(answer: str, options: Sequence[dict] | None = None) -> Normalized:
    """How ``answer`` reads as a gold answer (see the module doc)."""
    text = _clean(answer)
    words = _text_key(text).split()
    if words and len(words) <= 2 and words[0] in _YES | _NO:
        return Normalized("yesno", "yes" if words[0] in _YES else "no")
    if options:
        m = _LETTER.match(text)
        if m and len(text) <= 3:
            return Normalized("letter", m.group(1).upper())
    n = parse_number(text)
    if n is not None and len(_text_key(_NUMBER.sub(" ", text)).split()) <= 3:   # "620 kgs", "$18", "62.5 %"
        return Normalized("number", str(n))
    return Normalized("text", _text_key(text))


def answers_match(predicted: str | None, gold: str | None, options: Sequence[dict] | None = None) -> bool | None:
    """Whether ``predicted`` gives the ``gold`` answer; None when there is no gold answer to
    check against (the row is then neither right nor wrong)."""
    if gold is None or not str(gold).strip():
        return None
    if predicted is None or not str(predicted).strip():
        return False
    want = normalize(gold, options)
    text = _clean(predicted)
    if want.kind == "number":
        got = parse_number(text)
        if got is None:
            return False
        target = Fraction(want.value)
        return abs(got - target) <= Fraction(1, 10**6) * max(1, abs(target))
    if want.kind == "yesno":
        first = _text_key(text).split()[:1]
        return bool(first) and ("yes" if first[0] in _YES else "no" if first[0] in _NO else None) == want.value
    if want.kind == "letter":
        m = _LETTER.match(text)
        if m:
            return m.group(1).upper() == want.value
        by_text = {_text_key(o.get("text") or ""): (o.get("label") or "").upper() for o in options or []}
        return by_text.get(_text_key(text)) == want.value
    return _text_key(text) == want.value
