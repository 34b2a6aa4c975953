"""Parse a teacher's reply into the reasoning path: sub-questions, tagged steps, summary,
whether an output can be given, and the final answer.

The default prompt asks for labelled sections (``Issue:``, ``Sub-questions:``, ``Steps:`` with
``[THOUGHT]``/``[ACTION]``/``[CHECK]`` lines, ``Summary:``, ``Output possible:``,
``Final answer:``), but models drift: markdown headers and bold labels, ``<think>`` blocks,
``####`` or ``\\boxed{}`` answers, plain numbered lists. Whatever is not recognised as a section
is kept as steps, never dropped. Pure functions: a parser fix re-parses the cached replies.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

TAGS = ("THOUGHT", "ACTION", "CHECK", "SUMMARY")
_SECTION = re.compile(
    r"^\s*(?:#{1,6}\s*)?\**\s*(issue|sub-?questions?|steps?|reasoning|summary|output possible|can an output be given|"
    r"final answer|answer)\s*\**\s*:?\s*\**\s*(.*)$", re.I)
_TAGGED = re.compile(r"^\s*(?:[-*•]\s*|\d{1,3}[.)]\s*)?\[?\s*(THOUGHT|ACTION|CHECK|SUMMARY)\s*[\]:]\s*(.*)$", re.I)
_NUMBERED = re.compile(r"^\s*(?:[-*•]|\d{1,3}[.)])\s+(.*)$")
_REF = re.compile(r"#(\d{1,2})\b")
_THINK = re.compile(r"<think>(.*?)(?:</think>|$)", re.S | re.I)
_BOXED = re.compile(r"\\boxed\{([^{}]*)\}")
_HASHES = re.compile(r"^\s*####\s*(.+)$", re.M)
_THE_ANSWER = re.compile(r"\b(?:the\s+)?(?:final\s+)?answer\s+is\s*:?\s*(.+?)(?:\.\s*$|$)", re.I | re.M)


@dataclass
class Parsed:
    subquestions: list[dict] = field(default_factory=list)     # {question, answer, refs}
    steps: list[dict] = field(default_factory=list)            # {tag, text}; tag None: the tag table decides
    answer: str | None = None
    output_possible: bool | None = None
    reasoning: str | None = None                              # a <think> block found in the text
    flags: list[str] = field(default_factory=list)


def _clean_answer(s: str) -> str:
    s = s.strip().strip("*").strip()
    m = _BOXED.search(s)
    if m:
        s = m.group(1)
    return s.rstrip(".").strip()


def parse_reply(text: str) -> Parsed:
    out = Parsed()
    think = _THINK.search(text)
    if think:
        out.reasoning = think.group(1).strip()
        text = _THINK.sub("", text)
    section = "steps"
    for raw in text.splitlines():
        line = raw.rstrip()
        if not line.strip():
            continue
        head = _SECTION.match(line)
        if head and not _TAGGED.match(line):
            name, rest = head.group(1).lower(), head.group(2).strip()
            if name.startswith("sub"):
                section = "subquestions"
            elif name in ("steps", "step", "reasoning"):
                section = "steps"
            elif name == "issue":
                section = "issue"           # a restatement of the question: not a step
            elif name == "summary":
                section = "summary"
                if rest:
                    out.steps.append({"tag": "SUMMARY", "text": rest})
                continue
            elif name in ("output possible", "can an output be given"):
                out.output_possible = not rest.lower().startswith("no")
                section = "after"
                continue
            else:                            # final answer / answer
                if rest:
                    out.answer = _clean_answer(rest)
                section = "answer" if not rest else "after"
                continue
            if rest and section != "issue":
                _add(out, section, rest)
            continue
        if section == "answer":
            out.answer = _clean_answer(line)
            section = "after"
            continue
        if section in ("issue", "after"):
            continue
        _add(out, section, line.strip())
    if out.answer is None:
        out.answer = _fallback_answer(text)
    if out.answer is None:
        out.flags.append("no_answer")
    if out.output_possible is False:
        out.flags.append("no_output")
    return out


def _add(out: Parsed, section: str, line: str) -> None:
    if section == "subquestions":
        m = _NUMBERED.match(line)
        q = (m.group(1) if m else line).strip()
        if not q:
            return
        refs = sorted({int(r) - 1 for r in _REF.findall(q) if 0 < int(r) <= len(out.subquestions)})
        out.subquestions.append({"question": q, "answer": None, "refs": refs})
        return
    if section == "summary":
        out.steps.append({"tag": "SUMMARY", "text": line})
        return
    tagged = _TAGGED.match(line)
    if tagged:
        body = tagged.group(2).strip()
        if body:
            out.steps.append({"tag": tagged.group(1).upper(), "text": body})
        return
    m = _NUMBERED.match(line)
    body = (m.group(1) if m else line).strip()
    hashes = _HASHES.match(body)
    if hashes:                               # GSM8K style: '#### 72' ends the reasoning
        out.answer = _clean_answer(hashes.group(1))
        return
    if body:
        out.steps.append({"tag": None, "text": body})


def _fallback_answer(text: str) -> str | None:
    for pattern in (_HASHES, _BOXED):
        found = pattern.findall(text)
        if found:
            return _clean_answer(found[-1])
    found = _THE_ANSWER.findall(text)
    if found:
        return _clean_answer(found[-1])
    return None

