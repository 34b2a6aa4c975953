"""Generated documents: ``schemas/*.json`` and ``docs/recipe.md``. ``python -m factory.schemas``
rewrites them; a test fails when the committed copies are stale."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
_ORDER = ["QASource", "QAFields", "TraceOptions", "ConversationSource", "ConversationFields", "Turn",
          "PreferenceSource", "PreferenceFields", "HFOptions", "ShardOptions"]


def _dump(doc: dict) -> str:
    return json.dumps(doc, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def generated() -> dict[str, str]:
    """{kind: text} for the JSON schemas (what ``factory schema KIND`` prints)."""
    from factory.recipe.model import recipe_json_schema
    from factory.rows import row_json_schema

    return {"recipe": _dump(recipe_json_schema()), "row": _dump(row_json_schema())}


def _type(spec: dict[str, Any]) -> str:
    if "$ref" in spec:
        name = spec["$ref"].rsplit("/", 1)[-1]
        return f"[{name}](#{name.lower()})"
    if "enum" in spec:
        return " \\| ".join(f"`{v}`" for v in spec["enum"])
    if "const" in spec:
        return f"`{spec['const']}`"
    for key in ("anyOf", "oneOf"):
        if key in spec:
            return " or ".join(_type(s) for s in spec[key] if s.get("type") != "null")
    t = spec.get("type", "any")
    if t == "array":
        return f"list of {_type(spec.get('items', {}))}"
    if t == "object" and isinstance(spec.get("additionalProperties"), dict):
        return f"map of {_type(spec['additionalProperties'])}"
    return t


def _table(title: str, schema: dict[str, Any], doc: str = "") -> list[str]:
    required = set(schema.get("required", []))
    lines = [f"### {title}", ""]
    if doc or schema.get("description"):
        lines += [(doc or schema["description"]).strip(), ""]
    lines += ["| key | type | default | description |", "| --- | --- | --- | --- |"]
    for key, spec in schema.get("properties", {}).items():
        default = "**required**" if key in required else (f"`{json.dumps(spec['default'])}`" if "default" in spec else "")
        lines.append(f"| `{key}` | {_type(spec)} | {default} | {spec.get('description', '')} |")
    return lines + [""]


def recipe_reference() -> str:
    from factory.recipe.model import recipe_json_schema
    from factory.standardize import TRACE_FORMATS

    schema = recipe_json_schema()
    defs = schema["$defs"]
    lines = [
        "# Recipe reference",
        "",
        "Generated from `factory/recipe/model.py` by `python -m factory.schemas`; do not edit by hand.",
        "The same model is `schemas/recipe.schema.json` (JSON Schema, for editors) and is what",
        "`factory validate` checks. Unknown keys are errors. `${VAR}` and `${VAR:-default}` in any",
        "string are replaced from the environment (`$${VAR}` keeps the text); the manifest keeps the",
        "reference, never the value. Source paths are relative to the recipe file.",
        "",
    ]
    lines += _table("Recipe", schema, "The top level of a recipe file.")
    lines += ["A source is one of `QASource` (`kind: qa`, the default), `ConversationSource`",
              "(`kind: conversation`) or `PreferenceSource` (`kind: preference`).", ""]
    for name in _ORDER:
        lines += _table(name, defs[name])
    lines += ["### Trace formats", "", "| `trace_format` | what it does |", "| --- | --- |"]
    for name, cls in TRACE_FORMATS.items():
        lines.append(f"| `{name}` | {cls.doc} |")
    return "\n".join(lines) + "\n"


def outputs() -> dict[Path, str]:
    docs = generated()
    return {
        ROOT / "schemas" / "recipe.schema.json": docs["recipe"],
        ROOT / "schemas" / "row.schema.json": docs["row"],
        ROOT / "docs" / "recipe.md": recipe_reference(),
    }


if __name__ == "__main__":
    for path, text in outputs().items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        print(path.relative_to(ROOT))
    sys.exit(0)
