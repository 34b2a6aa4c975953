"""Load a recipe file: YAML with line numbers, ${ENV} expansion, and every error at once.

Errors come out as ``file:line: field.path: message`` so an editor can jump to them. The line of
a missing key is the line of the mapping that should hold it.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from factory.errors import RecipeError
from factory.recipe.model import SOURCE_KINDS, Recipe

Loc = tuple[str | int, ...]
_ENV = re.compile(r"\$(\$)?\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


@dataclass
class LoadedRecipe:
    recipe: Recipe
    path: Path
    # The recipe as validated but with ${VAR} references left as written: what the manifest
    # stores and hashes, so that no expanded secret is ever written out.
    as_written: dict[str, Any]
    sha256: str
    env_paths: list[Loc] = field(default_factory=list)

    @property
    def base_dir(self) -> Path:
        return self.path.parent

    def provenance(self, source_name: str) -> tuple[str, str | None]:
        """(path, license) of a source as written in the recipe, for rows, manifest and card:
        a ${VAR} there stays a reference, so no expanded value (a secret, a machine-specific
        directory) is ever written out."""
        for src in self.as_written["sources"]:
            if src["name"] == source_name:
                return src["path"], src.get("license")
        raise KeyError(source_name)


@dataclass(order=True)
class Problem:
    line: int
    loc: str
    message: str

    def render(self, file: str) -> str:
        where = f"{self.loc}: " if self.loc else ""
        return f"{file}:{self.line}: {where}{self.message}"


# ---- YAML with positions -------------------------------------------------------------------

_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def _compose(text: str, file: str) -> tuple[yaml.Node | None, Any]:
    """The node tree (for line numbers) and the data built from it: one parse, not two."""
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
        return node, (loader.construct_document(node) if node is not None else None)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        line = mark.line + 1 if mark else 1
        raise RecipeError([f"{file}:{line}: invalid YAML: {e.problem or e}"]) from None
    finally:
        loader.dispose()


def _walk(node: yaml.Node, loc: Loc, lines: dict[Loc, int], problems: list[Problem]) -> None:
    """Record the line of every path; report duplicate keys (PyYAML silently keeps the last)."""
    lines.setdefault(loc, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        seen: dict[str, int] = {}
        for key_node, value_node in node.value:
            key = key_node.value
            line = key_node.start_mark.line + 1
            if key in seen:
                problems.append(Problem(line, format_loc(loc + (key,)), f"duplicate key (first at line {seen[key]})"))
            seen[key] = line
            lines[loc + (key,)] = line
            _walk(value_node, loc + (key,), lines, problems)
            lines[loc + (key,)] = line
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _walk(item, loc + (i,), lines, problems)


def format_loc(loc: Loc) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _line_of(loc: Loc, lines: dict[Loc, int]) -> int:
    while loc and loc not in lines:
        loc = loc[:-1]
    return lines.get(loc, 1)


# ---- ${ENV} expansion ----------------------------------------------------------------------

def _expand_env(value: Any, loc: Loc, env_paths: list[Loc], missing: list[tuple[Loc, str]]) -> Any:
    if isinstance(value, dict):
        return {k: _expand_env(v, loc + (k,), env_paths, missing) for k, v in value.items()}
    if isinstance(value, list):
        return [_expand_env(v, loc + (i,), env_paths, missing) for i, v in enumerate(value)]
    if not isinstance(value, str) or "${" not in value:
        return value

    def sub(m: re.Match) -> str:
        if m.group(1):  # $${X} is an escaped literal ${X}
            return m.group(0)[1:]
        name, default = m.group(2), m.group(3)
        if name in os.environ:
            return os.environ[name]
        if default is not None:
            return default
        missing.append((loc, name))
        return ""

    expanded = _ENV.sub(sub, value)
    if expanded != value:
        env_paths.append(loc)
    return expanded


# ---- pydantic errors → problems ------------------------------------------------------------

def _strip_tags(loc: Loc) -> Loc:
    """Drop the discriminator tag pydantic puts in the loc of a union member."""
    out: list[str | int] = []
    for i, part in enumerate(loc):
        if part in SOURCE_KINDS and i >= 2 and loc[i - 2] == "sources" and isinstance(loc[i - 1], int):
            continue
        out.append(part)
    return tuple(out)


def _annotation_model(annotation: Any) -> type[BaseModel] | None:
    import typing

    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in typing.get_args(annotation):
        found = _annotation_model(arg)
        if found is not None:
            return found
    return None


def _known_keys(loc: Loc, data: Any) -> list[str]:
    from factory.recipe import model as m

    kinds = {"qa": m.QASource, "conversation": m.ConversationSource, "preference": m.PreferenceSource}
    model: type[BaseModel] | None = Recipe
    node: Any = data
    i = 0
    while i < len(loc) and model is not None:
        part = loc[i]
        if model is Recipe and part == "sources" and i + 1 < len(loc):
            idx = loc[i + 1]
            item = node.get("sources", [])[idx] if isinstance(node, dict) else None
            model = kinds.get(item.get("kind", "qa") if isinstance(item, dict) else "qa")
            node, i = item, i + 2
            continue
        info = model.model_fields.get(part) if isinstance(part, str) else None
        if info is None:
            return []
        node = node.get(part) if isinstance(node, dict) else None
        model = _annotation_model(info.annotation)
        i += 1
        if i < len(loc) and isinstance(loc[i], int):  # list of models, e.g. turns[0]
            node = node[loc[i]] if isinstance(node, list) and loc[i] < len(node) else None
            i += 1
    if model is None:
        return []
    return [f.alias or name for name, f in model.model_fields.items()]


def _message(err: dict[str, Any], loc: Loc, data: Any) -> tuple[Loc, str]:
    kind = err["type"]
    if kind == "extra_forbidden":
        key = str(loc[-1])
        hint = difflib.get_close_matches(key, _known_keys(loc[:-1], data), n=1, cutoff=0.6)
        return loc, f"unknown key '{key}'" + (f" (did you mean '{hint[0]}'?)" if hint else "")
    if kind == "missing":
        return loc, "field required"
    if kind == "union_tag_invalid":
        got = err.get("input", {}).get("kind") if isinstance(err.get("input"), dict) else None
        return loc + ("kind",), f"expected one of {', '.join(SOURCE_KINDS)}, got {got!r}"
    msg = err["msg"]
    msg = msg[0].lower() + msg[1:] if msg else msg
    if msg.startswith("value error, "):
        msg = msg[len("value error, "):]
    if kind not in ("value_error", "assertion_error") and "input" in err and not isinstance(err["input"], (dict, list)):
        msg += f" (got {err['input']!r})"
    return loc, msg


def _semantic_checks(recipe: Recipe, base_dir: Path) -> list[tuple[Loc, str]]:
    """Checks pydantic cannot express field by field: unique names, files that exist."""
    out: list[tuple[Loc, str]] = []
    seen: dict[str, int] = {}
    for i, src in enumerate(recipe.sources):
        if src.name in seen:
            out.append((("sources", i, "name"), f"duplicate source name '{src.name}' (also sources[{seen[src.name]}])"))
        seen.setdefault(src.name, i)
        local = (base_dir / src.path)
        if src.format != "hf" and not local.exists():
            out.append((("sources", i, "path"), f"no such file or directory: {local}"))
        if src.format == "hf" and src.hf.data_files is None and not local.exists() and "/" not in src.path:
            out.append((("sources", i, "path"), f"'{src.path}' is neither a local path nor an owner/name hub dataset"))
    return out


def canonical_sha256(data: Any) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()).hexdigest()


def load_recipe(path: str | Path, *, check_paths: bool = True) -> LoadedRecipe:
    """Parse, expand and validate a recipe; raise RecipeError listing every problem."""
    path = Path(path)
    file = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise RecipeError([f"{file}: no such recipe file"]) from None
    except UnicodeDecodeError as e:
        raise RecipeError([f"{file}:1: recipe is not valid UTF-8 ({e.reason} at byte {e.start})"]) from None

    root, raw = _compose(text, file)
    lines: dict[Loc, int] = {}
    problems: list[Problem] = []
    if root is None:
        raise RecipeError([f"{file}:1: recipe is empty"])
    _walk(root, (), lines, problems)
    if not isinstance(raw, dict):
        raise RecipeError([f"{file}:1: a recipe is a mapping of keys (name, sources, …), got {type(raw).__name__}"])

    env_paths: list[Loc] = []
    missing: list[tuple[Loc, str]] = []
    data = _expand_env(raw, (), env_paths, missing)
    for loc, name in missing:
        problems.append(Problem(_line_of(loc, lines), format_loc(loc), f"environment variable {name} is not set"))

    recipe: Recipe | None = None
    try:
        recipe = Recipe.model_validate(data)
    except ValidationError as e:
        for err in e.errors():
            loc = _strip_tags(tuple(err["loc"]))
            loc, msg = _message(err, loc, data)
            problems.append(Problem(_line_of(loc, lines), format_loc(loc), msg))
    if recipe is not None and check_paths:
        for loc, msg in _semantic_checks(recipe, path.parent):
            problems.append(Problem(_line_of(loc, lines), format_loc(loc), msg))
    if problems:
        raise RecipeError([p.render(file) for p in sorted(problems)])
    assert recipe is not None

    as_written = _unexpanded(raw, recipe.model_dump(mode="json", by_alias=True), env_paths)
    return LoadedRecipe(recipe=recipe, path=path, as_written=as_written, sha256=canonical_sha256(as_written), env_paths=env_paths)


def _unexpanded(raw: Any, resolved: Any, env_paths: list[Loc]) -> Any:
    """``resolved`` (defaults filled in) with the values at env_paths put back as written
    (``${VAR}``): an expanded secret must never reach a manifest or a card."""
    out = json.loads(json.dumps(resolved))
    for loc in env_paths:
        src, dst = raw, out
        for part in loc[:-1]:
            src, dst = src[part], dst[part]
        dst[loc[-1]] = src[loc[-1]]
    return out
