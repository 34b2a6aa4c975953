"""Conversations (three layouts, role mapping) and preference pairs (hh-rlhf transcripts)."""

from __future__ import annotations

import gzip
import json

from conftest import DATA

HH = [json.loads(line) for line in gzip.open(DATA / "hh_rlhf" / "helpful-base-test.head300.jsonl.gz", "rt", encoding="utf-8")]


def test_sharegpt_messages_with_role_mapping(tmp_path, run_recipe):
    rows = [
        {"conversations": [{"from": "SYSTEM", "value": "I'm sorry to hear that."}, {"from": "USER", "value": "I feel low."}]},
        {"conversations": [{"from": "USER", "value": "Hi"}, {"from": "SYSTEM", "value": "Hello! How can I help?"},
                           {"from": "USER", "value": "Tell me a joke"}, {"from": "SYSTEM", "value": "Why did…"}]},
        {"conversations": [{"from": "NARRATOR", "value": "?"}, {"from": "USER", "value": "x"}]},
        {"conversations": [{"from": "USER", "value": "only a user turn"}]},
    ]
    (tmp_path / "c.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    result, out, quarantined = run_recipe("""
        name: t
        sources:
          - name: chat
            kind: conversation
            path: c.jsonl
            fields: {messages: conversations, role_key: from, content_key: value}
            roles: {USER: user, SYSTEM: assistant}
    """)
    assert [[m["role"] for m in r["messages"]] for r in out] == [["assistant", "user"], ["user", "assistant", "user", "assistant"]]
    assert out[1]["question"] == "Tell me a joke" and out[1]["answer"] == "Why did…"
    assert out[0]["answer"] is None     # ends on a user turn: nothing to learn as the final answer
    reasons = sorted(q["reason"] for q in quarantined)
    assert reasons[0] == "a conversation needs at least one user and one assistant turn"
    assert reasons[1].startswith("unknown role 'NARRATOR' (map it under roles:")


def test_transcript_layout(tmp_path, run_recipe):
    (tmp_path / "t.jsonl").write_text(json.dumps({"text": "Client: I can't sleep.\nTherapist: How long has this been going on?\nClient: Weeks.\nTherapist: Let's look at your evenings."}) + "\n")
    _, out, _ = run_recipe("""
        name: t
        sources:
          - name: s
            kind: conversation
            path: t.jsonl
            fields: {transcript: text, system: missing_field}
            roles: {Client: user, Therapist: assistant}
    """)
    assert out[0]["messages"] == [
        {"role": "user", "content": "I can't sleep."},
        {"role": "assistant", "content": "How long has this been going on?"},
        {"role": "user", "content": "Weeks."},
        {"role": "assistant", "content": "Let's look at your evenings."},
    ]


def test_hh_rlhf_transcripts_become_prompt_plus_continuations(tmp_path, run_recipe):
    _, out, quarantined = run_recipe(f"""
        name: t
        sources:
          - name: hh
            kind: preference
            path: {DATA / 'hh_rlhf' / 'helpful-base-test.head300.jsonl.gz'}
            fields: {{chosen: chosen, rejected: rejected}}
            domain: helpfulness
    """)
    assert len(out) + len(quarantined) == len(HH) == 300
    for q in quarantined:
        assert q["reason"] == "chosen and rejected are identical"
        raw = json.loads(q["raw"])
        assert raw["chosen"] == raw["rejected"]
    by_row = {r["source"]["row"]: r for r in out}
    for i, rec in enumerate(HH):
        if i not in by_row:
            continue
        row = by_row[i]
        # messages + chosen reproduce the original transcript exactly (modulo whitespace at turn edges)
        def render(msgs):
            return "".join(f"\n\n{'Human' if m['role'] == 'user' else 'Assistant'}: {m['content']}" for m in msgs)
        assert render(row["messages"] + row["chosen"]).split() == rec["chosen"].split()
        assert render(row["messages"] + row["rejected"]).split() == rec["rejected"].split()
        assert row["question"] == [m for m in row["messages"] if m["role"] == "user"][-1]["content"]
        assert row["chosen"] != row["rejected"]
    # most pairs differ only in the final assistant turn
    single = sum(1 for r in out if len(r["chosen"]) == 1 and r["chosen"][0]["role"] == "assistant")
    assert single >= 0.95 * len(out)


def test_prompt_and_completion_strings(tmp_path, run_recipe):
    rows = [{"prompt": "Is 7 prime?", "good": "Yes: its only divisors are 1 and 7.", "bad": "No, 7 = 2 × 3."}]
    (tmp_path / "p.jsonl").write_text(json.dumps(rows[0]) + "\n")
    _, out, _ = run_recipe("""
        name: t
        sources:
          - name: p
            kind: preference
            path: p.jsonl
            fields: {prompt: prompt, chosen: good, rejected: bad}
    """)
    assert out[0]["messages"] == [{"role": "user", "content": "Is 7 prime?"}]
    assert out[0]["chosen"] == [{"role": "assistant", "content": "Yes: its only divisors are 1 and 7."}]
    assert out[0]["rejected"] == [{"role": "assistant", "content": "No, 7 = 2 × 3."}]
    assert out[0]["question"] == "Is 7 prime?"
