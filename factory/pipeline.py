"""The flow of a row, top to bottom:

    recipe ─► read (records) ─► map (fields → typed columns) ─► standardize (existing traces)
           ─► assemble (ids, provenance → canonical rows) ─► whole-table stages ─► shards
           ─► quarantine, manifest.json, README.md card, run.json

Each arrow is a module with a small typed interface; this file only wires them and keeps the
books: for every stage, rows in + rows it made (derived rows) = rows out + rows quarantined.
"""

from __future__ import annotations

import gc
import json
import os
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator, Protocol

import polars as pl
import pyarrow as pa
import yaml

from factory.card import render_card
from factory.stats import token_lengths
from factory.errors import FactoryError
from factory.domains import AUTO_DOMAIN, classify as classify_domains, cues_for as domain_cues
from factory.manifest import SourceReport, StageCount, build_manifest, dumps
from factory.output import publish_dir, sha256_file, staging_dir, write_bytes_atomic, write_parquet_atomic
from factory.quarantine import Quarantine
from factory.recipe import LoadedRecipe
from factory.recipe.model import QASource, SourceBase
from factory.rows import ROW_SCHEMA, conform, empty_table, make_ids, make_row_ids
from factory.shards import write_shards
from factory.sources import open_source
from factory.sources.mapping import MAPPERS
from factory.clean.decontaminate import Decontaminate
from factory.clean.dedup import Dedup
from factory.clean.validate import Validate, prefetch_great_expectations, stop_worker
from factory.derive import Derive
from factory.exports import ExportContext, write_exports
from factory.mix import Mix
from factory.stages import Stage, StageContext, UniqueIds
from factory.steps.stage import Steps
from factory.teacher.stage import Teacher
from factory.standardize import standardize

SOURCE_STAGES = ("read", "map", "standardize")
# Sources, and shard files, are processed this many at a time (Arrow and polars do the heavy
# work and release the GIL). COT_FACTORY_THREADS overrides.
SOURCE_THREADS = int(os.environ.get("COT_FACTORY_THREADS", str(min(8, os.cpu_count() or 2))))


class Progress(Protocol):
    def start(self, task: str, total: int | None = None) -> None: ...
    def advance(self, task: str, n: int = 1) -> None: ...
    def note(self, task: str, text: str) -> None: ...          # a live line beside the bar (teacher: req/s, $, cache hits)
    def finish(self, task: str) -> None: ...


class NoProgress:
    def start(self, task: str, total: int | None = None) -> None: ...
    def advance(self, task: str, n: int = 1) -> None: ...
    def note(self, task: str, text: str) -> None: ...
    def finish(self, task: str) -> None: ...


@dataclass
class RunResult:
    out: Path
    manifest: dict
    quarantine: Quarantine
    seconds: dict[str, float] = field(default_factory=dict)
    this_run: dict[str, dict] = field(default_factory=dict)     # per stage: what this run did (teacher: sent, cached, $)


def run(loaded: LoadedRecipe, out: Path | None = None, *, limit: int | None = None,
        progress: Progress | None = None) -> RunResult:
    # The run makes millions of short-lived Python objects (row numbers, keys, ids) and no
    # reference cycles; the cyclic collector rescanning them took a fifth of the run's CPU
    # (py-spy, bench/standardize.py). Reference counting still frees everything.
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        with _arrow_memory_pool():
            return _run(loaded, out, limit=limit, progress=progress)
    finally:
        stop_worker()
        if was_enabled:
            gc.enable()


@contextmanager
def _arrow_memory_pool() -> Iterator[None]:
    """Arrow's jemalloc pool for the run, unless the user chose one (ARROW_DEFAULT_MEMORY_POOL).
    With the default mimalloc pool, returning and re-faulting pages cost 0.9–1.3 s of system
    time on the 137k-row bench (2 cores); jemalloc keeps them: 0.5 s, 20 % less wall time."""
    if os.environ.get("ARROW_DEFAULT_MEMORY_POOL"):
        yield
        return
    try:
        pool = pa.jemalloc_memory_pool()
    except (NotImplementedError, pa.ArrowNotImplementedError):
        yield
        return
    previous = pa.default_memory_pool()
    pa.set_memory_pool(pool)
    try:
        yield
    finally:
        pa.set_memory_pool(previous)


def _run(loaded: LoadedRecipe, out: Path | None, *, limit: int | None, progress: Progress | None) -> RunResult:
    progress = progress or NoProgress()
    recipe = loaded.recipe
    out = Path(out or recipe.output_dir)
    started, clock = datetime.now(timezone.utc), time.perf_counter()
    seconds: dict[str, float] = {}
    quarantine = Quarantine()
    ctx = StageContext.of(loaded)
    table_stages = build_table_stages(ctx)
    if recipe.validate_ is not None:
        prefetch_great_expectations()     # a worker process imports it while we read
    totals = {name: StageCount(name) for name in SOURCE_STAGES + tuple(s.label for s in table_stages) + ("shards",)}

    # 1. Sources: read → map → standardize → assemble, batch by batch (see _read_sources).
    table, reports, own, source_seconds = _read_sources(loaded, limit, progress)
    quarantine.merge(own)
    seconds.update(source_seconds)
    for report in reports:
        for count in report.stages:
            _add(totals[count.stage], count)

    # 2. Whole-table stages: ids, dedup, steps, derived rows, decontamination, mix, validation
    #    (build_table_stages has the order and why).
    derived_by_source: dict[str, int] = {}
    reports_by_stage: dict[str, dict] = {}
    stage_files: dict[str, bytes] = {}
    for st in table_stages:
        name = st.label
        t0 = time.perf_counter()
        progress.start(name, total=table.num_rows)
        if isinstance(st, Teacher):
            st.progress = progress
        result = st.run(table)
        progress.advance(name, table.num_rows)
        progress.finish(name)
        _quarantine_rows(quarantine, name, result.rejected)
        # rows in + made = rows out + quarantined; "made" (derived rows, extra teacher samples) is
        # credited to the sources of the rows it was made from. Most stages make nothing.
        added = result.kept.num_rows - (table.num_rows - result.rejected.height)
        if added:
            before = _rows_per_source(table)
            rejected_by = _rows_per_source(result.rejected) if result.rejected.height else {}
            for src, k in _rows_per_source(result.kept).items():
                made = k - (before.get(src, 0) - rejected_by.get(src, 0))
                if made > 0:
                    derived_by_source[src] = derived_by_source.get(src, 0) + made
        _count(totals[name], table.num_rows, result.kept.num_rows, result.rejected.height, added)
        if result.report is not None:
            reports_by_stage[name] = result.report
        stage_files.update(result.files)
        table = result.kept
        seconds[name] = time.perf_counter() - t0

    # 3. Shards, quarantine files, manifest and card, written to a staging directory that then
    #    replaces the output directory as a whole.
    t0 = time.perf_counter()
    stage = staging_dir(out)
    shards = write_shards(table, stage, recipe.shards, threads=SOURCE_THREADS,
                          on_start=lambda n: progress.start("write shards", total=n),
                          on_file=lambda: progress.advance("write shards"))
    _count(totals["shards"], table.num_rows, sum(s.rows for s in shards), 0)
    export_files, export_reports = [], {}
    if recipe.exports:         # before the quarantine files: the dpo export quarantines the pairs it drops
        t1 = time.perf_counter()
        export_files, export_reports = write_exports(ExportContext(loaded, stage, quarantine, progress), table)
        seconds["exports"] = time.perf_counter() - t1
    quarantine_files = []
    for name in quarantine.stages():
        rel = f"quarantine/{name}.parquet"
        q = quarantine.table(name)
        write_parquet_atomic(q, stage / rel)
        quarantine_files.append({"path": rel, "stage": name, "rows": q.num_rows, "sha256": sha256_file(stage / rel)})
    rows_by_source = _rows_per_source(table) if table.num_rows else {}
    for report in reports:
        report.rows = rows_by_source.get(report.name, 0)
        report.derived = derived_by_source.get(report.name, 0)
    for rel, data in sorted(stage_files.items()):
        write_bytes_atomic(stage / rel, data)
    if table.num_rows:
        reports_by_stage["lengths"] = token_lengths(table)
    manifest = build_manifest(
        recipe_name=recipe.name, recipe_sha=loaded.sha256, recipe=loaded.as_written, sources=reports,
        stages=list(totals.values()), shards=[s.to_json() for s in shards], quarantine=quarantine_files,
        reports=_stable_reports({**reports_by_stage, **({"exports": export_reports} if export_reports else {})}),
        exports=[f.to_json() for f in export_files],
    )
    write_bytes_atomic(stage / "manifest.json", dumps(manifest))
    # The recipe as written (env references unexpanded): what publish uploads to reproduce the run.
    write_bytes_atomic(stage / "recipe.yaml", yaml.safe_dump(loaded.as_written, sort_keys=False, allow_unicode=True).encode())
    sizes = {p: (stage / p).stat().st_size for p in [s.path for s in shards] + [f.path for f in export_files]}
    # The card shows the description as written: an expanded ${SECRET} must not be published.
    write_bytes_atomic(stage / "README.md", render_card(manifest, loaded.as_written.get("description", ""), sizes).encode())
    seconds["write"] = time.perf_counter() - t0
    seconds["total"] = time.perf_counter() - clock
    write_bytes_atomic(stage / "run.json", json.dumps({
        "started": started.isoformat(timespec="seconds"),
        "seconds": {k: round(v, 3) for k, v in seconds.items()},
        "rows_per_second": round(manifest["rows"] / seconds["total"], 1) if seconds["total"] else None,
        **{f"{stage}_this_run": r["this_run"] for stage, r in reports_by_stage.items() if "this_run" in r},
    }, indent=2).encode())
    publish_dir(stage, out)
    if shards:
        progress.finish("write shards")
    return RunResult(out=out, manifest=manifest, quarantine=quarantine, seconds=seconds,
                     this_run={k: r["this_run"] for k, r in reports_by_stage.items() if "this_run" in r})


def _read_sources(loaded: LoadedRecipe, limit: int | None, progress: Progress
                  ) -> tuple[pa.Table, list[SourceReport], Quarantine, dict[str, float]]:
    """Every source read → mapped → standardized → assembled. Sources are independent until
    here, so they run on a small thread pool (the heavy work is in Arrow/polars, which release
    the GIL); results are taken back in recipe order, so the output does not depend on which
    thread finished first."""
    recipe = loaded.recipe

    def one(spec: SourceBase) -> tuple[pa.Table, SourceReport, Quarantine, float]:
        t0 = time.perf_counter()
        own = Quarantine()
        table, report = _read_source(loaded, spec, limit, own, progress)
        return table, report, own, time.perf_counter() - t0

    with ThreadPoolExecutor(max_workers=min(SOURCE_THREADS, len(recipe.sources))) as pool:
        results = list(pool.map(one, recipe.sources))
    quarantine = Quarantine()
    seconds: dict[str, float] = {}
    for spec, (_, _, own, secs) in zip(recipe.sources, results):
        quarantine.merge(own)
        seconds[f"source:{spec.name}"] = secs
    tables = [r[0] for r in results]
    table = pa.concat_tables(tables) if tables else empty_table()
    return table, [r[1] for r in results], quarantine, seconds


def plan(loaded: LoadedRecipe, *, limit: int | None = None, show: int = 2) -> dict:
    """``factory run --dry-run``: read the sources, run the stages before the teacher, then
    render the teacher's prompts and project its requests, tokens and cost. Nothing is sent
    and nothing is written."""
    if loaded.recipe.teacher is None:
        raise FactoryError("--dry-run projects teacher requests, and this recipe has no teacher: block")
    table, _, _, _ = _read_sources(loaded, limit, NoProgress())
    for st in build_table_stages(StageContext.of(loaded)):
        if isinstance(st, Teacher):
            return st.plan(table, show=show)
        table = st.run(table).kept
    raise AssertionError("the teacher stage is missing from build_table_stages")


def _read_source(loaded: LoadedRecipe, spec: SourceBase, limit: int | None, quarantine: Quarantine,
                 progress: Progress) -> tuple[pa.Table, SourceReport]:
    reader = open_source(spec, loaded.base_dir)
    written_path, written_license = loaded.provenance(spec.name)
    counts = {name: StageCount(name) for name in SOURCE_STAGES}
    caps = [x for x in (spec.limit, limit) if x]
    cap = min(caps) if caps else None
    task = f"read {spec.name}"
    progress.start(task, total=cap)
    mapper = MAPPERS[spec.kind]
    tables = []
    for batch in reader.read(cap):
        quarantine.add_rejects("read", spec.name, written_path, batch.rejects)
        _count(counts["read"], len(batch), batch.good, len(batch.rejects))

        mapped, rejects = mapper(spec, batch)
        quarantine.add_rejects("map", spec.name, written_path, rejects)
        _count(counts["map"], batch.good, mapped.height, len(rejects))

        standardized = standardize(mapped, spec)
        bad = pl.col("_reject").is_not_null()
        rejected = standardized.filter(bad)
        _quarantine_mapped(quarantine, spec, written_path, rejected)
        good = standardized.filter(~bad)
        _count(counts["standardize"], mapped.height, good.height, rejected.height)

        tables.append(assemble(good, spec, loaded))
        progress.advance(task, len(batch))
    progress.finish(task)
    report = SourceReport(
        name=spec.name, path=written_path, format=reader.format, kind=spec.kind, domain=spec.domain,
        license=written_license, sha256=sha256_file(reader.path) if reader.path.is_file() else None,
        records=reader.stats.records, blank_lines=reader.stats.blank_lines, stages=list(counts.values()),
    )
    return (pa.concat_tables(tables) if tables else empty_table()), report


def assemble(df: pl.DataFrame, spec: SourceBase, loaded: LoadedRecipe) -> pa.Table:
    """Mapped + standardised columns → canonical rows: ids, domain, provenance, recipe."""
    ids = _ids(spec, df)
    lit = pl.lit
    trace_format = spec.trace_format if isinstance(spec, QASource) else "none"
    path, license = loaded.provenance(spec.name)
    df = df.with_columns(
        id=ids,
        domain=lit(spec.domain),
        kind=lit(spec.kind),
        split=lit(spec.output_split),
        source=pl.struct(
            name=lit(spec.name), path=lit(path), split=lit(spec.split),
            row=pl.col("_row"), line=pl.col("_line"), license=lit(license, dtype=pl.String),
        ),
        trace_format=lit(trace_format),
        meta=pl.col("_meta"),
        recipe=pl.struct(name=lit(loaded.recipe.name), sha=lit(loaded.sha256)),
    )
    table = conform(df)
    if spec.domain == AUTO_DOMAIN and table.num_rows:
        rows = pl.from_arrow(table)
        assert isinstance(rows, pl.DataFrame)
        domains = classify_domains(rows, domain_cues(loaded.recipe.domains))
        table = table.set_column(table.schema.get_field_index("domain"), ROW_SCHEMA.field("domain"), domains.to_arrow().cast(pa.string()))
    return table


def build_table_stages(ctx: StageContext) -> list[Stage]:
    """The whole-table stages a recipe asks for, in pipeline order."""
    recipe = ctx.loaded.recipe
    stages: list[Stage] = [UniqueIds(ctx)]
    dedup = recipe.dedup
    if dedup is not None and (dedup.exact or dedup.minhash) and "before_teacher" in dedup.when:
        stages.append(Dedup(ctx, dedup, label="dedup", threads=SOURCE_THREADS))
    if recipe.teacher is not None:
        stages.append(Teacher(ctx, recipe.teacher))
    if recipe.steps is not None:
        stages.append(Steps(ctx, recipe.steps, workers=SOURCE_THREADS))
    if recipe.derive is not None:
        stages.append(Derive(ctx, recipe.derive))
    if dedup is not None and (dedup.exact or dedup.minhash) and "after_teacher" in dedup.when:
        stages.append(Dedup(ctx, dedup, label="dedup_after_teacher", threads=SOURCE_THREADS))
    if dedup is not None and dedup.decontaminate:
        stages.append(Decontaminate(ctx, dedup))
    if recipe.mix is not None:
        stages.append(Mix(ctx, recipe.mix))
    if recipe.validate_ is not None:
        stages.append(Validate(ctx, recipe.validate_))
    return stages


def _rows_per_source(rows: pa.Table | pl.DataFrame) -> dict[str, int]:
    df = pl.from_arrow(rows.select(["source"])) if isinstance(rows, pa.Table) else rows.select("source")
    assert isinstance(df, pl.DataFrame)
    return dict(df["source"].struct.field("name").value_counts().iter_rows())


RUN_ONLY = ("seconds", "this_run")      # what differs between identical runs: run.json, not the manifest


def _stable_reports(reports: dict[str, dict]) -> dict[str, dict]:
    """Stage reports without timings or this run's request counts: the manifest must not
    change between identical runs (a re-run served from the cache included)."""
    def strip(v):
        if isinstance(v, dict):
            return {k: strip(x) for k, x in v.items() if k not in RUN_ONLY}
        if isinstance(v, list):
            return [strip(x) for x in v]
        return v
    return {k: strip(v) for k, v in reports.items()}


def _ids(spec: SourceBase, df: pl.DataFrame) -> pl.Series:
    if spec.id_field is None:
        return pl.Series(make_row_ids(spec.name, df["_row"].to_numpy()))
    return pl.Series(make_ids(spec.name, df["_key"].to_list()), dtype=pl.String)


def _quarantine_mapped(quarantine: Quarantine, spec: SourceBase, source_path: str, rejected: pl.DataFrame) -> None:
    """Standardize rejects keep the mapped fields, as JSON, so the reason can be checked by eye."""
    if rejected.height == 0:
        return
    fields = [c for c in ("question", "answer", "trace", "options", "facts", "subquestions") if c in rejected.columns]
    quarantine.add_frame("standardize", rejected.select(
        reason=pl.col("_reject"),
        source_name=pl.lit(spec.name),
        source_path=pl.lit(source_path),
        source_row=pl.col("_row"),
        source_line=pl.col("_line"),
        id=_ids(spec, rejected),
        raw=pl.struct(fields).struct.json_encode(),
    ))


def _quarantine_rows(quarantine: Quarantine, stage: str, rejected: pl.DataFrame) -> None:
    """Rejected canonical rows: provenance from their ``source`` struct, the row itself as JSON."""
    if rejected.height == 0:
        return
    row_cols = [c for c in ROW_SCHEMA.names if c in rejected.columns]
    quarantine.add_frame(stage, rejected.select(
        reason=pl.col("reason"),
        detail=pl.col("detail") if "detail" in rejected.columns else pl.lit(None, dtype=pl.String),
        source_name=pl.col("source").struct.field("name"),
        source_path=pl.col("source").struct.field("path"),
        source_row=pl.col("source").struct.field("row"),
        source_line=pl.col("source").struct.field("line"),
        id=pl.col("id"),
        raw=pl.struct(row_cols).struct.json_encode(),
    ))


def _count(c: StageCount, rows_in: int, rows_out: int, quarantined: int, added: int = 0) -> None:
    c.rows_in += rows_in
    c.rows_out += rows_out
    c.quarantined += quarantined
    c.added += added


def _add(total: StageCount, part: StageCount) -> None:
    _count(total, part.rows_in, part.rows_out, part.quarantined, part.added)
