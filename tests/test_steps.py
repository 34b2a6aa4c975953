"""Reasoning structure: splitting, tags, dependency order, the steps stage on real data."""

from __future__ import annotations

import sys

import polars as pl
import pytest

from conftest import DATA, REPO
from factory.recipe.model import StepOptions
from factory.steps.order import facts, needs, order_steps
from factory.steps.split import split_texts
from factory.steps.stage import structure
from factory.steps.tags import rules_for, tag_expr


# ---- splitting ---------------------------------------------------------------------------------

@pytest.mark.parametrize("text, pieces", [
    ("He has 3 apples. She has 4.", ["He has 3 apples.", "She has 4."]),
    ("x = 3.5. Then y = 2 * x = 7.", ["x = 3.5.", "Then y = 2 * x = 7."]),                 # decimals
    ("She paid $3.50 for it. Then she left.", ["She paid $3.50 for it.", "Then she left."]),
    ("By investing Rs. 128, he earns Rs. 16. Answer C", ["By investing Rs. 128, he earns Rs. 16.", "Answer C"]),
    ('She said "Stop. Now." Then left.', ['She said "Stop. Now."', "Then left."]),           # quotes
    ("1. First do this. 2. Then that.", ["1. First do this.", "2. Then that."]),             # inline list
    ("Step one\nStep two", ["Step one", "Step two"]),                                        # line breaks
    ("- a. - b.\n* c", ["- a. - b.", "* c"]),
    ("He has 3 apples. he eats one.", ["He has 3 apples. he eats one."]),                    # no lowercase start
    ("48 / 2 = 24. So 24 clips.", ["48 / 2 = 24.", "So 24 clips."]),
    ("", []),
])
def test_split_rules(text, pieces):
    assert split_texts([text]) == [pieces]


def test_split_never_inside_an_equation_or_number():
    [out] = split_texts(["Cost = $2.50 x 3 = $7.50 in all. Next, tax is 0.5 x 7.50 = 3.75. Done."])
    assert out == ["Cost = $2.50 x 3 = $7.50 in all.", "Next, tax is 0.5 x 7.50 = 3.75.", "Done."]


# ---- tags -------------------------------------------------------------------------------------

def _tags(texts, has_calls=None, overrides=None):
    df = pl.DataFrame({"text": texts, "calls": has_calls or [False] * len(texts)})
    return df.select(tag_expr(pl.col("text"), pl.col("calls"), rules_for(overrides))).to_series().to_list()


def test_tag_table():
    assert _tags([
        "Natalia sold 48 / 2 = 24 clips in May.",          # a calculation
        "Let x = 5.",                                       # an assignment
        "Check: 24 + 48 = 72, which matches the total.",    # verification beats calculation
        "Substituting x = 5 back gives 10 = 10.",
        "So the answer is 72.",                             # conclusion
        "So she sold 24 + 48 = 72 clips.",                  # a concluding calculation is an ACTION
        "Clips are sold in packs.",
        "We look up the population of France.",             # an external call
    ]) == ["ACTION", "ACTION", "CHECK", "CHECK", "SUMMARY", "ACTION", "THOUGHT", "ACTION"]


def test_structured_calls_are_actions_and_overrides_replace_rules():
    assert _tags(["He pays the fee."], [True]) == ["ACTION"]
    assert _tags(["Thus it is 4.", "Conclude: 4."], overrides={"SUMMARY": [r"^Conclude"]}) == ["THOUGHT", "SUMMARY"]
    with pytest.raises(Exception):
        rules_for({"CHECK": ["(unclosed"]})


# ---- dependencies and order -------------------------------------------------------------------

GSM = ("Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. "
       "How many clips did Natalia sell altogether in April and May?")
GSM_STEPS = ["Natalia sold 48/2 = 24 clips in May.", "Natalia sold 48+24 = 72 clips altogether in April and May."]


def test_number_dependency_and_stable_order():
    ordered, flags = order_steps([{"text": t} for t in reversed(GSM_STEPS)], GSM, "72")
    assert [s["text"] for s in ordered] == GSM_STEPS and flags == []
    assert ordered[1]["depends_on"] == [0]
    same, _ = order_steps([{"text": t} for t in GSM_STEPS], GSM, "72")
    assert [s["text"] for s in same] == GSM_STEPS


def test_order_keep_flags_instead_of_moving():
    kept, flags = order_steps([{"text": t} for t in reversed(GSM_STEPS)], GSM, "72", reorder=False)
    assert [s["text"] for s in kept] == list(reversed(GSM_STEPS)) and flags == ["steps_out_of_order"]


def test_variable_and_explicit_references():
    steps = ["Then 2x = 10, so the answer uses x.", "Let x be the number of apples.", "From #1, x = 5."]
    info = [facts(s) for s in steps]
    kinds = {(n.sources, n.step, n.kind) for n in needs(info)}
    assert ((1,), 0, "variable") in kinds and ((0,), 2, "explicit") in kinds
    ordered, _ = order_steps([{"text": s} for s in steps])
    assert [s["text"] for s in ordered][0] == steps[1]


def test_cycle_is_broken_at_the_weakest_edge_and_flagged():
    steps = ["Step 2 follows from step 3.", "See step 1 and step 3.", "It uses step 2."]   # explicit cycle
    ordered, flags = order_steps([{"text": s} for s in steps])
    assert "dependency_cycle" in flags and sorted(s["text"] for s in ordered) == sorted(steps)


def test_units_and_givens_disambiguate():
    q = "A shop sells 3 pens for $2 each. Tom buys 5 pens. How much does he pay?"
    steps = ["Tom pays 5 * $2 = $10.", "Two friends pay 2 * 3 = 6 dollars."]   # 2 is the question's $2, not a result
    info = [facts(s) for s in steps]
    assert not any(n.step == 0 for n in needs(info, q))


def test_gsm8k_order_on_real_rows():
    """The bench's measurement on the bundled GSM8K sample (the acceptance figure, on the full
    test set, comes from bench/step_order.py: 95.3 % / 99.2 %)."""
    sys.path.insert(0, str(REPO / "bench"))
    from step_order import rows, run

    data = rows(DATA, path=DATA / "gsm8k" / "train.head1000.jsonl")
    kept, unchanged, with_edges = run(data, seed=13)
    assert with_edges > 850
    assert kept / len(data) >= 0.95
    assert unchanged / len(data) >= 0.985


# ---- the stage on standardised rows -----------------------------------------------------------

def test_steps_stage_in_a_run(run_recipe):
    result, rows, quarantined = run_recipe(f"""
        name: steps
        sources:
          - name: gsm8k
            kind: qa
            path: {DATA}/gsm8k/train.head1000.jsonl
            limit: 200
            fields: {{question: question, answer: answer}}
            trace_format: gsm8k
            trace_options: {{calculator: action}}
            domain: math
          - name: strategyqa
            kind: qa
            path: {DATA}/strategyqa/dev.json
            id_field: qid
            fields: {{question: question, answer: answer, subquestions: decomposition, facts: facts}}
            trace_format: strategyqa
            domain: commonsense
        steps: {{order: dependency}}
        validate: {{}}
    """)
    report = result.manifest["reports"]["steps"]
    assert report["rows_with_steps"] == len(rows) and report["steps_out"] >= report["steps_in"]
    gsm = [r for r in rows if r["source"]["name"] == "gsm8k"]
    calc_steps = [s for r in gsm for s in r["steps"] if s["calls"]]
    assert len(calc_steps) > 300 and all(s["tag"] == "ACTION" for s in calc_steps)
    # every depends_on points backwards, every StrategyQA sub-question reference too
    for r in rows:
        for k, s in enumerate(r["steps"]):
            assert all(0 <= d < k for d in s["depends_on"])
        for k, sq in enumerate(r["subquestions"]):
            assert all(0 <= ref < k for ref in sq["refs"])
    sqa = [r for r in rows if r["source"]["name"] == "strategyqa"]
    assert sum(any(sq["refs"] for sq in r["subquestions"]) for r in sqa) > 100
    assert not [q for q in quarantined if q["stage"] == "validate"]


def test_structure_keeps_rows_without_steps_and_moves_calls_with_their_piece():
    df = pl.DataFrame({
        "question": ["q", "chat"], "answer": ["24", None],
        "steps": [[{"tag": "THOUGHT", "text": "She sold half. 48 / 2 = 24 clips.", "depends_on": [],
                    "calls": [{"tool": "calculator", "input": "48/2", "output": "24"}]}], []],
        "subquestions": [[], []], "flags": [[], []],
    }, schema_overrides={"subquestions": pl.List(pl.Struct({"question": pl.String, "answer": pl.String,
                                                              "refs": pl.List(pl.Int32)}))})
    out, report = structure(df, StepOptions())
    first = out["steps"][0].to_list()
    assert [s["text"] for s in first] == ["She sold half.", "48 / 2 = 24 clips."]
    assert [s["calls"] for s in first] == [[], [{"tool": "calculator", "input": "48/2", "output": "24"}]]
    assert [s["tag"] for s in first] == ["THOUGHT", "ACTION"]
    assert out["steps"][1].to_list() == [] and report["rows_with_steps"] == 1


def test_a_trained_pipeline_named_in_the_recipe_feeds_dependencies(tmp_path):
    """steps.model: a real spaCy pipeline from disk (blank English + sentencizer + an entity
    ruler, saved and loaded by path) supplies the entities the rule-based default cannot see."""
    import spacy

    nlp = spacy.blank("en")
    nlp.add_pipe("sentencizer")
    ruler = nlp.add_pipe("entity_ruler")
    ruler.add_patterns([{"label": "PLANT", "pattern": [{"LOWER": "eucalyptus"}]}])
    model_dir = tmp_path / "plants_pipeline"
    nlp.to_disk(model_dir)

    steps = [{"tag": "THOUGHT", "text": "Koalas mostly eat eucalyptus.", "depends_on": [], "calls": []},
             {"tag": "THOUGHT", "text": "The eucalyptus is a tree whose leaves are toxic to most animals.",
              "depends_on": [], "calls": []}]
    df = pl.DataFrame({"question": ["Do koalas eat leaves?"], "answer": ["yes"], "steps": [steps],
                       "subquestions": [[]], "flags": [[]]},
                      schema_overrides={"subquestions": pl.List(pl.Struct({"question": pl.String, "answer": pl.String,
                                                                          "refs": pl.List(pl.Int32)}))})
    plain, _ = structure(df, StepOptions(order="dependency"))
    assert [s["text"] for s in plain["steps"][0]] == [s["text"] for s in steps]      # no names: no evidence
    with_model, report = structure(df, StepOptions(order="dependency", model=str(model_dir)))
    out = with_model["steps"][0].to_list()
    assert [s["text"] for s in out] == [steps[1]["text"], steps[0]["text"]]         # the definition first
    assert out[1]["depends_on"] == [0] and report["rows_reordered"] == 1
