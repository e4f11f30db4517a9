import pytest
import torch

from synthsteer.errors import SynthsteerError
from synthsteer.lm import TINY_PATH, check_fingerprint, load_lm


def test_unknown_model_is_a_clear_error():
    with pytest.raises(SynthsteerError, match="--model no-such-org/no-such-model: neither a local directory nor reachable"):
        load_lm("no-such-org/no-such-model", device="cpu")


def test_empty_local_dir_is_a_clear_error(tmp_path):
    with pytest.raises(SynthsteerError, match="a local directory that does not hold a causal LM"):
        load_lm(str(tmp_path), device="cpu")


def test_bad_device_and_dtype():
    if not torch.cuda.is_available():
        with pytest.raises(SynthsteerError, match="--device cuda: CUDA is not available"):
            load_lm("tiny", device="cuda")
    with pytest.raises(SynthsteerError, match="--dtype float8"):
        load_lm("tiny", device="cpu", dtype="float8")


def test_local_model_loads_frozen_and_fingerprint_survives_bf16(lm_dir):
    a = load_lm(str(lm_dir), device="cpu")
    assert not a.model.training and not any(p.requires_grad for p in a.model.parameters())
    b = load_lm(str(lm_dir), device="cpu", dtype="bfloat16")
    assert b.model.dtype == torch.bfloat16
    check_fingerprint(a.fingerprint(), b.fingerprint(), "prompt")  # same weights, other dtype: accepted
    bad = {**a.fingerprint(), "hidden_size": 4096}
    with pytest.raises(SynthsteerError, match="differs in hidden_size"):
        check_fingerprint(bad, a.fingerprint(), "prompt")


def test_bundled_tiny_loads_with_plain_transformers():
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(TINY_PATH)
    tok = AutoTokenizer.from_pretrained(TINY_PATH)
    assert model.config.model_type == "llama"
    assert sum(p.numel() for p in model.parameters()) < 25e6 / 4
    assert sum(f.stat().st_size for f in TINY_PATH.iterdir()) <= 25 * 2**20
    ids = tok("Natalia sold clips to 48 of her friends.", return_tensors="pt").input_ids
    assert tok.decode(ids[0]) == "Natalia sold clips to 48 of her friends."
    with torch.no_grad():
        loss = model(input_ids=ids, labels=ids).loss
    assert loss.item() < 6.0  # trained: far below log(vocab) = 9.0
