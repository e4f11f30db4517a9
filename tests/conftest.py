import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


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


@pytest.fixture(autouse=True)
def _cache_dir(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("SYNTHSTEER_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))
