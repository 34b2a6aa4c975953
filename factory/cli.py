"""``factory`` command line. Exit codes: 0 ok, 2 bad recipe or input, 1 crash (a bug: report it)."""

from __future__ import annotations

import json
import sys
import traceback
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from factory import __version__
from factory.errors import FactoryError, RecipeError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False, help="CoT Factory: recipes → clean chain-of-thought shards.")
out_console = Console()
err_console = Console(stderr=True)


class RichProgress:
    """The pipeline's Progress protocol on a rich progress display: one bar per stage."""

    def __init__(self, progress: Progress):
        self.progress = progress
        self.tasks: dict[str, int] = {}

    def start(self, task: str, total: int | None = None) -> None:
        self.tasks[task] = self.progress.add_task(task, total=total, info="")

    def advance(self, task: str, n: int = 1) -> None:
        self.progress.advance(self.tasks[task], n)

    def note(self, task: str, text: str) -> None:
        self.progress.update(self.tasks[task], info=text)

    def finish(self, task: str) -> None:
        t = self.tasks[task]
        done = self.progress.tasks[t].completed
        self.progress.update(t, total=max(done, 1), completed=max(done, 1))


def _fail(e: FactoryError) -> None:
    if isinstance(e, RecipeError):
        for p in e.problems:
            err_console.print(p, style="red", markup=False, highlight=False, soft_wrap=True)
        n = len(e.problems)
        err_console.print(f"{n} problem{'s' if n != 1 else ''} in the recipe", style="bold red")
    else:
        err_console.print(f"error: {e}", style="bold red", markup=False, highlight=False, soft_wrap=True)
    raise typer.Exit(e.exit_code)


@app.command()
def run(
    recipe: Path = typer.Argument(..., help="recipe YAML"),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="output directory (default: the recipe's output)"),
    limit: Optional[int] = typer.Option(None, "--limit", "-n", min=1, help="read at most N records per source"),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="no progress bars or summary"),
    dry_run: bool = typer.Option(False, "--dry-run", help="render the teacher's first prompts and project requests, tokens and cost; send nothing"),
) -> None:
    """Run a recipe: sources → canonical rows → shards, manifest and card."""
    from factory.pipeline import run as run_pipeline
    from factory.recipe import load_recipe

    try:
        loaded = load_recipe(recipe)
        if dry_run:
            from factory.pipeline import plan
            from factory.report import print_plan

            print_plan(out_console, plan(loaded, limit=limit))
            return
        if quiet:
            result = run_pipeline(loaded, out, limit=limit)
        else:
            columns = (SpinnerColumn(), TextColumn("{task.description:<28}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                       TextColumn("{task.fields[info]}", style="cyan"))
            with Progress(*columns, console=err_console, transient=False) as bars:
                result = run_pipeline(loaded, out, limit=limit, progress=RichProgress(bars))
    except FactoryError as e:
        _fail(e)
    if not quiet:
        from factory.report import print_summary

        print_summary(out_console, result.manifest, str(result.out), result.seconds.get("total", 0.0), result.quarantine.top_reasons(),
                      result.this_run)


@app.command()
def validate(recipes: list[Path] = typer.Argument(..., help="recipe YAML file(s)")) -> None:
    """Check recipes against the schema; print every problem as file:line: field: message."""
    from factory.recipe import load_recipe

    failed: list[str] = []
    for path in recipes:
        try:
            loaded = load_recipe(path)
        except RecipeError as e:
            failed.extend(e.problems)
            continue
        out_console.print(f"{path}: ok ({len(loaded.recipe.sources)} sources, sha256 {loaded.sha256[:12]})", highlight=False)
    if failed:
        _fail(RecipeError(failed))


@app.command()
def inspect(
    out: Path = typer.Argument(..., help="a run's output directory"),
    domain: Optional[str] = typer.Option(None, "--domain", "-d", help="sample from this domain"),
    row: int = typer.Option(0, "--row", "-r", min=0, help="index of the sample row within the domain"),
    quarantine: bool = typer.Option(False, "--quarantine", help="list quarantined rows instead"),
    as_json: bool = typer.Option(False, "--json", help="print the sample row as JSON"),
) -> None:
    """Rows per domain and stage, and one row pretty-printed."""
    import pyarrow.parquet as pq

    from factory.manifest import load_manifest
    from factory.report import domain_table, render_row, source_table, stage_table

    try:
        manifest = load_manifest(out)
        if quarantine:
            _print_quarantine(out)
            return
        domains = list(manifest["domains"])
        if not domains:
            raise FactoryError(f"{out}: the run wrote no rows")
        pick = domain or domains[0]
        if pick not in manifest["domains"]:
            raise FactoryError(f"no domain '{pick}' in {out} (domains: {', '.join(domains)})")
    except FactoryError as e:
        _fail(e)
    if not as_json:
        out_console.print(domain_table(manifest), stage_table(manifest), source_table(manifest))
    files = [s["path"] for s in manifest["shards"] if s["domain"] == pick]
    offset = row
    for rel in files:
        pf = pq.ParquetFile(out / rel)
        if offset < pf.metadata.num_rows:
            sample = pf.read().slice(offset, 1).to_pylist()[0]
            if as_json:
                out_console.print_json(json.dumps(sample, ensure_ascii=False))
            else:
                out_console.print(render_row(sample))
            return
        offset -= pf.metadata.num_rows
    _fail(FactoryError(f"domain '{pick}' has fewer than {row + 1} rows"))


def _print_quarantine(out: Path) -> None:
    from rich.table import Table

    from factory.quarantine import read_quarantine

    q = read_quarantine(out)
    t = Table(title=f"quarantine: {q.num_rows:,} rows")
    for col in ("stage", "source_name", "source_line", "reason"):
        t.add_column(col)
    for r in q.select(["stage", "source_name", "source_line", "reason"]).to_pylist()[:200]:
        t.add_row(r["stage"], r["source_name"] or "", str(r["source_line"] or ""), r["reason"])
    out_console.print(t)


@app.command()
def schema(kind: str = typer.Argument("recipe", help="recipe | row")) -> None:
    """Print the JSON Schema of a recipe or of a canonical row."""
    from factory.schemas import generated

    docs = generated()
    if kind not in docs:
        _fail(FactoryError(f"unknown schema '{kind}' (recipe | row)"))
    sys.stdout.write(docs[kind])


@app.command()
def publish(
    out: Path = typer.Argument(..., help="a run's output directory"),
    repo_id: str = typer.Option(..., "--repo-id", help="ORG/NAME of the dataset repo"),
    private: bool = typer.Option(True, "--private/--public", help="private by default"),
    dry_run: bool = typer.Option(False, "--dry-run", help="list every file and print the card; upload nothing"),
    token_env: Optional[str] = typer.Option(None, "--token-env", help="environment variable with the token (default: HF_TOKEN or your hf login)"),
    message: Optional[str] = typer.Option(None, "--message", "-m", help="commit message"),
) -> None:
    """Publish a run to the Hugging Face Hub (create_repo + upload_folder)."""
    from rich.table import Table

    from factory.publish import plan, publish as do_publish, token_from

    try:
        p = plan(out, repo_id, private)
        if dry_run:
            t = Table(title=f"{repo_id} ({'private' if private else 'public'}): {len(p.files)} files, "
                            f"{sum(n for _, n in p.files) / 1e6:.1f} MB", title_justify="left")
            t.add_column("file")
            t.add_column("bytes", justify="right")
            for path, n in p.files:
                t.add_row(path, f"{n:,}")
            out_console.print(t)
            out_console.print(p.card, markup=False, highlight=False)
            return
        url = do_publish(p, token_from(token_env), message)
    except FactoryError as e:
        _fail(e)
    out_console.print(f"published {len(p.files)} files to {url}", highlight=False)


@app.command()
def train(
    plan_path: Path = typer.Argument(..., metavar="PLAN", help="training plan YAML"),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="checkpoint directory (default: the plan's output)"),
) -> None:
    """Train on a run's exports: SFT / DPO stages with TRL + PEFT (needs the [train] extra)."""
    from rich.table import Table

    try:
        import trl  # noqa: F401
    except ImportError:
        _fail(FactoryError("factory train needs the [train] extra: pip install 'cot-factory[train]'"))
    from train.plan import load_plan
    from train.run import run_plan

    try:
        plan, raw = load_plan(plan_path)

        def show(r: dict) -> None:
            err_console.print(f"stage {r['stage']} ({r['method']}, {r['loss_type']}): {r['steps']} steps, loss "
                              f"{r['first_loss']:.4f} → {r['last_loss']:.4f}, {r['seconds']:.1f} s, "
                              f"{r['tokens_per_second'] or '–'} tok/s → {r['checkpoint']}", highlight=False)

        result = run_plan(plan, raw, plan_path.read_text(encoding="utf-8"), out, on_stage=show)
    except FactoryError as e:
        _fail(e)
    t = Table(title=f"plan {plan.name} → {result['out']}", title_justify="left")
    for col in ("stage", "method", "rows", "steps", "first loss", "last loss", "tok/s", "s"):
        t.add_column(col, justify="left" if col in ("stage", "method") else "right")
    for r in result["stages"]:
        t.add_row(r["stage"], f"{r['method']} ({r['loss_type']})", f"{r['rows']:,}", str(r["steps"]), f"{r['first_loss']:.4f}",
                  f"{r['last_loss']:.4f}", str(r["tokens_per_second"] or "–"), f"{r['seconds']:.1f}")
    out_console.print(t)
    if "eval" in result:
        e = Table(title=f"eval: {result['eval']['rows']} rows ({result['eval']['rows_with_draft']} with a student draft)", title_justify="left")
        for col in ("prompt", "rows", "correct", "accuracy"):
            e.add_column(col, justify="left" if col == "prompt" else "right")
        for name, v in result["eval"]["variants"].items():
            e.add_row(name, str(v["rows"]), str(v["correct"]), "–" if v["accuracy"] is None else f"{100 * v['accuracy']:.1f} %")
        out_console.print(e)


cache_app = typer.Typer(help="The teacher's response cache (SQLite).", no_args_is_help=True)
app.add_typer(cache_app, name="cache")


@cache_app.command("stats")
def cache_stats(path: Optional[Path] = typer.Option(None, "--path", help="cache file (default: $COT_FACTORY_CACHE or ~/.cache/cot-factory/teacher.sqlite)"),
                as_json: bool = typer.Option(False, "--json")) -> None:
    """Responses, bytes and models in the cache."""
    from rich.table import Table

    from factory.teacher.cache import ResponseCache

    cache = ResponseCache(path)
    st = cache.stats()
    cache.close()
    if as_json:
        out_console.print_json(json.dumps(st))
        return
    t = Table(title=f"{st['path']}: {st['responses']:,} responses, {st['bytes'] / 1e6:.1f} MB")
    for col in ("provider", "model", "responses", "MB"):
        t.add_column(col, justify="right" if col in ("responses", "MB") else "left")
    for m in st["by_model"]:
        t.add_row(m["provider"], m["model"], f"{m['responses']:,}", f"{(m['reply_bytes'] or 0) / 1e6:.2f}")
    out_console.print(t)


@cache_app.command("clear")
def cache_clear(path: Optional[Path] = typer.Option(None, "--path", help="cache file"),
                model: Optional[str] = typer.Option(None, "--model", help="only this model's responses"),
                older_than_days: Optional[float] = typer.Option(None, "--older-than-days", min=0),
                yes: bool = typer.Option(False, "--yes", "-y", help="do not ask")) -> None:
    """Delete cached responses (a re-run then pays for them again)."""
    from factory.teacher.cache import ResponseCache

    cache = ResponseCache(path)
    if not yes and not typer.confirm(f"delete {'matching' if model or older_than_days is not None else 'all'} responses in {cache.path}?"):
        raise typer.Exit(1)
    n = cache.clear(model=model, older_than_s=older_than_days * 86400 if older_than_days is not None else None)
    cache.close()
    out_console.print(f"deleted {n:,} responses from {cache.path}")


@app.command()
def version() -> None:
    """Print the version."""
    out_console.print(__version__)


def main() -> None:
    try:
        app()
    except SystemExit:
        raise
    except Exception:  # a crash, not a user error: say so, and exit 1
        err_console.print(traceback.format_exc(), style="red", markup=False, highlight=False)
        err_console.print("crash: this is a bug in CoT Factory, please report it with the traceback above", style="bold red")
        sys.exit(1)
