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

import heapq
import re
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation

_NUMBER = re.compile(r"(?<![\w.])[-−]?[$€£]?\d[\d,]*(?:\.\d+)?%?")
_EQUALS = re.compile(r"=\s*[-−]?[$€£]?(\d[\d,]*(?:\.\d+)?)")
# the arithmetic right before an '=': what a calculation actually uses ("13 - 11 = 2")
_TERM = r"\(?\s*[$€£]?(?:\d[\d,]*(?:\.\d+)?|\.\d+)%?(?:\s*(?:[a-zA-Z]+(?:/[a-zA-Z]+)?|per\s+[a-zA-Z]+)){0,2}\s*\)?"
_OP = r"\s*(?:[+\-−*/×÷^]|\bx\b|\btimes\b)\s*"
_LHS = re.compile(rf"({_TERM}(?:{_OP}{_TERM})*)\s*=")
# a variable is introduced by words that introduce it ("let x be", "x represents"), not by an
# equation that solves for it ("x = 40" comes after the steps that use x)
_VAR_DEF = re.compile(r"\blet(?:'s)?\s+(?:let\s+)?([a-zA-Z])\s+(?:be|=|equal|represent|denote|stand)"
                      r"|\b([a-zA-Z])\s+(?:represents|denotes|stands for|is the number|is the amount)\b", re.I)
_VAR_USE = r"(?:(?<=[\d)+\-*/×÷=^(])\s*{v}\b|\b{v}\s*(?=[+\-*/×÷=^)]))"
_EXPLICIT = re.compile(r"#(\d+)|\bstep\s+(\d+)\b", re.I)

STRENGTH = {"explicit": 3.0, "variable": 2.0, "number": 1.0}
_CONSTANTS = {str(k) for k in range(0, 13)} | {"24", "30", "31", "52", "60", "100", "365", "1000"}


def number_value(token: str) -> str:
    """'$1,200.50' → '1200.5', '24.0' → '24', '−3' → '-3', '100' → '100'."""
    t = token.replace("−", "-").replace(",", "")
    neg = t.startswith("-")
    t = t.strip("-$€£%")
    try:
        v = format(Decimal(t).normalize(), "f")
    except InvalidOperation:
        v = t
    return "-" + v if neg and v != "0" else v


@dataclass
class StepFacts:
    results: set[str] = field(default_factory=set)
    operands: set[str] = field(default_factory=set)       # numbers a calculation of the step uses
    mentions: set[str] = field(default_factory=set)       # numbers named elsewhere in its words
    defines: set[str] = field(default_factory=set)
    text: str = ""
    units: dict[str, set[str]] = field(default_factory=dict)    # value → words right after it ("40 minutes")


_UNIT = re.compile(r"\s*(%|[a-zA-Z]{2,})")
_NOT_UNITS = {"x", "times", "and", "of", "the", "to", "per", "more", "less", "each", "is", "are", "was", "so", "in", "for", "than"}


def units_of(text: str) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for m in _NUMBER.finditer(text):
        u = _UNIT.match(text, m.end())
        word = u.group(1).lower() if u else ""
        if word and word not in _NOT_UNITS:
            out.setdefault(number_value(m.group()), set()).add(word.rstrip("s") if word != "%" else word)
    return out


def facts(text: str, calls: list[dict] | None = None) -> StepFacts:
    f = StepFacts(text=text)
    if calls:
        for c in calls:
            if c.get("output"):
                for m in _NUMBER.findall(c["output"]):
                    f.results.add(number_value(m))
            for m in _NUMBER.findall(c.get("input") or ""):
                f.operands.add(number_value(m))
    after_equals = set()
    for m in _EQUALS.finditer(text):
        f.results.add(number_value(m.group(1)))
        after_equals.add(m.start(1))
    in_lhs = set()
    for m in _LHS.finditer(text):
        if any(c.isdigit() for c in m.group(1)):
            for n in _NUMBER.finditer(m.group(1)):
                f.operands.add(number_value(n.group()))
                in_lhs.add(m.start(1) + n.start())
    for m in _NUMBER.finditer(text):
        digits = m.start() + len(m.group()) - len(m.group().lstrip("-−$€£"))
        if digits not in after_equals and m.start() not in in_lhs:
            f.mentions.add(number_value(m.group()))
    f.mentions -= f.operands
    for m in _VAR_DEF.finditer(text):
        f.defines.add((m.group(1) or m.group(2)))
    f.units = units_of(text)
    return f


def dependencies(steps: list[StepFacts], question: str = "") -> list[tuple[int, int, float]]:
    """Edges (i, j, strength): step j depends on step i."""
    given = {number_value(m) for m in _NUMBER.findall(question or "")}
    question_units = units_of(question or "")
    producers: dict[str, list[int]] = {}
    for i, s in enumerate(steps):
        for v in s.results:
            producers.setdefault(v, []).append(i)
    edges: dict[tuple[int, int], float] = {}

    def add(i: int, j: int, w: float) -> None:
        if i != j and edges.get((i, j), 0) < w:
            edges[(i, j)] = w

    for j, s in enumerate(steps):
        for v in s.operands | s.mentions:
            makers = [i for i in producers.get(v, []) if i != j]
            if not makers:
                continue
            # weaker when the use may be of something else: the same number given in the
            # question, computed by several steps, or a small everyday constant (7 days, 12 eggs)
            # the word after the number ("40 minutes" vs "40%") tells which 40 a step means
            mine = s.units.get(v, set())
            same_unit = [i for i in makers if mine & steps[i].units.get(v, set())]
            if mine and v in given and mine & question_units.get(v, set()) and not same_unit:
                continue                                  # the question's number, not a computed one
            if same_unit and not (v in given and mine & question_units.get(v, set())):
                makers = same_unit
                w = STRENGTH["number"] * (0.9 if len(makers) > 1 else 1.0)
            else:
                w = STRENGTH["number"]
                if v not in s.operands:
                    w *= 0.5                              # named in words, not calculated with
                if v in given:
                    w *= 0.6
                if len(makers) > 1:
                    w *= 0.5
                if v in _CONSTANTS:
                    w *= 0.7
            for i in makers:
                add(i, j, w)
        for i, other in enumerate(steps):
            if i == j or not other.defines:
                continue
            for v in other.defines:
                if v not in s.defines and re.search(_VAR_USE.format(v=re.escape(v)), s.text):
                    add(i, j, STRENGTH["variable"])
        for m in _EXPLICIT.finditer(s.text):
            k = int(m.group(1) or m.group(2)) - 1
            if 0 <= k < len(steps):
                add(k, j, STRENGTH["explicit"])
    return [(i, j, w) for (i, j), w in edges.items()]


def stable_order(n: int, edges: list[tuple[int, int, float]]) -> tuple[list[int], bool]:
    """The topological order closest to 0..n-1, and whether a cycle had to be broken."""
    live = {(i, j): w for i, j, w in edges}
    broke = False
    while True:
        indeg = [0] * n
        children: dict[int, list[int]] = {}
        for (i, j) in live:
            indeg[j] += 1
            children.setdefault(i, []).append(j)
        heap = [k for k in range(n) if indeg[k] == 0]
        heapq.heapify(heap)
        order: list[int] = []
        while heap:
            k = heapq.heappop(heap)
            order.append(k)
            for c in children.get(k, []):
                indeg[c] -= 1
                if indeg[c] == 0:
                    heapq.heappush(heap, c)
        if len(order) == n:
            return order, broke
        # a cycle among the steps left: drop its weakest edge, the one pointing furthest back first
        done = set(order)
        stuck = [(w, -(i - j), (i, j)) for (i, j), w in live.items() if i not in done and j not in done]
        del live[min(stuck)[2]]
        broke = True


def order_steps(steps: list[dict], question: str = "", reorder: bool = True) -> tuple[list[dict], list[str]]:
    """Steps (dicts with tag/text/calls) with ``depends_on`` filled, reordered when asked;
    plus row flags."""
    info = [facts(s.get("text") or "", s.get("calls")) for s in steps]
    edges = dependencies(info, question)
    flags: list[str] = []
    if reorder:
        # When the source's order already respects every confident dependency, the author's
        # order stands: weak evidence (a number that may be the question's, or computed twice)
        # does not overrule it. Otherwise every dependency counts.
        confident = [e for e in edges if e[2] >= STRENGTH["number"]]
        back = sum(w for i, j, w in edges if i > j and w < STRENGTH["number"])
        forward = sum(w for i, j, w in edges if i < j and w < STRENGTH["number"])
        trusted = all(i < j for i, j, _ in confident) and back <= forward
        order, broke = stable_order(len(steps), [e for e in edges if e[0] < e[1]] if trusted else edges)
        if broke:
            flags.append("dependency_cycle")
    else:
        order = list(range(len(steps)))
        if any(i > j for i, j, _ in edges):
            flags.append("steps_out_of_order")
    position = {old: new for new, old in enumerate(order)}
    parents: dict[int, set[int]] = {}
    for i, j, _ in edges:
        if position[i] < position[j]:          # only backward references are kept
            parents.setdefault(position[j], set()).add(position[i])
    out = []
    for new, old in enumerate(order):
        s = dict(steps[old])
        s["depends_on"] = sorted(parents.get(new, ()))
        out.append(s)
    return out, flags
