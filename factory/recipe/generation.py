"""Recipe options for generation: the teacher (``teacher:``) and the training exports
(``exports:``). Split from model.py to keep each file readable; model.py re-exports them."""

from __future__ import annotations

from typing import Annotated, Literal, Union

from pydantic import Discriminator, Field, model_validator

from factory.recipe.base import Strict


# ---- teacher ---------------------------------------------------------------------------------

class Prices(Strict):
    input_per_mtok: float = Field(ge=0, description="USD per million prompt tokens")
    output_per_mtok: float = Field(ge=0, description="USD per million completion tokens")


class TeacherOptions(Strict):
    """Generate chain-of-thought traces with a teacher model for rows that lack one."""

    backend: str = Field("local", description="openai | anthropic | local (a registered backend name)")
    model: str | None = Field(None, description="model name; local: a GGUF path (default: the bundled Gemma 3 270M)")
    base_url: str | None = Field(None, description="openai: any OpenAI-compatible server (vLLM, llama.cpp, Ollama); anthropic: API base")
    api_key_env: str | None = Field(None, description="environment variable holding the API key (default OPENAI_API_KEY / ANTHROPIC_API_KEY)")
    mode: Literal["chat", "completion"] | None = Field(
        None, description="chat messages or a plain completion prompt (default: chat; local: completion, for base models)")
    prompt: str | None = Field(None, description="Jinja2 template: a name under recipes/prompts/ or a path relative to the recipe "
                                                 "(default: reasoning_path for chat, fewshot_completion for completion)")
    few_shot: int = Field(2, ge=0, le=16, description="examples drawn from rows of the same domain that already carry traces")
    domain_wording: bool = Field(False, description="name the row's domain in the prompt ('… in math')")
    domain_phrases: dict[str, str] = Field(default_factory=dict, description="wording per domain, e.g. {history: in post-collapse societies}")
    rows: Literal["missing", "all"] = Field("missing", description="missing: only Q-A rows without a trace; all: every Q-A row")
    sources: list[str] = Field(default_factory=list, description="only rows of these sources (default: all)")
    samples: int = Field(1, ge=1, le=64, description="traces drawn per question")
    keep: Literal["first_correct", "all_correct", "all"] = Field(
        "all", description="which samples become rows; incorrect ones kept under 'all' are flagged answer_incorrect")
    temperature: float = Field(0.0, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    max_tokens: int = Field(512, ge=1, description="completion tokens per request")
    stop: list[str] = Field(default_factory=list, description="stop strings (completion mode adds its own)")
    seed: int = Field(0, description="request seed; sample k uses seed + k")
    thinking_tokens: int | None = Field(None, ge=1024, description="anthropic: extended thinking budget")
    max_concurrency: int = Field(16, ge=1, le=1024, description="requests in flight at most (cut on 429, grown back additively)")
    requests_per_minute: float | None = Field(None, gt=0)
    tokens_per_minute: float | None = Field(None, gt=0, description="prompt + completion tokens per minute")
    max_retries: int = Field(6, ge=0, le=50, description="retries per request on 429, 5xx, timeouts, broken bodies")
    timeout_s: float = Field(120.0, gt=0, description="seconds per request attempt")
    breaker_failures: int = Field(20, ge=1, description="stop the run after this many requests in a row fail past their retries")
    cache: str | None = Field(None, description="SQLite response cache (default: $COT_FACTORY_CACHE or ~/.cache/cot-factory/teacher.sqlite)")
    prices: Prices | None = Field(None, description="USD per million tokens (default: the built-in table for known models)")
    server_args: list[str] = Field(default_factory=list, description="local: extra llama_cpp.server arguments")

    @model_validator(mode="after")
    def _samples_need_temperature(self) -> "TeacherOptions":
        if self.samples > 1 and self.temperature == 0 and not self.thinking_tokens:
            raise ValueError("samples > 1 needs temperature > 0 (at temperature 0 every sample is the same)")
        return self


# ---- exports -------------------------------------------------------------------------------------

class SFTExport(Strict):
    """Chat rows for TRL's SFTTrainer: the assistant turn is the rendered reasoning + answer."""
    kind: Literal["sft"] = "sft"
    format: Literal["messages", "prompt_completion"] = Field(
        "messages", description="messages: TRL conversational; prompt_completion: prompt turns + the completion turn")
    template: str | None = Field(None, description="Jinja2 for the assistant turn: a name under recipes/prompts/ (sft_answer, "
                                                   "sft_reasoning_path) or a path beside the recipe (default: sft_answer)")
    system: str | None = Field(None, description="a system message for Q-A rows")
    kinds: list[Literal["qa", "conversation", "preference"]] = Field(
        default_factory=lambda: ["qa", "conversation"], description="row kinds exported (preference: prompt + chosen)")
    only_correct: bool = Field(True, description="leave out rows whose answer was checked and found wrong")


class DPOExport(Strict):
    """Preference pairs for TRL's DPOTrainer (prompt / chosen / rejected)."""
    kind: Literal["dpo"] = "dpo"
    format: Literal["messages", "strings"] = Field("messages", description="conversational lists of messages, or plain strings")
    builders: list[Literal["preference", "samples", "student"]] = Field(
        default_factory=lambda: ["preference", "samples"],
        description="preference: preference rows (hh-rlhf); samples: correct vs incorrect teacher samples of one question; "
                    "student: teacher final vs a student's draft")
    student: TeacherOptions | None = Field(None, description="the student backend for the student builder (any teacher backend)")
    student_sources: list[str] = Field(default_factory=list, description="student builder: only rows of these sources")
    noisy_filter: float = Field(0.15, ge=0, lt=1, description="drop this share of each builder's pairs with the highest disagreement score")
    max_pairs_per_question: int = Field(4, ge=1)

    @model_validator(mode="after")
    def _student_needs_backend(self) -> "DPOExport":
        if "student" in self.builders and self.student is None:
            raise ValueError("the student builder needs a student: backend")
        return self


class SelectorExport(Strict):
    """Token-level selector windows: the last k tokens, the target and K candidates."""
    kind: Literal["selector"] = "selector"
    tokenizer: str | None = Field(None, description="a tokenizer.json file or a local HF tokenizer directory "
                                                    "(default: a BPE trained on the recipe's own text, saved beside the export)")
    vocab_size: int = Field(4096, ge=256, description="size of the BPE trained when no tokenizer is given")
    context: int = Field(8, ge=1, le=512, description="k: tokens of context before the target")
    candidates: int = Field(16, ge=2, le=1024, description="K: the target plus K-1 distractors")
    seed: int = 0
    batch_rows: int = Field(2000, ge=1, description="rows tokenised and written at a time (memory does not grow with the corpus)")


Export = Annotated[Union[SFTExport, DPOExport, SelectorExport], Discriminator("kind")]
