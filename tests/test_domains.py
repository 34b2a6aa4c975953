"""Domains: domain: auto, derived rows, the mix."""

from __future__ import annotations

import json
from collections import Counter

import pytest
import yaml

from conftest import DATA, QUICKSTART
from factory.domains import in_domain

TRUE_DOMAIN = {s["name"]: s["domain"] for s in yaml.safe_load(QUICKSTART.read_text())["sources"]}


def quickstart_variant(tmp_path, **changes) -> str:
    """The quickstart recipe with absolute paths, edited."""
    recipe = yaml.safe_load(QUICKSTART.read_text())
    for s in recipe["sources"]:
        s["path"] = str(QUICKSTART.parent / s["path"])
    for d in recipe["dedup"]["decontaminate"]:
        d["path"] = str(QUICKSTART.parent / d["path"])
    recipe.pop("output", None)
    for key, value in changes.items():
        if value is None:
            recipe.pop(key, None)
        elif callable(value):
            value(recipe)
        else:
            recipe[key] = value
    return yaml.safe_dump(recipe, sort_keys=False)


def test_domain_auto_agrees_with_the_quickstart_sources(tmp_path, run_recipe):
    def hide(recipe):
        for s in recipe["sources"]:
            s["domain"] = "auto"

    result, rows, quarantined = run_recipe(quickstart_variant(tmp_path, sources_=None, hide=hide))
    assert len(rows) > 1500 and not [q for q in quarantined if q["stage"] == "validate"]
    agree = sum(r["domain"] == TRUE_DOMAIN[r["source"]["name"]] for r in rows) / len(rows)
    assert agree >= 0.90, agree
    per_source = Counter(r["source"]["name"] for r in rows if r["domain"] == TRUE_DOMAIN[r["source"]["name"]])
    assert per_source["gsm8k"] >= 295 and per_source["strategyqa"] >= 225


def test_recipe_cues_add_a_domain(tmp_path, run_recipe):
    def auto_only_self_instruct(recipe):
        recipe["sources"] = [s for s in recipe["sources"] if s["name"] == "self-instruct"]
        recipe["sources"][0]["domain"] = "auto"
        recipe["dedup"] = None

    _, rows, _ = run_recipe(quickstart_variant(tmp_path, x=auto_only_self_instruct, domains={"cooking": [r"\brecipes?\b", r"\bbak\w*", r"\bcook\w*"]},
                                               validate=None))
    assert any(r["domain"] == "cooking" for r in rows)


def test_in_domain_wording():
    assert in_domain("What knowledge is essential?", "math") == "What knowledge is essential in mathematics?"
    assert in_domain("Which facts are needed?", "mental-health") == "Which facts are needed in mental health?"
    assert in_domain("How many apples are left?", "math") == "How many apples are left?"
    assert in_domain("What knowledge is essential?", "general") == "What knowledge is essential?"


# ---- derived rows --------------------------------------------------------------------------

def test_derived_subquestion_pairs_keep_their_parent(run_recipe):
    result, rows, _ = run_recipe(f"""
        name: derive
        sources:
          - name: strategyqa
            kind: qa
            path: {DATA}/strategyqa/dev.json
            id_field: qid
            fields: {{question: question, answer: answer, subquestions: decomposition, facts: facts}}
            trace_format: strategyqa
            domain: commonsense
          - name: socratic
            kind: qa
            path: {DATA}/gsm8k/test_socratic.head50.jsonl
            fields: {{question: question, answer: answer}}
            trace_format: gsm8k
            domain: math
        derive: {{contrast: false}}
        validate: {{}}
    """)
    originals = {r["id"]: r for r in rows if r["parent_id"] is None}
    derived = [r for r in rows if r["parent_id"] is not None]
    report = result.manifest["reports"]["derive"]
    assert report["subquestion_rows"] == len(derived) > 300
    assert len({r["id"] for r in rows}) == len(rows)
    for r in derived:
        parent = originals[r["parent_id"]]                 # every parent is a real row of the run
        assert r["source"] == parent["source"] and r["trace_format"] == "derived"
        assert r["flags"] == ["derived:subquestion"] and r["steps"] and r["answer"]
        assert r["domain"] in ("commonsense", "math", "mental-health", "open-reasoning", "instructions", "helpfulness")
    from_sqa = [r for r in derived if r["source"]["name"] == "strategyqa"]
    from_gsm = [r for r in derived if r["source"]["name"] == "socratic"]
    assert len(from_sqa) > 250 and len(from_gsm) > 100
    # a StrategyQA sub-question that refers back carries what it refers to
    with_context = [r for r in from_sqa if r["question"].startswith("Known:")]
    assert with_context and all("(answer " in r["question"] for r in with_context)
    # a Socratic sub-question's answer is its step
    q = from_gsm[0]
    parent = originals[q["parent_id"]]
    assert q["question"] == parent["subquestions"][0]["question"] and q["answer"] == parent["subquestions"][0]["answer"]
    assert result.manifest["sources"][0]["derived"] == len(from_sqa)


def test_contrast_row_for_two_traces_of_one_question(tmp_path, run_recipe):
    a = tmp_path / "a.jsonl"
    b = tmp_path / "b.jsonl"
    a.write_text(json.dumps({"q": "Tom has 3 bags of 4 apples. How many apples?", "t": "3 * 4 = 12.\nSo 12 apples.", "a": "12"}) + "\n")
    b.write_text(json.dumps({"q": "Tom has 3 bags of 4 apples.  How many apples?", "t": "4 + 4 + 4 = 12.\nSo 12 apples.", "a": "12"}) + "\n")
    _, rows, _ = run_recipe(f"""
        name: contrast
        sources:
          - {{name: a, kind: qa, path: {a}, fields: {{question: q, trace: t, answer: a}}, trace_format: rationale, domain: math}}
          - {{name: b, kind: qa, path: {b}, fields: {{question: q, trace: t, answer: a}}, trace_format: rationale, domain: math}}
        derive: {{}}
    """)
    [c] = [r for r in rows if r["flags"] == ["derived:contrast"]]
    assert {c["parent_id"]} <= {r["id"] for r in rows if r["parent_id"] is None}
    assert "Solution A" in c["question"] and "Solution B" in c["question"]
    assert [s["tag"] for s in c["steps"]][-1] in ("SUMMARY", "THOUGHT", "ACTION")
    assert "Both reach the answer 12." in [s["text"] for s in c["steps"]]
    assert "part at step 1" in c["answer"] and json.loads(c["meta"])["contrasted"]


# ---- mix ---------------------------------------------------------------------------------------

def test_mix_weights_give_their_proportions(tmp_path, run_recipe):
    weights = {"math": 60, "commonsense": 20, "mental-health": 20}
    result, rows, quarantined = run_recipe(quickstart_variant(tmp_path, mix={"weights": weights, "seed": 3}))
    n = len(rows)
    share = {d: k / n for d, k in Counter(r["domain"] for r in rows).items()}
    assert set(share) == set(weights)
    for d, w in weights.items():
        assert abs(share[d] - w / 100) <= 0.01, (d, share[d])
    report = result.manifest["reports"]["mix"]
    assert report["after"]["math"] == Counter(r["domain"] for r in rows)["math"]
    assert sum(report["before"].values()) - sum(report["after"].values()) == len([q for q in quarantined if q["stage"] == "mix"])
    reasons = Counter(q["reason"].split(" ")[3] for q in quarantined if q["stage"] == "mix")
    assert reasons["is"] > 0 and reasons["over"] > 0          # unlisted domains, and over-target rows
    kept = {r["id"] for r in rows}

    # the same rows again, whatever order the sources come in
    def reverse(recipe):
        recipe["sources"].reverse()
    _, again, _ = run_recipe(quickstart_variant(tmp_path, mix={"weights": weights, "seed": 3}, x=reverse))
    assert {r["id"] for r in again} == kept
    _, other_seed, _ = run_recipe(quickstart_variant(tmp_path, mix={"weights": weights, "seed": 4}))
    assert {r["id"] for r in other_seed} != kept


def test_mix_temperature_and_caps(tmp_path, run_recipe):
    result, rows, _ = run_recipe(quickstart_variant(tmp_path, mix={"temperature": 0.5, "caps": {"math": 100}}, validate=None))
    counts = Counter(r["domain"] for r in rows)
    assert counts["math"] <= 100 and len(counts) == 6
    before = result.manifest["reports"]["mix"]["before"]
    # T < 1 flattens: the largest domain loses share to the smallest
    assert counts["math"] / len(rows) < before["math"] / sum(before.values())


def test_mix_names_must_be_domains_a_source_gives(tmp_path):
    from factory.errors import RecipeError
    from factory.recipe import load_recipe
    from conftest import write_recipe

    path = write_recipe(tmp_path, quickstart_variant(tmp_path, mix={"weights": {"maths": 1}}))
    with pytest.raises(RecipeError, match=r"mix.weights: no source can produce domain 'maths'"):
        load_recipe(path)
