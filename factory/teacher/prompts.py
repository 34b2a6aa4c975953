"""Prompts: Jinja2 templates (``recipes/prompts/*.j2``) rendered per row, plus few-shot
examples drawn from rows of the same domain that already carry traces.

A template is found as a path relative to the recipe, then as ``<name>.j2`` in the recipe's
``prompts/`` folder, then among the built-in templates. Chat templates mark their messages
with ``### system`` / ``### user`` / ``### assistant`` lines; a template without markers is one
user message (chat) or the whole prompt (completion). Undefined variables are errors.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2
import polars as pl

from factory.answers import normalize
from factory.domains import DOMAIN_NAMES
from factory.errors import FactoryError
from factory.recipe.model import TeacherOptions
from factory.steps.tags import fill_tags, rules_for

BUILTIN_DIR = Path(__file__).resolve().parents[2] / "recipes" / "prompts"
_MARKER = "### "
_ROLES = ("system", "user", "assistant")
COMPLETION_STOPS = ["\nQuestion:", "\n\n\n"]
_HINTS = {"number": "a number only", "yesno": "yes or no", "letter": "the option letter only", "text": "the answer only"}


def find_template(name: str, base_dir: Path) -> Path:
    for candidate in (base_dir / name, base_dir / "prompts" / f"{name}.j2", BUILTIN_DIR / f"{name}.j2", BUILTIN_DIR / name):
        if candidate.is_file():
            return candidate
    known = sorted(p.stem for p in BUILTIN_DIR.glob("*.j2"))
    raise FactoryError(f"teacher.prompt: no template '{name}' (looked beside the recipe, in its prompts/ folder and among "
                       f"the built-in ones: {', '.join(known)})")


@dataclass
class Rendered:
    messages: list[dict] | None
    prompt: str | None

    @property
    def text(self) -> str:
        return self.prompt if self.prompt is not None else "\n\n".join(f"[{m['role']}]\n{m['content']}" for m in self.messages or [])


class Prompter:
    def __init__(self, opts: TeacherOptions, base_dir: Path, mode: str):
        self.opts = opts
        self.mode = mode
        name = opts.prompt or ("reasoning_path" if mode == "chat" else "fewshot_completion")
        self.path = find_template(name, base_dir)
        env = jinja2.Environment(undefined=jinja2.StrictUndefined, keep_trailing_newline=False, autoescape=False)
        try:
            self.template = env.from_string(self.path.read_text(encoding="utf-8"))
        except jinja2.TemplateSyntaxError as e:
            raise FactoryError(f"{self.path}:{e.lineno}: template syntax error: {e.message}") from None

    def domain_phrase(self, domain: str) -> str:
        if domain in self.opts.domain_phrases:
            return self.opts.domain_phrases[domain]
        if not self.opts.domain_wording or domain in ("general", ""):
            return ""
        return "in " + DOMAIN_NAMES.get(domain, domain.replace("-", " "))

    def render(self, row: dict[str, Any], examples: list[dict]) -> Rendered:
        gold = row.get("gold_answer") or ""
        context = {
            "question": row["question"], "options": row.get("options") or [], "domain": row["domain"],
            "domain_phrase": self.domain_phrase(row["domain"]), "examples": examples, "mode": self.mode,
            "answer_hint": _HINTS[normalize(gold, row.get("options")).kind] if gold else "the answer only",
        }
        try:
            text = self.template.render(**context)
        except jinja2.UndefinedError as e:
            raise FactoryError(f"{self.path}: {e.message} (variables: {', '.join(sorted(context))})") from None
        if self.mode == "completion":
            return Rendered(messages=None, prompt=text)
        return Rendered(messages=_messages(text), prompt=None)


def _messages(text: str) -> list[dict]:
    messages: list[dict] = []
    role, lines = "user", []
    for line in text.splitlines():
        head = line.strip().lower()
        if head.startswith(_MARKER) and head[len(_MARKER):].strip() in _ROLES:
            if "\n".join(lines).strip():
                messages.append({"role": role, "content": "\n".join(lines).strip()})
            role, lines = head[len(_MARKER):].strip(), []
        else:
            lines.append(line)
    if "\n".join(lines).strip():
        messages.append({"role": role, "content": "\n".join(lines).strip()})
    return messages


def pick_examples(df: pl.DataFrame, k: int, tags: dict[str, list[str]] | None = None) -> dict[str, list[dict]]:
    """Up to ``k`` examples per domain (plus ``k + 1`` candidates so a row never sees itself),
    from rows with 2–8 steps and an answer not known to be wrong, chosen in order of row id
    (itself a hash) — the same examples for every row of a domain, so the prompt prefix repeats
    (providers bill cached prefixes for less). Steps get their tags from the tag table."""
    if k == 0 or df.height == 0:
        return {}
    steps_n = pl.col("steps").list.len()
    pool = df.filter(
        (pl.col("kind") == "qa") & steps_n.is_between(2, 8) & pl.col("answer").is_not_null()
        & (pl.col("answer_correct").fill_null(True)) & (pl.col("question").str.len_chars() < 600)
    ).select("id", "domain", "question", "options", "steps", "answer")
    if pool.height == 0:
        return {}
    pool = pool.sort("domain", "id").group_by("domain", maintain_order=True).head(k + 1)
    pool = pool.with_columns(steps=fill_tags(pl.col("steps"), rules_for(tags)))
    out: dict[str, list[dict]] = {}
    for r in pool.iter_rows(named=True):
        out.setdefault(r["domain"], []).append({"id": r["id"], "question": r["question"], "options": r["options"] or [],
                                                "steps": [{"tag": st["tag"], "text": st["text"]} for st in r["steps"]], "answer": r["answer"]})
    return out


def examples_for(row_id: str, domain: str, by_domain: dict[str, list[dict]], k: int) -> list[dict]:
    """The domain's examples, else any domain's (sorted by name: deterministic); never the row itself."""
    pool = by_domain.get(domain) or next((by_domain[d] for d in sorted(by_domain)), [])
    return [e for e in pool if e["id"] != row_id][:k]
