"""Exporter base class, registry, and what every export shares: the user turn of a Q-A row,
the rendered assistant turn, and writing one Parquet file per split."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import jinja2
import pyarrow as pa

from factory.output import sha256_file, write_parquet_atomic
from factory.quarantine import Quarantine
from factory.recipe import LoadedRecipe
from factory.registry import Registry
from factory.teacher.prompts import find_template

MESSAGES = pa.list_(pa.struct([pa.field("role", pa.string()), pa.field("content", pa.string())]))


@dataclass
class ExportFile:
    kind: str
    split: str
    path: str          # relative to the output directory
    rows: int
    sha256: str

    def to_json(self) -> dict:
        return asdict(self)


@dataclass
class ExportContext:
    loaded: LoadedRecipe
    out: Path                          # the staging directory of the run
    quarantine: Quarantine             # the run's quarantine: dpo reads teacher samples from it, and adds dropped pairs
    progress: Any = None
    files: list[ExportFile] = field(default_factory=list)


class Exporter:
    kind: ClassVar[str]

    def __init__(self, ctx: ExportContext, opts: Any):
        self.ctx = ctx
        self.opts = opts

    def write(self, table: pa.Table) -> dict[str, Any]:
        """Write the export's files (via ``self.save``) and return its report."""
        raise NotImplementedError

    def save(self, split: str, rows: pa.Table, name: str | None = None) -> ExportFile:
        rel = f"exports/{self.kind}/{name or split}-00000-of-00001.parquet"
        write_parquet_atomic(rows, self.ctx.out / rel)
        f = ExportFile(self.kind, split, rel, rows.num_rows, sha256_file(self.ctx.out / rel))
        self.ctx.files.append(f)
        return f


EXPORTERS: Registry[type[Exporter]] = Registry("export", name_attr="kind")
register_export = EXPORTERS.register


def write_exports(ctx: ExportContext, table: pa.Table) -> tuple[list[ExportFile], dict[str, dict]]:
    from factory.exports.trainers import write_llamafactory

    reports = {}
    for opts in ctx.loaded.recipe.exports:
        if ctx.progress is not None:
            ctx.progress.start(f"export {opts.kind}", total=table.num_rows)
        reports[opts.kind] = EXPORTERS[opts.kind](ctx, opts).write(table)
        if ctx.progress is not None:
            ctx.progress.advance(f"export {opts.kind}", table.num_rows)
            ctx.progress.finish(f"export {opts.kind}")
    dpo = next((o for o in ctx.loaded.recipe.exports if o.kind == "dpo"), None)
    lf = write_llamafactory(ctx, ctx.loaded.recipe.name, ctx.files, dpo.format if dpo else None)
    if lf:
        reports["llamafactory"] = lf
    return ctx.files, reports


# ---- what the exports share ---------------------------------------------------------------------

def user_turn(row: dict) -> str:
    """A Q-A row's question as the user asks it, options included."""
    text = row.get("question") or ""
    options = row.get("options") or []
    if options:
        text += "\n\nOptions:\n" + "\n".join(f"{o['label']}) {o['text']}" for o in options)
    return text


def assistant_template(name: str | None, base_dir: Path) -> jinja2.Template:
    path = find_template(name or "sft_answer", base_dir)
    env = jinja2.Environment(undefined=jinja2.StrictUndefined, autoescape=False, keep_trailing_newline=False)
    return env.from_string(path.read_text(encoding="utf-8"))


def render_assistant(template: jinja2.Template, row: dict) -> str:
    return template.render(steps=row.get("steps") or [], subquestions=row.get("subquestions") or [],
                           answer=row.get("answer") or "", question=row.get("question") or "", domain=row.get("domain")).strip()


def by_split(rows: list[dict]) -> dict[str, list[dict]]:
    """Rows grouped by their ``split`` key (one export file per split), splits sorted."""
    out: dict[str, list[dict]] = {}
    for r in rows:
        out.setdefault(r["split"], []).append(r)
    return dict(sorted(out.items()))
