"""Recipes: schema-checked, every problem reported at once with its line, env expansion."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from conftest import QUICKSTART, REPO, write_recipe
from factory.errors import RecipeError
from factory.recipe import load_recipe


def test_committed_schemas_and_reference_are_current():
    from factory.schemas import outputs

    for path, text in outputs().items():
        committed = path.read_text(encoding="utf-8") if path.exists() else ""
        assert committed == text, f"{path.relative_to(REPO)} is stale: run python -m factory.schemas"


def test_recipe_schema_validates_the_quickstart_yaml():
    import jsonschema
    import yaml

    schema = json.loads((REPO / "schemas" / "recipe.schema.json").read_text())
    jsonschema.validate(yaml.safe_load(QUICKSTART.read_text()), schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"name": "x", "sources": [], "bogus": 1}, schema)


def test_trace_format_choices_match_the_registry():
    from factory.recipe.model import QASource
    from factory.standardize import TRACE_FORMATS

    choices = set(QASource.model_fields["trace_format"].annotation.__args__)
    assert choices == set(TRACE_FORMATS)


PLANTED = """\
name: planted
sources:
  - name: ok
    kind: qa
    path: data.jsonl
    fields: {question: q, answer: a}
  - name: broken
    kind: qa
    path: data.jsonl
    limt: 10
    fields:
      answer: a
shards:
  max_rows: many
"""


def test_three_planted_mistakes_are_all_reported_with_lines(tmp_path):
    (tmp_path / "data.jsonl").write_text('{"q": "1+1?", "a": "2"}\n')
    path = write_recipe(tmp_path, PLANTED)
    with pytest.raises(RecipeError) as err:
        load_recipe(path)
    problems = err.value.problems
    assert problems == [
        f"{path}:10: sources[1].limt: unknown key 'limt' (did you mean 'limit'?)",
        f"{path}:11: sources[1].fields.question: field required",
        f"{path}:14: shards.max_rows: input should be a valid integer, unable to parse string as an integer (got 'many')",
    ]


def test_cli_validate_exits_2_and_prints_every_problem(tmp_path):
    (tmp_path / "data.jsonl").write_text('{"q": "1+1?", "a": "2"}\n')
    path = write_recipe(tmp_path, PLANTED)
    proc = subprocess.run([sys.executable, "-m", "factory", "validate", str(path)], capture_output=True, text=True)
    assert proc.returncode == 2
    assert f"{path}:10: sources[1].limt" in proc.stderr
    assert f"{path}:11: sources[1].fields.question: field required" in proc.stderr
    assert f"{path}:14: shards.max_rows" in proc.stderr
    assert "3 problems" in proc.stderr


def test_cli_validate_ok():
    proc = subprocess.run([sys.executable, "-m", "factory", "validate", str(QUICKSTART)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "ok (7 sources" in proc.stdout


@pytest.mark.parametrize("body, expected", [
    ("name: x\nsources:\n  - name: a\n    kind: qna\n    path: d.jsonl\n    fields: {question: q}\n",
     ":4: sources[0].kind: expected one of qa, conversation, preference, got 'qna'"),
    ("name: x\nsources:\n  - name: a\n    path: d.jsonl\n    fields: {question: q}\n    domain: Math Stuff\n",
     ":6: sources[0].domain: string should match pattern"),
    ("name: x\nsources:\n  - name: a\n    path: d.jsonl\n    fields: {question: q}\n  - name: a\n    path: d.jsonl\n    fields: {question: q}\n",
     ":6: sources[1].name: duplicate source name 'a' (also sources[0])"),
    ("name: x\nsources:\n  - name: a\n    path: missing.jsonl\n    fields: {question: q}\n",
     ":4: sources[0].path: no such file or directory"),
    ("name: x\nname: y\nsources:\n  - name: a\n    path: d.jsonl\n    fields: {question: q}\n",
     ":2: name: duplicate key (first at line 1)"),
    ("name: x\nsources:\n  - name: a\n    kind: conversation\n    path: d.jsonl\n    fields: {system: s}\n",
     ":6: sources[0].fields: give exactly one of messages, turns, transcript"),
    ("name: x\nsources: [\n", ":3: invalid YAML"),
    ("- just\n- a list\n", ":1: a recipe is a mapping"),
])
def test_each_mistake_gets_a_precise_message(tmp_path, body, expected):
    (tmp_path / "d.jsonl").write_text('{"q": "?"}\n')
    path = write_recipe(tmp_path, body)
    with pytest.raises(RecipeError) as err:
        load_recipe(path)
    assert any(expected in p for p in err.value.problems), err.value.problems


def test_env_references_are_expanded_and_never_written_back(tmp_path, monkeypatch):
    (tmp_path / "d.jsonl").write_text('{"q": "?"}\n')
    monkeypatch.setenv("COT_TEST_DOMAIN", "physics")
    monkeypatch.setenv("COT_TEST_SECRET", "sk-verysecretvalue")
    path = write_recipe(tmp_path, """
        name: env
        description: "token ${COT_TEST_SECRET}"
        sources:
          - name: a
            path: d.jsonl
            domain: ${COT_TEST_DOMAIN}
            license: ${COT_TEST_LICENSE:-MIT}
            fields: {question: q}
    """)
    loaded = load_recipe(path)
    assert loaded.recipe.sources[0].domain == "physics"
    assert loaded.recipe.sources[0].license == "MIT"
    assert "sk-verysecretvalue" in loaded.recipe.description
    written = json.dumps(loaded.as_written)
    assert "sk-verysecretvalue" not in written
    assert "${COT_TEST_SECRET}" in written and "${COT_TEST_DOMAIN}" in written
    monkeypatch.setenv("COT_TEST_SECRET", "sk-another")
    assert load_recipe(path).sha256 == loaded.sha256  # the hash never depends on a secret


def test_unset_env_variable_is_an_error_at_its_line(tmp_path):
    (tmp_path / "d.jsonl").write_text('{"q": "?"}\n')
    path = write_recipe(tmp_path, """
        name: env
        sources:
          - name: a
            path: d.jsonl
            domain: ${COT_TEST_NOT_SET_ANYWHERE}
            fields: {question: q}
    """)
    with pytest.raises(RecipeError) as err:
        load_recipe(path)
    assert f"{path}:5: sources[0].domain: environment variable COT_TEST_NOT_SET_ANYWHERE is not set" in err.value.problems


def test_recipe_sha_ignores_formatting_but_not_content(tmp_path):
    (tmp_path / "d.jsonl").write_text('{"q": "?"}\n')
    a = write_recipe(tmp_path, "name: x\nsources:\n  - {name: a, path: d.jsonl, fields: {question: q}}\n", "a.yaml")
    b = write_recipe(tmp_path, "# comment\nname: x\nsources:\n  - name: a\n    path: d.jsonl\n    fields:\n      question: q\n", "b.yaml")
    c = write_recipe(tmp_path, "name: x\nsources:\n  - {name: a, path: d.jsonl, fields: {question: q}, limit: 3}\n", "c.yaml")
    assert load_recipe(a).sha256 == load_recipe(b).sha256 != load_recipe(c).sha256
