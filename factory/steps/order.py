"""Step dependencies and the order that respects them.

Step j depends on step i when it uses something i introduced:
- a computed number: the result of one of i's equations (``48 / 2 = 24`` introduces 24; with
  structured calculator calls, the call's output) used by j outside its own results;
- a variable i defines (``x = 3``, ``Let x be …``) and j uses in an expression;
- an explicit reference (``#2``, ``step 2``).
An edge is weaker when the use may be of something else: the same number also given in the
question, computed by several steps, or a small everyday constant (7 days, 12 eggs, 60 minutes).

Order = the topological order that changes the original order least: Kahn's algorithm, always
taking the available step that came first. If the original order already respects every
confident dependency it is kept (weak evidence never overrules the author); otherwise all
dependencies, weak ones included, decide. A cycle is broken at its weakest edge (explicit >
variable > number, and among numbers the weaker kinds above; then the one pointing furthest back
in the input) and the row is flagged.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from functools import lru_cache
from math import gcd

from factory.steps.terms import ENTITY, defined, mentions, rule_terms

# a number, but not a coefficient ("5x", "40x metres": 40 is not a value of its own)
_NUMBER = re.compile(r"(?<![\w.])[-−]?[$€£]?(?>\d[\d,]*(?:\.\d+)?|\.\d+)%?(?![a-zA-Z]\b|\d)")
# a result is a plain number after '=' ("= 24", "= $3.50 each"), not an expression ("= 3 * x")
_EQ = r"(?:=|\bequals?\b|\bequaling\b)"
_RESULT = re.compile(_EQ + r"\s*([-−]?[$€£]?(?:\d[\d,]*(?:\.\d+)?|\.\d+)%?)"
                     r"(?!\s*[-−+*×÷^]\s*[\w.(]|\s*\(\s*[\d.]|\s*/\s*(?:[\d.(]|[a-zA-Z]\b)"
                     r"|\s*(?:plus|minus|times|divided by|multiplied by|over)\s*(?:[-−$€£\d(]|\.\d))"
                     r"(?![.,]?\d|[a-zA-Z]\b)")       # "= 4Z" is an expression, "= 1.2Mb" a result
# the arithmetic right before an '=': what a calculation actually uses ("13 - 11 = 2")
_TERM = (r"\(?\s*[$€£]?(?:\d[\d,]*(?:\.\d+)?|\.\d+)%?+"
         r"(?>(?:\s*(?:[a-zA-Z]+(?:/[a-zA-Z]+)?|per\s+[a-zA-Z]+)){0,3})\s*\)?")
_OP = r"\s*(?:[+\-−–*/×÷^]|\b(?:x|times|plus|minus|divided by|multiplied by|over)\b)\s*"
# atomic groups and possessive repeats: no backtracking into the unit words
_LHS = re.compile(rf"(?<![\w.$€£(])({_TERM}(?:{_OP}{_TERM})*+)\s*{_EQ}")
# a variable is introduced by words that introduce it ("let x be", "x represents"), not by an
# equation that solves for it ("x = 40" comes after the steps that use x)
_VAR_DEF = re.compile(r"\blet(?:'s)?\s+(?:let\s+)?([a-zA-Z])\s+(?:be|=|equal|represent|denote|stand)"
                      r"|\b([a-zA-Z])\s+(?:represents|denotes|stands for|is the number|is the amount)\b", re.I)
_VAR_USE = r"(?:(?<=[\d)+\-*/×÷=^(])\s*{v}\b|\b{v}\s*(?=[+\-*/×÷=^)]))"
_EXPLICIT = re.compile(r"#(\d+)|\bstep\s+(\d+)\b", re.I)
_UNIT = re.compile(r"(?:\s+|-)([a-zA-Z]{2,})")
_NOT_UNITS = {"times", "and", "of", "the", "to", "per", "each", "is", "are", "was",
              "so", "in", "for", "than", "or", "a", "an", "at", "from", "on", "with", "by", "as",
              "which", "that", "this", "then", "altogether", "left"}
# words between a number and what it counts ("600 more surfers", "21 used hours")
_MODIFIERS = {"more", "less", "fewer", "extra", "additional", "other", "total", "full", "whole",
              "remaining", "used", "new", "old", "big", "small", "large", "different", "same"}
_UNIT2 = re.compile(r"(?:\s+|-)([a-zA-Z]{2,})(?:\s+([a-zA-Z]{2,}))?")
# numbers a question gives in words ("two liters", "a dozen", "quadruple")
_WORD_NUMBERS = {w: str(i) for i, w in enumerate(
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen "
    "sixteen seventeen eighteen nineteen twenty".split())}
_WORD_NUMBERS.update({"thirty": "30", "forty": "40", "fifty": "50", "sixty": "60", "seventy": "70",
                      "eighty": "80", "ninety": "90", "hundred": "100", "thousand": "1000",
                      "dozen": "12", "twice": "2", "double": "2", "half": "2", "triple": "3",
                      "thrice": "3", "quadruple": "4", "quarter": "4", "third": "3", "fourth": "4",
                      "fifth": "5"})
# words that carry a number and what it counts ("an hour" is 60 minutes)
_IMPLIED = {"week": ("7", "day"), "weekly": ("7", "day"), "hour": ("60", "minute"),
            "minute": ("60", "second"), "year": ("12", "month"), "foot": ("12", "inch"),
            "feet": ("12", "inch"), "dollar": ("100", "cent")}
_IMPLIED_WORD = re.compile(r"\b(" + "|".join(_IMPLIED) + r")s?\b", re.I)
# one name per thing counted: "$5" and "5 dollars" are the same 5
_SAME_UNIT = {"dollar": "$", "buck": "$", "usd": "$", "euro": "$", "pound sterling": "$",
              "percent": "%", "percentage": "%", "cents": "cent", "hr": "hour", "min": "minute",
              "km": "kilometer", "mi": "mile", "ft": "foot", "feet": "foot", "lb": "pound",
              "kg": "kilogram", "sec": "second"}
_WORD = re.compile(r"\b(" + "|".join(_WORD_NUMBERS) + r")s?\b(?:-|\s+)?([a-zA-Z]{2,})?", re.I)

STRENGTH = {"explicit": 3.0, "variable": 2.0, "number": 1.0}
CONCLUSION = 0.45     # the step computing the final answer goes last, unless stronger evidence says not
_CONSTANTS = {str(k) for k in range(0, 13)} | {"24", "30", "31", "52", "60", "100", "365", "1000"}


@lru_cache(maxsize=65536)
def number_value(token: str) -> str:
    """'$1,200.50' → '1200.5', '24.0' → '24', '−3' → '-3', '.5' → '0.5'."""
    t = token.replace("−", "-").replace(",", "")
    neg = t.startswith("-")
    t = t.strip("-$€£%")
    try:
        v = format(Decimal(t).normalize(), "f")
    except InvalidOperation:
        v = t
    return "-" + v if neg and v != "0" else v


def _unit(word: str) -> str:
    w = word.lower()
    w = _SAME_UNIT.get(w, w)
    w = w[:-1] if w.endswith("s") and not w.endswith("ss") and len(w) > 3 else w
    return _SAME_UNIT.get(w, w)


def occurrence_units(text: str, m: re.Match) -> set[str]:
    """What a number counts: '$' and '%' signs, and the word right after it ('40 minutes')."""
    token, units = m.group(), set()
    if any(c in token for c in "$€£"):
        units.add("$")
    if token.endswith("%"):
        units.add("%")
    u = _UNIT2.match(text, m.end())
    if u:
        word = u.group(1).lower()
        if word in _MODIFIERS and u.group(2):
            word = u.group(2).lower()
        if word not in _NOT_UNITS and word not in _MODIFIERS:
            units.add(_unit(word))
    return units


# a proper fraction written as one token ("2/5 * 80", "= 1/2") is a number, not a division;
# "24/12" and "12/20 x 100%" stay divisions of the numbers they name
_FRACTION = re.compile(r"(?<![\w.$/])(\d{1,3})/(\d{1,4})(?![\d/.]|\.\d)")


def _fraction_value(a: int, b: int) -> str:
    q = Decimal(a) / Decimal(b)
    v = q.quantize(Decimal("0.0001"))
    return format(v.normalize(), "f") if v == q else f"{a // gcd(a, b)}/{b // gcd(a, b)}"


def _tokens(text: str) -> list[tuple[int, int, str, re.Match]]:
    """Every number in the text as (start, end, value, match), fractions as one token."""
    fractions = []
    for m in _FRACTION.finditer(text):
        a, b = int(m.group(1)), int(m.group(2))
        if b and a < b and (b in (100, 1000) or (a <= 9 and b <= 12)):
            fractions.append((m.start(), m.end(), _fraction_value(a, b), m))
    taken = [(a, b) for a, b, _, _ in fractions]
    out = list(fractions)
    for m in _NUMBER.finditer(text):
        if not any(a <= m.start() < b for a, b in taken):
            out.append((m.start(), m.end(), number_value(m.group()), m))
    return sorted(out, key=lambda t: t[0])


@dataclass
class StepFacts:
    results: dict[str, set[str]] = field(default_factory=dict)    # value → what it counts
    operands: dict[str, set[str]] = field(default_factory=dict)   # numbers a calculation uses
    mentions: dict[str, set[str]] = field(default_factory=dict)   # numbers named in its words
    defines: set[str] = field(default_factory=set)
    text: str = ""
    operand_count: dict[str, int] = field(default_factory=dict)  # "12 + 12": 12 used twice
    terms: set[str] = field(default_factory=set)                 # entities / noun phrases it names
    defines_terms: set[str] = field(default_factory=set)         # … and says what they are

    def uses(self) -> dict[str, tuple[set[str], bool]]:
        """value → (units, calculated with); a step's own results are not uses of another's."""
        out = {v: (u, True) for v, u in self.operands.items()}
        for v, u in self.mentions.items():
            if v not in out and v not in self.results:
                out[v] = (u, False)
        return out


def facts(text: str, calls: list[dict] | None = None, terms: list[str] | None = None) -> StepFacts:
    """What a step computes, uses, names and defines. ``terms``: entities and noun phrases from a
    trained pipeline; without them the rule in terms.py finds names."""
    f = StepFacts(text=text)
    f.terms = {t.lower() for t in terms} if terms is not None else rule_terms(text)
    f.defines_terms = defined(text, f.terms)
    if calls:
        for c in calls:
            out = c.get("output") or ""
            for m in _NUMBER.finditer(out):
                f.results.setdefault(number_value(m.group()), set())
            inp = c.get("input") or ""
            for m in _NUMBER.finditer(inp):
                f.operands.setdefault(number_value(m.group()), set()).update(occurrence_units(inp, m))
    tokens = _tokens(text)
    at = {start: (value, m) for start, _, value, m in tokens}
    result_at = set()
    for m in _RESULT.finditer(text):
        if m.start(1) in at:
            value, tok = at[m.start(1)]
            f.results.setdefault(value, set()).update(occurrence_units(text, tok))
            result_at.add(m.start(1))
    operand_at = set()
    for m in _LHS.finditer(text):
        if not any(c.isdigit() for c in m.group(1)):
            continue
        # "3 + 2 * 10 = 3 + 20 = 23": after an '=' the terms are this step's own intermediates,
        # neither uses of other steps' results nor results anyone else would use
        chained = re.search(r"[\d)%]\s*" + _EQ + r"\s*$", text[:m.start(1)]) is not None
        for start, end, value, tok in tokens:
            if not (m.start(1) <= start < m.end(1)) or start in result_at:
                continue
            if not chained:
                f.operands.setdefault(value, set()).update(occurrence_units(text, tok))
                f.operand_count[value] = f.operand_count.get(value, 0) + 1
            operand_at.add(start)
    for start, end, value, tok in tokens:
        if start in result_at or start in operand_at:
            continue
        if value in f.results:                   # "15 toys because 7.5 / .5 = 15": what 15 counts
            f.results[value] |= occurrence_units(text, tok)
        else:
            f.mentions.setdefault(value, set()).update(occurrence_units(text, tok))
    for m in _VAR_DEF.finditer(text):
        f.defines.add((m.group(1) or m.group(2)))
    return f


@lru_cache(maxsize=4096)
def givens(question: str) -> dict[str, frozenset[str]]:
    """Numbers the question gives, in digits or words, with what they count."""
    out: dict[str, set[str]] = {}
    for m in _NUMBER.finditer(question):
        out.setdefault(number_value(m.group()), set()).update(occurrence_units(question, m))
    for m in _WORD.finditer(question):
        unit = m.group(2)
        units = {_unit(unit)} if unit and unit.lower() not in _NOT_UNITS else set()
        out.setdefault(_WORD_NUMBERS[m.group(1).lower()], set()).update(units)
    for m in _IMPLIED_WORD.finditer(question):
        value, unit = _IMPLIED[m.group(1).lower()]
        out.setdefault(value, set()).add(unit)
    return {v: frozenset(u) for v, u in out.items()}      # cached: shared, so read-only


@dataclass(frozen=True)
class Need:
    """Step ``step`` uses something one of ``sources`` introduced (any one of them will do: the
    same number computed twice is one value, whichever step computed it first)."""
    step: int
    sources: tuple[int, ...]
    strength: float
    kind: str = "number"


def _number_need(units: set[str], calculated: bool, v: str, makers: list[tuple[int, set[str]]],
                 given: dict[str, set[str]]) -> tuple[tuple[int, ...], float]:
    """Which producers a use of number v may come from, and how surely it comes from one."""
    is_given = v in given
    if units:
        same = tuple(i for i, r in makers if units & r)
        if same:
            # the question's number may count the same thing
            return same, 0.35 if is_given and units & given[v] else 1.0
        if is_given:
            return (), 0.0                         # the question's number, not a computed one
        unitless = tuple(i for i, r in makers if not r)
        return (unitless, 0.7) if unitless else (tuple(i for i, _ in makers), 0.3)
    w = 1.0 if calculated else 0.5
    if is_given:
        w *= 0.4
    if v in _CONSTANTS:
        w *= 0.8
    return tuple(i for i, _ in makers), w


def needs(steps: list[StepFacts], question: str = "") -> list[Need]:
    """What each step uses that other steps introduced."""
    given = givens(question or "")
    named_in_question = {m.group() for m in _EXPLICIT.finditer(question or "")}     # "horse #2"
    given_terms = {t for s in steps for t in s.terms if mentions(question or "", t)}
    producers: dict[str, list[tuple[int, set[str]]]] = {}
    for i, s in enumerate(steps):
        for v, units in s.results.items():
            producers.setdefault(v, []).append((i, units))
    out: dict[tuple[int, tuple[int, ...]], Need] = {}

    def add(need: Need) -> None:
        key = (need.step, need.sources)
        if need.sources and (key not in out or out[key].strength < need.strength):
            out[key] = need

    for j, s in enumerate(steps):
        for v, (units, calculated) in s.uses().items():
            makers = [(i, r) for i, r in producers.get(v, []) if i != j]
            if not makers:
                continue
            sources, w = _number_need(units, calculated, v, makers, given)
            if len(sources) > 1 and s.operand_count.get(v, 0) >= len(sources):
                for i in sources:                  # "12 + 12 = 24": both twelves
                    add(Need(j, (i,), w))
                continue
            # "48 - 24 = 24" after "1/2 * 48 = 24": the later 24 is the one in use, and it
            # already needs the earlier one
            chained = tuple(i for i in sources if v in steps[i].operands)
            add(Need(j, chained or sources, w))
        for i, other in enumerate(steps):
            if i != j and any(v not in s.defines and re.search(_VAR_USE.format(v=re.escape(v)), s.text)
                              for v in other.defines):
                add(Need(j, (i,), STRENGTH["variable"], "variable"))
        for t in s.terms - given_terms:
            definers = tuple(i for i, other in enumerate(steps) if i != j and t in other.defines_terms)
            if definers and t not in s.defines_terms:
                add(Need(j, definers, ENTITY, "entity"))
        for m in _EXPLICIT.finditer(s.text):
            k = int(m.group(1) or m.group(2)) - 1
            if 0 <= k < len(steps) and k != j and m.group() not in named_in_question:
                add(Need(j, (k,), STRENGTH["explicit"], "explicit"))
    return list(out.values())


def satisfied(order: list[int], need: Need) -> bool:
    pos = {k: p for p, k in enumerate(order)}
    return any(pos[i] < pos[need.step] for i in need.sources)


def stable_order(n: int, required: list[Need]) -> tuple[list[int], list[Need]]:
    """The order closest to 0..n-1 in which every need has one of its sources earlier; and the
    needs dropped to break cycles (weakest first, then the one pointing furthest back)."""
    live = list(required)
    dropped: list[Need] = []
    while True:
        by_step: dict[int, list[Need]] = {}
        for nd in live:
            by_step.setdefault(nd.step, []).append(nd)
        placed: set[int] = set()
        order: list[int] = []
        progress = True
        while progress and len(order) < n:
            progress = False
            for k in range(n):                     # n is a trace's step count: tens at most
                if k not in placed and all(any(i in placed for i in nd.sources) for nd in by_step.get(k, ())):
                    placed.add(k)
                    order.append(k)
                    progress = True
                    break
        if len(order) == n:
            return order, dropped
        stuck = [nd for nd in live if nd.step not in placed and not any(i in placed for i in nd.sources)]
        weakest = min(stuck, key=lambda nd: (nd.strength, -(max(nd.sources) - nd.step)))
        live.remove(weakest)
        dropped.append(weakest)


def conclusion(steps: list[StepFacts], found: list[Need], answer: str | None) -> int | None:
    """The step that computes the final answer (and nothing else uses): it comes last."""
    if not answer:
        return None
    m = _NUMBER.search(answer)
    if not m:
        return None
    v = number_value(m.group())
    ends = [i for i, f in enumerate(steps) if v in f.results]
    used = {i for nd in found for i in nd.sources}
    ends = [i for i in ends if i not in used] or ends
    return ends[0] if len(ends) == 1 else None


def order_steps(steps: list[dict], question: str = "", answer: str | None = None,
                reorder: bool = True, trust_below: float = 0.8,
                trust_share: float = 0.15) -> tuple[list[dict], list[str]]:
    """Steps (dicts with tag/text/calls) with ``depends_on`` filled, reordered when asked;
    plus row flags.

    When the input order already meets every need of strength ≥ ``trust_below`` it stands: weak
    evidence (a number the question also gives) does not overrule the author. Otherwise every
    need counts and the stable order is computed."""
    info = [facts(s.get("text") or "", s.get("calls"), s.get("terms")) for s in steps]
    found = needs(info, question)
    n = len(steps)
    end = conclusion(info, found, answer)
    if end is not None:
        # every calculation but a restatement of the answer ("So she has 45 dollars.") comes
        # before it; steps without numbers ("Answer: A") carry no evidence either way
        said = set(info[end].results)
        found += [Need(end, (k,), CONCLUSION, "conclusion") for k in range(n)
                  if k != end and (info[k].results or info[k].operands or info[k].mentions)
                  and not (said & set(info[k].mentions))]
    identity = list(range(n))
    flags: list[str] = []
    unmet = [nd for nd in found if not satisfied(identity, nd)]
    if not reorder:
        order = identity
        if any(nd.strength >= trust_below for nd in unmet):
            flags.append("steps_out_of_order")
    elif (all(nd.strength < trust_below for nd in unmet)
          and sum(nd.strength for nd in unmet) <= trust_share * sum(nd.strength for nd in found)):
        order = identity
    else:
        order, dropped = stable_order(n, found)
        if dropped:
            flags.append("dependency_cycle")
    position = {old: new for new, old in enumerate(order)}
    parents: dict[int, set[int]] = {}
    for nd in found:
        if nd.kind == "conclusion":            # an ordering rule, not something the step uses
            continue
        j = position[nd.step]
        earlier = [position[i] for i in nd.sources if position[i] < j]
        if earlier:
            parents.setdefault(j, set()).add(max(earlier))     # the nearest source before it
    out = []
    for new, old in enumerate(order):
        st = dict(steps[old])
        st["depends_on"] = sorted(parents.get(new, ()))
        out.append(st)
    return out, flags
