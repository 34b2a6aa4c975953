"""What a person sees at the end of a run and in ``factory inspect``: tables and bars, not logs."""

from __future__ import annotations

import json
from typing import Any

from rich.console import Console, Group
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

TAG_STYLE = {"THOUGHT": "cyan", "ACTION": "magenta", "CHECK": "green", "SUMMARY": "bold yellow"}
ROLE_STYLE = {"system": "dim", "user": "bold blue", "assistant": "bold green"}


def _bar(value: int, total: int, width: int = 16) -> Text:
    filled = round(width * value / total) if total else 0
    return Text("█" * filled + "·" * (width - filled), style="green")


def stage_table(manifest: dict[str, Any]) -> Table:
    t = Table(title="stages", title_justify="left", expand=False)
    t.add_column("stage")
    t.add_column("in", justify="right")
    t.add_column("made", justify="right")
    t.add_column("out", justify="right")
    t.add_column("quarantined", justify="right")
    t.add_column("books", justify="center")
    for s in manifest["stages"]:
        added = s.get("added", 0)
        ok = s["rows_in"] + added == s["rows_out"] + s["quarantined"]
        t.add_row(s["stage"], f"{s['rows_in']:,}", Text(f"+{added:,}", style="cyan") if added else Text("", style="dim"),
                  f"{s['rows_out']:,}",
                  Text(f"{s['quarantined']:,}", style="yellow" if s["quarantined"] else "dim"),
                  Text("✓", style="green") if ok else Text("✗ in + made ≠ out + quarantined", style="bold red"))
    return t


def domain_table(manifest: dict[str, Any]) -> Table:
    total = manifest["rows"]
    by_domain: dict[str, list[str]] = {}
    for s in manifest["sources"]:
        by_domain.setdefault(s["domain"], []).append(s["name"])
    t = Table(title="domains", title_justify="left")
    t.add_column("domain")
    t.add_column("rows", justify="right")
    t.add_column("share")
    t.add_column("sources", style="dim")
    for domain, splits in manifest["domains"].items():
        rows = sum(splits.values())
        t.add_row(domain, f"{rows:,}", _bar(rows, total), ", ".join(by_domain.get(domain, [])))
    return t


def source_table(manifest: dict[str, Any]) -> Table:
    t = Table(title="sources", title_justify="left")
    any_derived = any(s.get("derived") for s in manifest["sources"])
    cols = [("source", "left"), ("kind", "left"), ("format", "left"), ("records", "right"), ("rows", "right")]
    cols += [("of them derived", "right")] if any_derived else []
    for col, just in cols + [("rejected", "right")]:
        t.add_column(col, justify=just)  # type: ignore[arg-type]
    for s in manifest["sources"]:
        derived = s.get("derived", 0)
        rejected = s["records"] + derived - s["rows"]
        cells: list[Any] = [s["name"], s["kind"], s["format"], f"{s['records']:,}", f"{s['rows']:,}"]
        if any_derived:
            cells.append(Text(f"{derived:,}", style="cyan") if derived else Text("", style="dim"))
        t.add_row(*cells, Text(f"{rejected:,}", style="yellow" if rejected else "dim"))
    return t


def steps_table(manifest: dict[str, Any]) -> Table | None:
    """The steps stage at a glance: how traces were cut and what the steps do."""
    r = manifest.get("reports", {}).get("steps")
    if not r or not r.get("steps_out"):
        return None
    t = Table(title=f"steps: {r['rows_with_steps']:,} traces → {r['steps_out']:,} steps",
              title_justify="left")
    t.add_column("tag")
    t.add_column("steps", justify="right")
    t.add_column("share")
    for tag, n in r["tags"].items():
        t.add_row(Text(tag, style=TAG_STYLE.get(tag, "")), f"{n:,}", _bar(n, r["steps_out"]))
    moved = (f"{r['rows_reordered']:,} traces reordered, {r['dependency_cycles']:,} with a dependency cycle"
             if r["order"] == "dependency" else f"order kept; {r['rows_out_of_order']:,} traces use a later step")
    t.caption = moved
    return t


def mix_table(manifest: dict[str, Any]) -> Table | None:
    """Rows per domain before and after the mix."""
    r = manifest.get("reports", {}).get("mix")
    if not r:
        return None
    t = Table(title=f"mix ({r['strategy']}, seed {r['seed']})", title_justify="left")
    for col, just in (("domain", "left"), ("before", "right"), ("after", "right"), ("share", "right"), ("", "left")):
        t.add_column(col, justify=just)  # type: ignore[arg-type]
    total = sum(r["after"].values())
    for d in r["before"]:
        after = r["after"].get(d, 0)
        t.add_row(d, f"{r['before'][d]:,}", f"{after:,}", f"{100 * r['share_after'].get(d, 0):.1f} %", _bar(after, total))
    return t


def teacher_table(manifest: dict[str, Any], this_run: dict[str, Any] | None = None) -> Group | None:
    """The teacher at a glance: answers checked against gold, tokens and cost."""
    r = manifest.get("reports", {}).get("teacher")
    if not r or not r.get("requests"):
        return None
    answered = r["correct"] + r["incorrect"] + r["unchecked"]
    t = Table(title=f"teacher: {r['backend']} · {r['model']} — {r['rows']:,} questions, {r['requests']:,} requests",
              title_justify="left")
    t.add_column("answers")
    t.add_column("", justify="right")
    t.add_column("share")
    for label, n, style in (("correct", r["correct"], "green"), ("incorrect", r["incorrect"], "red"),
                            ("no gold answer", r["unchecked"], "dim"), ("truncated", r["truncated"], "yellow"),
                            ("request failed", r["failed_requests"], "red")):
        if n or label in ("correct", "incorrect"):
            t.add_row(Text(label, style=style), f"{n:,}", _bar(n, max(answered, 1)))
    cost = "unknown price" if r["cost_usd"] is None else f"${r['cost_usd']:.4f}"
    caption = f"  {r['input_tokens']:,} prompt + {r['output_tokens']:,} completion tokens, {cost}; kept {r['kept']:,}, quarantined {r['quarantined']:,}"
    if this_run:
        caption += (f"\n  this run: {this_run['done'] - this_run['cache_hits']:,} sent, {this_run['cache_hits']:,} from cache, "
                    f"{this_run['retries']:,} retries, ${this_run['cost_usd']:.4f} spent")
    return Group(t, Text(caption, style="dim"))


def print_plan(console: Console, plan: dict[str, Any]) -> None:
    """``--dry-run``: the first prompts as they will be sent, then the projection."""
    for p in plan["prompts"]:
        body = p["prompt"] if p["prompt"] is not None else "\n\n".join(f"[{m['role']}]\n{m['content']}" for m in p["messages"])
        console.print(Panel(Text(body), title=f"prompt for row {p['row']} (sample {p['sample']})", border_style="dim", title_align="left"))
    t = Table(title=f"dry run: {plan['backend']} · {plan['model']}", title_justify="left", show_header=False)
    t.add_column("")
    t.add_column("", justify="right")
    cost = "unknown price (set teacher.prices)" if plan["cost_usd_max"] is None else f"≤ ${plan['cost_usd_max']:,.4f}"
    for k, v in (("questions", f"{plan['rows']:,}"), ("requests", f"{plan['requests']:,}"), ("already cached", f"{plan['cached']:,}"),
                 ("to send", f"{plan['to_send']:,}"), ("prompt tokens (≈ chars/4)", f"{plan['input_tokens']:,}"),
                 ("completion tokens (at most)", f"{plan['output_tokens_max']:,}"), ("cost", cost)):
        t.add_row(k, v)
    console.print(t)


def reasons_table(reasons: list[tuple[str, str, int]]) -> Table | None:
    if not reasons:
        return None
    t = Table(title="why rows were quarantined", title_justify="left")
    t.add_column("stage")
    t.add_column("reason")
    t.add_column("rows", justify="right")
    for stage, reason, n in reasons:
        t.add_row(stage, reason, f"{n:,}")
    return t


def print_summary(console: Console, manifest: dict[str, Any], out: str, seconds: float,
                  reasons: list[tuple[str, str, int]], this_run: dict[str, Any] | None = None) -> None:
    rows = manifest["rows"]
    head = Text.assemble(
        (manifest["recipe"]["name"], "bold"), " → ", (out, "bold cyan"), "   ",
        (f"{rows:,} rows", "bold green"), f" in {len(manifest['domains'])} domains, ",
        (f"{sum(q['rows'] for q in manifest['quarantine']):,} quarantined", "yellow"),
        f", {seconds:.1f} s ({rows / seconds:,.0f} rows/s)" if seconds > 0 else "",
    )
    parts: list[Any] = [head, domain_table(manifest), stage_table(manifest), source_table(manifest)]
    for extra in (teacher_table(manifest, (this_run or {}).get("teacher")), steps_table(manifest), mix_table(manifest), reasons_table(reasons)):
        if extra is not None:
            parts.append(extra)
    parts.append(Text(f"card: {out}/README.md   ·   look inside: factory inspect {out}", style="dim"))
    console.print(Panel(Group(*parts), title="CoT Factory", border_style="cyan"))


def render_row(row: dict[str, Any]) -> Panel:
    """One canonical row as a person would read it."""
    body: list[Any] = []
    src = row.get("source") or {}
    body.append(Text(f"{row['id']} · {row['kind']} · {row['domain']} · {src.get('name')} row {src.get('row')}"
                     + (f" line {src['line']}" if src.get("line") else ""), style="dim"))
    if row["kind"] == "qa" or not row.get("messages"):
        body.append(Text.assemble(("Q ", "bold"), row.get("question") or ""))
    for m in row.get("messages") or []:
        body.append(Text.assemble((f"{m['role']:>9} ", ROLE_STYLE.get(m["role"], "")), _clip(m["content"])))
    for opt in row.get("options") or []:
        body.append(Text(f"   {opt['label']}) {opt['text']}", style="dim"))
    subqs = row.get("subquestions") or []
    if subqs:
        body.append(Text("sub-questions", style="bold"))
        for i, sq in enumerate(subqs):
            refs = f"  ← {', '.join('#' + str(r + 1) for r in sq['refs'])}" if sq.get("refs") else ""
            ans = f"  → {sq['answer']}" if sq.get("answer") else ""
            body.append(Text(f"  #{i + 1} {sq['question']}{refs}{ans}"))
    steps = row.get("steps") or []
    if steps:
        body.append(Text("steps", style="bold"))
        for i, st in enumerate(steps):
            calls = "".join(f"  [{c['tool']}: {c['input']} = {c['output']}]" for c in st.get("calls") or [])
            body.append(Text.assemble((f"  {i + 1:>2} {st['tag']:<8}", TAG_STYLE.get(st["tag"], "")), _clip(st["text"]), (calls, "magenta")))
    for side in ("chosen", "rejected"):
        for m in row.get(side) or []:
            body.append(Text.assemble((f"{side:>9} ", "bold green" if side == "chosen" else "bold red"), _clip(m["content"])))
    if row.get("answer") is not None:
        body.append(Text.assemble(("answer ", "bold"), (row["answer"], "bold yellow"),
                                  (f"   (gold: {row['gold_answer']})" if row.get("gold_answer") not in (None, row["answer"]) else "", "dim")))
    if row.get("flags"):
        body.append(Text("flags: " + ", ".join(row["flags"]), style="yellow"))
    if row.get("meta"):
        body.append(Text("meta: " + json.dumps(json.loads(row["meta"]), ensure_ascii=False)[:300], style="dim"))
    what = f"qa, {row['trace_format']} trace" if row["kind"] == "qa" else row["kind"]
    return Panel(Group(*body), title=f"sample row ({what})", border_style="green")


def _clip(text: str, n: int = 400) -> str:
    text = text.replace("\n", " ⏎ ")
    return text if len(text) <= n else text[:n] + " …"
