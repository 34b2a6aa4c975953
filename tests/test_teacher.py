"""Teacher: the official SDKs against a loopback server that speaks the providers' wire formats
(factory.testing.provider), with injected faults, a kill -9 in the middle of a run, the cache,
the circuit breaker, secrets, sampling policies and the dry run."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml

from conftest import DATA, REPO

GSM8K = DATA / "gsm8k" / "train.head1000.jsonl"


def gsm8k_golds(n: int) -> list[tuple[str, str]]:
    rows = [json.loads(line) for line in GSM8K.read_text().splitlines()[:n]]
    return [(r["question"], r["answer"].split("####")[-1].strip().replace(",", "")) for r in rows]


def recipe(tmp: Path, url: str, *, limit: int, name: str = "recipe.yaml", backend: str = "openai", **teacher) -> Path:
    t = {"backend": backend, "model": "fake-model", "base_url": url if backend == "anthropic" else url + "/v1",
         "rows": "all", "max_concurrency": 16, **teacher}
    doc = {"name": "teach", "sources": [{
        "name": "gsm8k", "kind": "qa", "path": str(GSM8K), "limit": limit, "fields": {"question": "question", "answer": "answer"},
        "trace_format": "gsm8k", "domain": "math", "license": "MIT"}], "teacher": t}
    path = tmp / name
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def run_cli(path: Path, out: Path, *extra: str, env: dict | None = None, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "factory", "run", str(path), "--out", str(out), "-q", *extra],
                          capture_output=True, text=True, env={**os.environ, **(env or {})}, cwd=REPO)
    if check:
        assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def rows_of(out: Path) -> list[dict]:
    manifest = json.loads((out / "manifest.json").read_text())
    rows = []
    for shard in manifest["shards"]:
        rows += pq.read_table(out / shard["path"]).to_pylist()
    return rows


def quarantined(out: Path) -> list[dict]:
    from factory.quarantine import read_quarantine
    return read_quarantine(out).to_pylist()


def shard_bytes(out: Path) -> dict[str, bytes]:
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted((out / "data").rglob("*.parquet"))}


def test_500_rows_with_20_percent_faults_all_accounted_for(server, tmp_path):
    golds = gsm8k_golds(500)
    server.reset(fault_rate=0.2, stall_s=2.5, answers={q: a for q, a in golds[:100]})
    path = recipe(tmp_path, server.url, limit=500, cache=str(tmp_path / "cache.sqlite"), timeout_s=1.2, max_retries=8,
                  max_concurrency=32, prices={"input_per_mtok": 0.15, "output_per_mtok": 0.6})
    from factory.pipeline import run
    from factory.recipe import load_recipe

    result = run(load_recipe(path), tmp_path / "out")
    stats = server.stats()
    assert set(stats["faults"]) == {"429", "500", "503", "timeout", "truncated"}
    assert sum(stats["faults"].values()) > 60                         # ~20 % of ~600 attempts
    assert stats["answered_twice"] == []                              # nothing paid for twice
    rows, q = rows_of(result.out), quarantined(result.out)
    ids = [r["id"] for r in rows] + [r["id"] for r in q]
    assert len(ids) == len(set(ids)) == 500                           # every row: in the shards or in quarantine
    assert all(r["reason"] for r in q)
    report = result.manifest["reports"]["teacher"]
    assert report["requests"] == 500 and report["correct"] + report["incorrect"] + len(q) == 500
    assert report["cost_usd"] > 0 and report["input_tokens"] > 0
    run_stats = result.this_run["teacher"]
    assert run_stats["retries"] > 0 and run_stats["rate_limited"] > 0 and run_stats["cache_hits"] == 0
    by_id = {r["id"]: r for r in rows}
    first = by_id[rows[0]["id"]]
    assert first["trace_format"] == "teacher" and first["teacher"]["provider"] == "openai"
    assert [s["tag"] for s in first["steps"]] == ["THOUGHT", "ACTION", "CHECK", "SUMMARY"]
    assert first["subquestions"][1]["refs"] == [0]                    # "(uses #1)" points back
    right = {q for q, _ in golds[:100]}
    assert all(r["answer_correct"] for r in rows if r["question"] in right)
    correct = [r for r in rows if r["answer_correct"]]
    assert len(correct) == report["correct"] >= 100 and all("answer_incorrect" not in r["flags"] for r in correct)
    assert all("answer_incorrect" in r["flags"] for r in rows if r["answer_correct"] is False)


def test_rerun_of_a_finished_recipe_sends_zero_requests(server, tmp_path):
    server.reset()
    path = recipe(tmp_path, server.url, limit=40, cache=str(tmp_path / "cache.sqlite"))
    run_cli(path, tmp_path / "a")
    first = server.stats()["total"]
    assert first == 40
    run_cli(path, tmp_path / "b")
    assert server.stats()["total"] == first                            # zero requests the second time
    assert shard_bytes(tmp_path / "a") == shard_bytes(tmp_path / "b")
    assert (tmp_path / "a" / "manifest.json").read_bytes() == (tmp_path / "b" / "manifest.json").read_bytes()
    run_json = json.loads((tmp_path / "b" / "run.json").read_text())
    assert run_json["teacher_this_run"]["cache_hits"] == 40 and run_json["teacher_this_run"]["sent"] == 0


def test_kill_9_then_resume_gives_the_same_shards_and_repeats_no_answered_prompt(server, tmp_path):
    server.reset()
    path = recipe(tmp_path, server.url, limit=1000, max_concurrency=8)
    reference = tmp_path / "reference"
    run_cli(path, reference, env={"COT_FACTORY_CACHE": str(tmp_path / "ref.sqlite")})

    server.reset(latency_s=0.01)
    cache = {"COT_FACTORY_CACHE": str(tmp_path / "resume.sqlite")}
    proc = subprocess.Popen([sys.executable, "-m", "factory", "run", str(path), "--out", str(tmp_path / "out"), "-q"],
                            env={**os.environ, **cache}, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while server.stats()["total"] < 300 and time.time() < deadline:
        time.sleep(0.05)
    # Hold every new request in the server so nothing is on the wire at the kill, then let
    # the requests already answered reach the client's cache.
    server.configure(latency_s=30.0)
    time.sleep(0.5)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    before = server.stats()
    answered_before = sum(before["answered"].values())
    assert 300 <= answered_before < 1000
    assert not (tmp_path / "out").exists()                            # no half-written output

    server.configure(latency_s=0.0)
    run_cli(path, tmp_path / "out", env=cache)
    after = server.stats()
    assert after["answered_twice"] == []                              # no answered prompt was sent again
    assert sum(after["answered"].values()) == 1000
    assert after["total"] - before["total"] == 1000 - answered_before   # the resumed run sent only what was missing
    assert shard_bytes(tmp_path / "out") == shard_bytes(reference)


def test_truncated_reply_is_flagged_not_retried(server, tmp_path):
    server.reset()
    path = recipe(tmp_path, server.url, limit=5, cache=str(tmp_path / "c.sqlite"), max_tokens=20)
    out = tmp_path / "out"
    run_cli(path, out)
    rows = rows_of(out)
    assert len(rows) == 5 and all("truncated" in r["flags"] for r in rows)
    assert all(r["teacher"]["finish_reason"] == "length" for r in rows)
    assert sorted(server.stats()["requests"].values()) == [1] * 5


def test_first_correct_samples_in_rounds_and_quarantines_wrong_samples(server, tmp_path):
    golds = gsm8k_golds(6)
    answers = {golds[0][0]: golds[0][1],                       # right at once: one request
               golds[1][0]: ["1", golds[1][1]],                # right at the second sample
               golds[2][0]: ["1", "2", "3"]}                   # never right: three samples, all quarantined
    server.reset(answers=answers)
    path = recipe(tmp_path, server.url, limit=3, cache=str(tmp_path / "c.sqlite"), samples=3, temperature=0.7, keep="first_correct")
    out = tmp_path / "out"
    run_cli(path, out)
    assert server.stats()["total"] == 1 + 2 + 3
    rows, q = rows_of(out), quarantined(out)
    assert len(rows) == 2 and all(r["answer_correct"] for r in rows)
    second = next(r for r in rows if r["question"] == golds[1][0])
    assert second["teacher"]["sample"] == 1 and second["parent_id"] is None       # the kept sample takes the row's id
    assert len(q) == 1 + 3
    assert all("does not match the gold answer" in r["reason"] for r in q)
    never = [json.loads(r["raw"]) for r in q if json.loads(r["raw"])["question"] == golds[2][0]]
    assert sorted(r["teacher"]["sample"] for r in never) == [0, 1, 2]
    assert sum(r["parent_id"] is None for r in never) == 1                          # the row itself, plus two samples


def test_keep_all_samples_makes_child_rows(server, tmp_path):
    golds = gsm8k_golds(2)
    server.reset(answers={golds[0][0]: ["7", golds[0][1]]})
    path = recipe(tmp_path, server.url, limit=2, cache=str(tmp_path / "c.sqlite"), samples=2, temperature=0.8, keep="all")
    out = tmp_path / "out"
    result = run_cli(path, out)
    rows = rows_of(out)
    assert len(rows) == 4
    children = [r for r in rows if r["parent_id"]]
    assert len(children) == 2 and {c["teacher"]["sample"] for c in children} == {1}
    manifest = json.loads((out / "manifest.json").read_text())
    teacher = next(s for s in manifest["stages"] if s["stage"] == "teacher")
    assert teacher["added"] == 2 and teacher["rows_out"] == 4
    assert result.returncode == 0


def test_anthropic_messages_with_thinking_and_openai_reasoning_content(server, tmp_path):
    server.reset(reasoning=True)
    path = recipe(tmp_path, server.url, limit=3, backend="anthropic", cache=str(tmp_path / "a.sqlite"), thinking_tokens=1024)
    run_cli(path, tmp_path / "a", env={"ANTHROPIC_API_KEY": "not-a-key"})
    rows = rows_of(tmp_path / "a")
    assert {r["teacher"]["provider"] for r in rows} == {"anthropic"}
    assert all(r["teacher"]["reasoning"] and r["steps"] and r["answer"] for r in rows)
    path = recipe(tmp_path, server.url, limit=3, cache=str(tmp_path / "o.sqlite"), name="o.yaml")
    run_cli(path, tmp_path / "o")
    assert all(r["teacher"]["reasoning"] for r in rows_of(tmp_path / "o"))


def test_circuit_breaker_stops_the_run_and_keeps_what_was_answered(server, tmp_path):
    server.reset(fail_all=500)
    path = recipe(tmp_path, server.url, limit=30, cache=str(tmp_path / "c.sqlite"), max_retries=1, breaker_failures=5,
                  max_concurrency=2)
    proc = run_cli(path, tmp_path / "out", check=False)
    assert proc.returncode == 2
    assert "teacher stopped" in proc.stderr and "HTTP 500" in proc.stderr
    assert server.stats()["total"] < 30                               # it stopped early, not after 30 × 2 attempts
    assert not (tmp_path / "out").exists()

    server.reset(fail_all=401)                                        # not retryable: one attempt each
    proc = run_cli(path, tmp_path / "out", check=False)
    assert proc.returncode == 2 and "HTTP 401" in proc.stderr
    assert set(server.stats()["requests"].values()) == {1}

    server.reset()
    run_cli(path, tmp_path / "out")
    assert len(rows_of(tmp_path / "out")) == 30


def test_api_key_never_lands_in_any_file_or_message(server, tmp_path):
    secret = "leak-canary-" + os.urandom(12).hex()      # fresh each run: no file can hold it by chance
    server.reset()
    path = recipe(tmp_path, server.url, limit=10, api_key_env="MY_TEACHER_KEY")
    ok = run_cli(path, tmp_path / "out", env={"MY_TEACHER_KEY": secret, "COT_FACTORY_CACHE": str(tmp_path / "c1.sqlite")})
    server.reset(fail_all=401)
    failed = run_cli(path, tmp_path / "out2", env={"MY_TEACHER_KEY": secret, "COT_FACTORY_CACHE": str(tmp_path / "c2.sqlite")})
    q = quarantined(tmp_path / "out2")
    assert len(q) == 10 and all("HTTP 401" in r["reason"] for r in q)
    written = [p for p in tmp_path.rglob("*") if p.is_file() and p.name != "recipe.yaml"]
    assert any(p.suffix == ".parquet" for p in written) and (tmp_path / "c1.sqlite").exists()
    for p in written:
        assert secret.encode() not in p.read_bytes(), p
    for text in (ok.stdout, ok.stderr, failed.stdout, failed.stderr):
        assert secret not in text


def test_missing_key_for_openai_itself_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump({"name": "k", "sources": [{"name": "g", "kind": "qa", "path": str(GSM8K), "limit": 2,
                                    "fields": {"question": "question", "answer": "answer"}}],
                                    "teacher": {"backend": "openai", "model": "gpt-4o-mini", "cache": str(tmp_path / "c.sqlite")}}))
    proc = run_cli(path, tmp_path / "out", check=False)
    assert proc.returncode == 2 and "OPENAI_API_KEY" in proc.stderr


def test_dry_run_renders_prompts_and_projects_cost_without_sending(server, tmp_path):
    server.reset()
    path = recipe(tmp_path, server.url, limit=20, cache=str(tmp_path / "c.sqlite"), model="gpt-4o-mini", domain_wording=True)
    proc = subprocess.run([sys.executable, "-m", "factory", "run", str(path), "--dry-run"], capture_output=True, text=True,
                          cwd=REPO, env={**os.environ, "COLUMNS": "200"})
    assert proc.returncode == 0, proc.stderr
    assert server.stats()["total"] == 0
    assert "Natalia sold clips" in proc.stdout                        # the first prompt, rendered
    assert "reasons step by step in mathematics" in proc.stdout or "in math" in proc.stdout
    assert re.search(r"to send\s*│\s*20\b", proc.stdout) and "$" in proc.stdout
    assert not (tmp_path / "teach").exists()


def test_cache_stats_and_clear(server, tmp_path):
    server.reset()
    cache = tmp_path / "c.sqlite"
    run_cli(recipe(tmp_path, server.url, limit=4, cache=str(cache)), tmp_path / "out")
    stats = subprocess.run([sys.executable, "-m", "factory", "cache", "stats", "--path", str(cache), "--json"],
                           capture_output=True, text=True, cwd=REPO)
    assert json.loads(stats.stdout)["responses"] == 4
    cleared = subprocess.run([sys.executable, "-m", "factory", "cache", "clear", "--path", str(cache), "--yes"],
                             capture_output=True, text=True, cwd=REPO)
    assert "deleted 4" in cleared.stdout


# ---- pure parts --------------------------------------------------------------------------------

@pytest.mark.parametrize("predicted,gold,options,expected", [
    ("1,250", "1250", None, True), ("$18.00", "18", None, True), ("The answer is 72.", "72", None, True),
    ("3/4", "0.75", None, True), ("71", "72", None, False), ("62.5%", "62.5 %", None, True),
    ("Yes, because it is.", "yes", None, True), ("No.", "yes", None, False), ("true", "Yes", None, True),
    ("(C)", "C", [{"label": "C", "text": "620 kgs"}], True), ("620 kgs", "C", [{"label": "C", "text": "620 kgs"}], True),
    ("B", "C", [{"label": "C", "text": "620 kgs"}], False), ("The Eiffel Tower", "eiffel tower", None, True),
    (None, "5", None, False), ("5", None, None, None), ("5 apples", "5", None, True), ("-3", "3", None, False),
])
def test_answer_check(predicted, gold, options, expected):
    from factory.answers import answers_match
    assert answers_match(predicted, gold, options) is expected


def test_parse_reply_shapes():
    from factory.teacher.parse import parse_reply

    p = parse_reply("**Issue:** x\n**Sub-questions:**\n1. How many? — needed\n2. Then what (uses #1)?\n"
                    "**Steps:**\n- [THOUGHT] think\n- [ACTION] 2 + 2 = 4\n[CHECK] 4 - 2 = 2 ✓\nSummary: so 4\n"
                    "Output possible: yes\nFinal answer: **4**")
    assert [s["tag"] for s in p.steps] == ["THOUGHT", "ACTION", "CHECK", "SUMMARY"]
    assert p.answer == "4" and p.subquestions[1]["refs"] == [0] and p.output_possible is True
    q = parse_reply("<think>hmm, 3 and 4</think>3 + 4 = 7\nSo 7 apples.\n#### 7")
    assert q.reasoning == "hmm, 3 and 4" and q.answer == "7" and [s["text"] for s in q.steps] == ["3 + 4 = 7", "So 7 apples."]
    assert parse_reply("We get \\boxed{12}.").answer == "12"
    assert parse_reply("Thinking...\nThe answer is 9.").answer == "9"
    none = parse_reply("I am not sure.\nOutput possible: no")
    assert none.answer is None and none.flags == ["no_answer", "no_output"]


def test_token_bucket_and_adaptive_concurrency():
    import asyncio

    from factory.teacher.limits import AdaptiveConcurrency, CircuitBreaker, TokenBucket

    async def take(n: int) -> float:
        bucket = TokenBucket(600, burst=1)           # 10 per second
        t0 = time.monotonic()
        for _ in range(n):
            await bucket.take(1)
        return time.monotonic() - t0

    assert asyncio.run(take(6)) >= 0.45              # 1 at once, then 5 at 0.1 s each
    lim = AdaptiveConcurrency(16, cooldown=0.0)
    lim.on_rate_limited(0.0)
    assert lim.limit == 8
    for _ in range(8):
        lim.on_success()
    assert 8.9 < lim.limit < 9.1                     # additive increase: +1 per window of successes
    b = CircuitBreaker(2)
    b.failure("x")
    b.success()
    b.failure("x")
    assert not b.open
    b.failure("y")
    assert b.open


def test_request_key_covers_what_is_sent_and_nothing_else():
    from factory.recipe.model import TeacherOptions
    from factory.teacher.backends import OpenAIBackend
    from factory.teacher.runner import request_key

    a = OpenAIBackend(TeacherOptions(backend="openai", model="m", base_url="http://127.0.0.1:1/v1"))
    b = OpenAIBackend(TeacherOptions(backend="openai", model="m", base_url="http://127.0.0.1:2/v1"))
    msgs = [{"role": "user", "content": "q"}]
    k = request_key(a, msgs, None, {"temperature": 0.0, "seed": 0, "top_p": None})
    assert k == request_key(a, msgs, None, {"seed": 0, "temperature": 0.0})                 # None dropped, order free
    assert k != request_key(a, msgs, None, {"seed": 1, "temperature": 0.0})                 # the sample's seed
    assert k != request_key(b, msgs, None, {"seed": 0, "temperature": 0.0})                 # another server
    assert k != request_key(a, [{"role": "user", "content": "q2"}], None, {"seed": 0, "temperature": 0.0})


@pytest.mark.skipif(not __import__("importlib").util.find_spec("llama_cpp"), reason="needs the [local] extra (llama-cpp-python[server])")
def test_local_backend_runs_the_real_llama_cpp_server_offline(tmp_path):
    """The embedded teacher: Gemma 3 270M (base) through llama.cpp's OpenAI-compatible server,
    few-shot completion prompts from rows that already carry traces. Most answers are wrong —
    the check flags them; every row is well-formed."""
    doc = {"name": "local", "sources": [
        {"name": "examples", "kind": "qa", "path": str(GSM8K), "limit": 20, "fields": {"question": "question", "answer": "answer"},
         "trace_format": "gsm8k", "domain": "math"},
        {"name": "questions", "kind": "qa", "path": str(DATA / "gsm8k" / "test.head200.jsonl"), "limit": 10,
         "fields": {"question": "question", "answer": "answer"}, "trace_format": "gsm8k", "domain": "math"}],
        "teacher": {"backend": "local", "rows": "all", "sources": ["questions"], "few_shot": 2, "max_tokens": 160,
                    "max_concurrency": 1, "cache": str(tmp_path / "c.sqlite")}}
    path = tmp_path / "local.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    out = tmp_path / "out"
    run_cli(path, out, env={"OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"})
    rows = [r for r in rows_of(out) if r["source"]["name"] == "questions"]
    assert len(rows) + len(quarantined(out)) == 10 and len(rows) == 10
    for r in rows:
        assert r["trace_format"] == "teacher" and r["teacher"]["provider"] == "local"
        assert r["teacher"]["model"].endswith(".gguf") and r["teacher"]["response"]
        assert r["teacher"]["output_tokens"] > 0 and r["teacher"]["cost_usd"] == 0.0
        assert r["answer_correct"] is not None
        assert (r["answer_correct"] is False) == ("answer_incorrect" in r["flags"])
    report = json.loads((out / "manifest.json").read_text())["reports"]["teacher"]
    assert report["correct"] + report["incorrect"] == 10
    run_cli(path, tmp_path / "again", env={"OMP_NUM_THREADS": "1"})     # served from the cache: same rows
    assert shard_bytes(out) == shard_bytes(tmp_path / "again")


def test_stand_in_streams_in_both_wire_formats(server):
    """The loopback provider's SSE matches what the official SDKs parse (for clients that stream)."""
    import anthropic
    import openai

    server.reset()
    o = openai.OpenAI(api_key="k", base_url=server.url + "/v1", max_retries=0)
    whole = o.chat.completions.create(model="m", messages=[{"role": "user", "content": "stream me"}], max_tokens=300)
    chunks = o.chat.completions.create(model="m", messages=[{"role": "user", "content": "stream me"}], max_tokens=300, stream=True)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content and "Final answer" in text
    a = anthropic.Anthropic(api_key="k", base_url=server.url, max_retries=0)
    with a.messages.stream(model="m", max_tokens=300, messages=[{"role": "user", "content": "stream me"}]) as s:
        streamed = "".join(s.text_stream)
        final = s.get_final_message()
    assert streamed == text and final.stop_reason == "end_turn" and final.usage.output_tokens > 0
