"""The dataset card (README.md): YAML ``configs:`` so ``load_dataset(out, "<domain>")`` works,
and a body a person can read: domains, sources and licences, what was rejected and why."""

from __future__ import annotations

from typing import Any

import yaml

from factory.rows import ROW_SCHEMA

_HF_LICENSES = {"mit": "mit", "apache-2.0": "apache-2.0", "cc-by-4.0": "cc-by-4.0", "cc-by-sa-4.0": "cc-by-sa-4.0",
                "cc0-1.0": "cc0-1.0", "bsd-3-clause": "bsd-3-clause", "odc-by": "odc-by"}


def _license(recipe_license: str | None, sources: list[dict]) -> str:
    if recipe_license:
        return recipe_license.lower()
    found = {(s.get("license") or "unknown").lower() for s in sources}
    if len(found) == 1 and (lic := found.pop()) in _HF_LICENSES:
        return lic
    return "other"


def configs(shards: list[dict], exports: list[dict] | None = None) -> list[dict[str, Any]]:
    splits_by_domain: dict[str, set[str]] = {}
    for s in shards:
        splits_by_domain.setdefault(s["domain"], set()).add(s["split"])
    all_splits = sorted({s for v in splits_by_domain.values() for s in v})
    out: list[dict[str, Any]] = [{
        "config_name": "default",
        "default": True,
        "data_files": [{"split": sp, "path": f"data/*/{sp}-*.parquet"} for sp in all_splits],
    }]
    for domain in sorted(splits_by_domain):
        out.append({
            "config_name": domain,
            "data_files": [{"split": sp, "path": f"data/{domain}/{sp}-*.parquet"} for sp in sorted(splits_by_domain[domain])],
        })
    for kind, files in _exports_by_kind(exports).items():
        out.append({"config_name": kind, "data_files": [{"split": f["split"], "path": f["path"]} for f in files]})
    return out


def _exports_by_kind(exports: list[dict] | None) -> dict[str, list[dict]]:
    groups: dict[str, list[dict]] = {}
    for f in exports or []:
        groups.setdefault(f["kind"], []).append(f)
    return groups


def dataset_info(shards: list[dict], sizes: dict[str, int], exports: list[dict] | None = None) -> list[dict[str, Any]]:
    """Per config: split sizes and every file's checksum. ``datasets`` keys its cache of a local
    directory on the card, not on the files: without this a re-run into the same directory
    would be read back from the previous run's cache."""
    groups: dict[str, list[dict]] = {"default": list(shards)}
    for s in shards:
        groups.setdefault(s["domain"], []).append(s)
    groups.update(_exports_by_kind(exports))
    out = []
    for name in ["default"] + sorted(k for k in groups if k != "default"):
        files = groups[name]
        splits: dict[str, dict[str, int]] = {}
        for s in files:
            sp = splits.setdefault(s["split"], {"num_examples": 0, "num_bytes": 0})
            sp["num_examples"] += s["rows"]
            sp["num_bytes"] += sizes[s["path"]]
        total = sum(sizes[s["path"]] for s in files)
        out.append({
            "config_name": name,
            "splits": [{"name": sp, "num_bytes": v["num_bytes"], "num_examples": v["num_examples"]} for sp, v in sorted(splits.items())],
            "download_size": total,
            "dataset_size": total,
            "download_checksums": {s["path"]: {"num_bytes": sizes[s["path"]], "checksum": s["sha256"]} for s in files},
        })
    return out


def render_card(manifest: dict[str, Any], description: str = "", sizes: dict[str, int] | None = None) -> str:
    recipe = manifest["recipe"]
    sources = manifest["sources"]
    header = {
        "license": _license(recipe["resolved"].get("license"), sources),
        "pretty_name": recipe["name"],
        "tags": ["reasoning", "chain-of-thought", "cot-factory"],
        "configs": configs(manifest["shards"], manifest.get("exports")),
    }
    if sizes is not None and manifest["shards"]:
        header["dataset_info"] = dataset_info(manifest["shards"], sizes, manifest.get("exports"))
    dumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
    lines = ["---", yaml.dump(header, Dumper=dumper, sort_keys=False, allow_unicode=True).rstrip(), "---", ""]
    lines += [f"# {recipe['name']}", ""]
    if description:
        lines += [description.strip(), ""]
    lines += [
        f"Chain-of-thought training data made by [CoT Factory](https://github.com/cot-factory/cot-factory) "
        f"from recipe `{recipe['name']}` (sha256 `{recipe['sha256'][:16]}…`). "
        f"{manifest['rows']:,} rows in {len(manifest['domains'])} domains.",
        "",
        "```python",
        "from datasets import load_dataset",
        f"ds = load_dataset(\"<this repo or directory>\", \"{next(iter(manifest['domains']), 'default')}\", split=\"train\")",
        "```",
        "",
        "## Domains",
        "",
        "| domain | " + " | ".join(_splits(manifest)) + " |",
        "| --- | " + " | ".join("---:" for _ in _splits(manifest)) + " |",
    ]
    for domain, splits in manifest["domains"].items():
        lines.append(f"| `{domain}` | " + " | ".join(f"{splits.get(sp, 0):,}" for sp in _splits(manifest)) + " |")
    lines += ["", "## Sources", "", "| source | kind | domain | format | license | records | rows |",
              "| --- | --- | --- | --- | --- | ---: | ---: |"]
    for s in sources:
        lines.append(f"| `{s['name']}` ({s['path']}) | {s['kind']} | `{s['domain']}` | {s['format']} | "
                     f"{s['license'] or 'unknown'} | {s['records']:,} | {s['rows']:,} |")
    lines += ["", "Each source keeps its own licence; attribution for the bundled samples is in the files "
              "the recipe points at.", "", "## Processing", "", "| stage | in | made | out | quarantined |",
              "| --- | ---: | ---: | ---: | ---: |"]
    for st in manifest["stages"]:
        lines.append(f"| {st['stage']} | {st['rows_in']:,} | {st.get('added', 0):,} | {st['rows_out']:,} | {st['quarantined']:,} |")
    mix = manifest.get("reports", {}).get("mix")
    if mix:
        lines += ["", f"Domains were balanced ({mix['strategy']}, seed {mix['seed']}): rows per domain before and after.",
                  "", "| domain | before | after | share |", "| --- | ---: | ---: | ---: |"]
        for d, n in mix["before"].items():
            lines.append(f"| `{d}` | {n:,} | {mix['after'].get(d, 0):,} | {100 * mix['share_after'].get(d, 0):.1f} % |")
    if manifest["quarantine"]:
        lines += ["", "Rejected rows are kept, with their reasons, under `quarantine/`:", ""]
        for q in manifest["quarantine"]:
            lines.append(f"- `{q['path']}`: {q['rows']:,} rows")
    lines += stats_section(manifest)
    lines += exports_section(manifest)
    lines += ["", "## Row schema", "", "| field | type | meaning |", "| --- | --- | --- |"]
    for f in ROW_SCHEMA:
        doc = f.metadata[b"doc"].decode() if f.metadata else ""
        lines.append(f"| `{f.name}` | `{_short_type(f.type)}` | {doc} |")
    return "\n".join(lines) + "\n"


def _splits(manifest: dict[str, Any]) -> list[str]:
    return sorted({sp for d in manifest["domains"].values() for sp in d})


def _short_type(t: Any) -> str:
    import pyarrow as pa

    if pa.types.is_list(t):
        return f"list<{_short_type(t.value_type)}>"
    if pa.types.is_struct(t):
        return "struct{" + ", ".join(t.field(i).name for i in range(t.num_fields)) + "}"
    return str(t)


def exports_section(manifest: dict[str, Any]) -> list[str]:
    """Training views: what each holds, how to load it, LLaMA-Factory and axolotl snippets."""
    groups = _exports_by_kind(manifest.get("exports"))
    if not groups:
        return []
    reports = manifest.get("reports", {}).get("exports", {})
    lines = ["", "## Training exports", "", "| config | what | rows |", "| --- | --- | ---: |"]
    what = {"sft": "TRL SFT: `messages` (assistant turn `<reasoning>…</reasoning>\\n<answer>…</answer>`)",
            "dpo": "TRL DPO: `prompt` / `chosen` / `rejected`", "selector": "token windows: `input_ids`, `target_id`, `candidate_ids`"}
    for kind, files in groups.items():
        lines.append(f"| `{kind}` | {what.get(kind, kind)} | {sum(f['rows'] for f in files):,} |")
    dpo = reports.get("dpo")
    if dpo:
        lines += ["", "DPO pairs per builder (the noisy-pair filter drops the given share with the highest disagreement score):", "",
                  "| builder | pairs | kept | dropped |", "| --- | ---: | ---: | ---: |"]
        for b, r in dpo["builders"].items():
            lines.append(f"| {b} | {r['pairs']:,} | {r['kept']:,} | {r['dropped_noisy']:,} |")
    lines += ["", "```python", "from datasets import load_dataset"]
    for kind in groups:
        lines.append(f"{kind} = load_dataset(\"<this repo or directory>\", \"{kind}\", split=\"train\")")
    lines += ["```"]
    if "sft" in groups or "dpo" in groups:
        lines += ["", "LLaMA-Factory: `exports/dataset_info.json` registers the exports (sharegpt format; DPO as ranking). "
                  "Axolotl:", "", "```yaml", "datasets:"]
        if "sft" in groups:
            lines += ["  - path: <this repo or directory>", "    name: sft", "    type: chat_template",
                      "    field_messages: messages", "    roles_to_train: [assistant]"]
        if "dpo" in groups:
            lines += ["  - path: <this repo or directory>   # with rl: dpo", "    name: dpo", "    type: chat_template.default",
                      "    field_messages: prompt", "    field_chosen: chosen", "    field_rejected: rejected"]
        lines += ["```"]
    return lines


def stats_section(manifest: dict[str, Any]) -> list[str]:
    """Token lengths per domain, dedup and decontamination at a glance."""
    reports = manifest.get("reports", {})
    lines: list[str] = []
    lengths = reports.get("lengths")
    if lengths:
        lines += ["", "## Statistics", "", "Length of question + steps + answer (or all turns), in whitespace-separated tokens:", "",
                  "| domain | rows | p10 | p50 | p90 | p99 | max |", "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
        for d, r in lengths.items():
            lines.append(f"| `{d}` | {r['rows']:,} | {r['p10']:,} | {r['p50']:,} | {r['p90']:,} | {r['p99']:,} | {r['max']:,} |")
    dedup = reports.get("dedup")
    if dedup:
        lines += ["", f"Dedup: {dedup.get('exact_removed', 0):,} exact and {dedup.get('near_removed', 0):,} near duplicates removed "
                  f"from {dedup.get('rows_in', 0):,} rows (MinHash threshold {dedup.get('minhash', {}).get('threshold', '–')})."]
    decon = reports.get("decontaminate")
    if decon:
        lines += ["", "## Contamination", "", "| benchmark | n-gram | items | rows checked | rows removed | share |",
                  "| --- | ---: | ---: | ---: | ---: | ---: |"]
        for b in decon.get("benchmarks", []):
            lines.append(f"| {b['benchmark']} | {b['ngram']} | {b['items']:,} | {b['rows_checked']:,} | {b['rows_contaminated']:,} | "
                         f"{100 * b['share']:.2f} % |")
    return lines
