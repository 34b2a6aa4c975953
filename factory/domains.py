"""Domain tags: the offline classifier behind ``domain: auto``, and domain-adapted wording.

The classifier is a table of cues per domain, each a case-insensitive regular expression with a
weight, counted (up to MAX_HITS times) in one vectorised pass per cue over what the user asked
(question, user turns, options: full weight) and what was replied (assistant turns, the chosen
reply: REPLY_WEIGHT); a yes/no gold answer and the row kind (a preference pair, a chat) add
priors. The row takes the domain with the highest score; a row no cue fires on is ``general``.
A recipe's ``domains:`` adds cues (RECIPE_CUE_WEIGHT each: the user asked for them) to a
built-in domain or defines a new one.

Built-in domains and what they mean:
- math: arithmetic and algebra word problems, multiple-choice quantitative questions;
- commonsense: short yes/no questions that need world knowledge and implicit steps;
- open-reasoning: proofs, formal maths (LaTeX), code, and prompts that ask for step-by-step thought;
- instructions: task instructions ("Write…", "Classify…", "Given…");
- mental-health: counselling and emotional-support conversations;
- helpfulness: open assistant dialogue (multi-turn chats, preference pairs).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import polars as pl


@dataclass(frozen=True)
class Cue:
    pattern: str
    weight: float = 1.0


AUTO_DOMAIN = "auto"      # a source's domain: classify every row
_YES_NO_START = r"^\s*(?:would|could|was|were|is|are|do|does|did|can|has|have|will|should|might)\b"

BUILTIN: dict[str, list[Cue]] = {
    "math": [
        Cue(r"\bhow (?:many|much|long|far|old)\b", 2.0),
        Cue(r"\b(?:percent|percentage|average|total|remaining|each|per|twice|half|ratio|probability|"
            r"sum|product|profit|discount|interest|speed|rate|area|perimeter|volume|cost|costs|price)\b", 0.5),
        Cue(r"[$€£]\s?\d|\d\s?%|\d+\s*(?:km|cm|kg|mph|hours?|minutes?|days?|years?|dollars?|cents?)\b", 1.0),
        Cue(r"\d+(?:\.\d+)?", 0.25),                 # every number
        Cue(r"(?m)^\s*\(?[A-E]\)\s*[-$\d]", 1.5),   # multiple-choice options with numbers
        Cue(r"\b(?:calculate|compute|find the (?:value|number|sum|area|total))\b", 1.0),
    ],
    "commonsense": [
        Cue(_YES_NO_START + r"[^\n]{0,150}\?\s*$", 3.0),      # one short yes/no question
    ],
    "open-reasoning": [
        Cue(r"step[- ]by[- ]step|let'?s think|think (?:first|carefully|gradually)|stream of (?:thoughts?|consciousness)|"
            r"reasoning process|be accurate as possible|explain your reasoning|let me think|think (?:slowly|hard)|"
            r"detailed solution|(?:give|show) (?:the |your )?(?:rationale|reasoning|work)|chain of thought|hmm+", 3.0),
        Cue(r"\\(?:frac|sqrt|begin|left|right|cdot|sum|int|infty|mathbb|pmatrix)|\$[^$\n]{1,80}\$", 2.0),
        Cue(r"\b(?:prove|proof|theorem|lemma|derivative|integral|matrix|eigen\w*|polynomial|inequality|"
            r"complexity|algorithm|recursion|tensor|vector)\b", 1.5),
        Cue(r"\b(?:python|java(?:script)?|rust|c\+\+|sql|function|program|code|script|api|regex|array|string)\b", 2.0),
        Cue(r"[\u3040-\u30ff\u3400-\u9fff\uac00-\ud7af]", 0.2),       # CJK text: each character
    ],
    "instructions": [
        Cue(r"^\s*(?:write|create|generate|give|list|suggest|classify|given|convert|rewrite|summari[sz]e|"
            r"translate|make|explain|describe|tell|identify|come up|design|compose|plan|recommend|"
            r"paraphrase|correct|edit|sort|extract|answer|fill|choose|name|find|brainstorm|add|complete|replace|"
            r"reply|respond|parse|read|using|show|compare|rank|rate|predict|detect|fix|remove|select|analy[sz]e|"
            r"estimate|in this task|you need to|you are given|suppose|imagine|pretend|act as|help me)\b", 2.5),
        Cue(r"\b(?:the following|the given|this (?:sentence|text|paragraph|list)|output|input|in one sentence|"
            r"for example|e\.g\.)\b", 0.75),
    ],
    "mental-health": [
        Cue(r"\b(?:depress\w*|anxi\w*|therap\w*|counsel\w*|panic|trauma\w*|suicid\w*|self[- ]harm|ptsd|grief|"
            r"griev\w*|lonel\w*|self[- ]esteem|abuse\w*|addict\w*|insecur\w*|mental(?:ly)?|emotion\w*|"
            r"stress\w*|overwhelm\w*|worthless|hopeless)\b", 2.0),
        Cue(r"\b(?:feel\w*|felt|my (?:boyfriend|girlfriend|husband|wife|partner|mom|mother|dad|father|parents)|"
            r"relationship|marriage|divorce|break ?up|cheat\w*|sad|sadness|unhappy|cry\w*|angry|anger|hurt|empty|"
            r"numb|alone|upset|blues|cope|coping|worr\w*|fear\w*|afraid|scared|guilt\w*|shame|jealous\w*|"
            r"cut(?:ting)? myself|hate myself|motivat\w*|confiden\w*|sleep|nightmare\w*|intrusive)\b", 1.0),
    ],
    "helpfulness": [
        Cue(r"^\s*(?:human|assistant)\s*:", 2.0),
        Cue(r"\b(?:can you|could you|would you|do you know|i want|i need|help me|thanks?|thank you|okay|ok|"
            r"what do you|any (?:ideas|suggestions|recommendations)|i'm looking for|how do i|how can i)\b", 1.0),
    ],
}
_YES_NO_ANSWER = r"(?i)^\s*(?:yes|no|true|false)\s*$"
# a preference pair or a chat is an assistant dialogue unless its words say more
KIND_PRIOR = {"preference": ("helpfulness", 3.0), "conversation": ("helpfulness", 1.0)}


def possible_domains(recipe) -> list[str]:
    """Every domain a recipe's rows can carry: its sources' domains, and with ``auto`` every
    classifier domain and ``general``."""
    named = {s.domain for s in recipe.sources if s.domain != AUTO_DOMAIN}
    if any(s.domain == AUTO_DOMAIN for s in recipe.sources) or recipe.derive is not None:   # derived rows: classified
        named |= set(cues_for(recipe.domains)) | {"general"}
    return sorted(named)


def cues_for(extra: dict[str, list[str]] | None) -> dict[str, list[Cue]]:
    """Built-in cues plus a recipe's (RECIPE_CUE_WEIGHT each; a new name makes a new domain)."""
    out = {d: list(c) for d, c in BUILTIN.items()}
    for domain, patterns in (extra or {}).items():
        out.setdefault(domain, []).extend(Cue(p, RECIPE_CUE_WEIGHT) for p in patterns)
    return out


def _contents(column: str, role: str | None = None) -> pl.Expr:
    turns = pl.col(column)
    if role is not None:
        turns = turns.list.eval(pl.element().filter(pl.element().struct.field("role") == role))
    return turns.list.eval(pl.element().struct.field("content")).list.join("\n")


def asked_text() -> pl.Expr:
    """What the user brings: question, user turns, options. Cues count fully here."""
    options = pl.col("options").list.eval(
        pl.format("({}) {}", pl.element().struct.field("label"), pl.element().struct.field("text"))).list.join("\n")
    return pl.concat_str([pl.col("question"), _contents("messages", "user"), options],
                         separator="\n", ignore_nulls=True)


def replied_text() -> pl.Expr:
    """What was answered (assistant turns, the preferred reply): cues count at REPLY_WEIGHT."""
    return pl.concat_str([_contents("messages", "assistant"), _contents("chosen")], separator="\n", ignore_nulls=True)


REPLY_WEIGHT = 0.3
RECIPE_CUE_WEIGHT = 3.0
MAX_HITS = 4


def scores(df: pl.DataFrame, cues: dict[str, list[Cue]] | None = None) -> pl.DataFrame:
    """A column per domain: every row's cue score (needs question, messages, chosen, options,
    gold_answer, kind)."""
    cues = cues or BUILTIN
    texts = df.select(asked=asked_text().fill_null(""), replied=replied_text().fill_null(""))
    question = df["question"].fill_null("")
    out = {}
    for domain, items in cues.items():
        total = pl.Series([0.0] * df.height)
        for cue in items:
            if cue.pattern.startswith("^"):          # anchored cues: the start of the question, once
                total = total + question.str.contains("(?i)" + cue.pattern).cast(pl.Float64) * cue.weight
                continue
            pattern = "(?i)" + cue.pattern
            # a cue counts up to MAX_HITS times: a long passage full of numbers is not therefore maths
            hits = (texts["asked"].str.count_matches(pattern).clip(upper_bound=MAX_HITS).cast(pl.Float64)
                    + REPLY_WEIGHT * texts["replied"].str.count_matches(pattern).clip(upper_bound=MAX_HITS).cast(pl.Float64))
            total = total + hits * cue.weight
        out[domain] = total
    if "commonsense" in out:
        yes_no = df["gold_answer"].fill_null("").str.contains(_YES_NO_ANSWER).cast(pl.Float64)
        out["commonsense"] = out["commonsense"] + yes_no * 2.0
    for kind, (domain, weight) in KIND_PRIOR.items():
        if domain in out:
            out[domain] = out[domain] + (df["kind"] == kind).cast(pl.Float64) * weight
    return pl.DataFrame(out)


def classify(df: pl.DataFrame, cues: dict[str, list[Cue]] | None = None) -> pl.Series:
    """The domain of every row: the best-scoring one, ``general`` when no cue fires."""
    if df.height == 0:
        return pl.Series("domain", [], dtype=pl.String)
    table = scores(df, cues)
    names = table.columns
    best = table.select(best=pl.concat_list(pl.all()).list.arg_max(), top=pl.max_horizontal(pl.all()))
    picked = best["best"].replace_strict(list(range(len(names))), names, return_dtype=pl.String)
    return picked.zip_with(best["top"] > 0, pl.Series(["general"] * df.height)).rename("domain")


# ---- domain-adapted wording -------------------------------------------------------------------

DOMAIN_NAMES = {"math": "mathematics", "commonsense": "everyday knowledge", "open-reasoning": "this problem",
                "instructions": "this task", "mental-health": "mental health", "helpfulness": "this conversation"}
# generic prompts: "What knowledge is essential?", "What facts are needed?", "What should be checked?"
_GENERIC = re.compile(
    r"^(?P<head>(?:what|which)\s+(?:knowledge|information|facts?|concepts?|principles?|skills?|steps?|"
    r"assumptions?|definitions?|formulas?)\s+(?:is|are)\s+(?:essential|needed|required|important|relevant|useful|key))"
    r"(?P<tail>\s*\??)$", re.I)


def in_domain(prompt: str, domain: str) -> str:
    """'What knowledge is essential?' → 'What knowledge is essential in mathematics?'; other
    prompts unchanged."""
    m = _GENERIC.match(prompt.strip())
    if not m or domain in ("general", ""):
        return prompt
    name = DOMAIN_NAMES.get(domain, domain.replace("-", " "))
    return f"{m.group('head')} in {name}?"
