"""Generated schema documents. ``python -m factory.schemas`` rewrites ``schemas/*.json``;
a test fails when the committed files are stale."""

from __future__ import annotations

import json
import sys
from pathlib import Path


def _dump(doc: dict) -> str:
    return json.dumps(doc, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def generated() -> dict[str, str]:
    from factory.recipe.model import recipe_json_schema
    from factory.rows import row_json_schema

    return {"recipe": _dump(recipe_json_schema()), "row": _dump(row_json_schema())}


def write(directory: Path) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for kind, text in generated().items():
        path = directory / f"{kind}.schema.json"
        path.write_text(text, encoding="utf-8")
        written.append(path)
    return written


if __name__ == "__main__":
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parent.parent / "schemas"
    for p in write(target):
        print(p)
