"""`--engine vllm` (vllm_engine.py): plain, hard and SoftSRV requests through vLLM, on SmolLM2.

The tests marked `needs_vllm` run where vLLM is installed (`make test-vllm`: the CPU build in
.venv-vllm; SYNTHSTEER_REQUIRE_VLLM=1 makes a missing vLLM fail them instead of skipping). Each
start of a vLLM engine costs 20-40 s on a CPU, so every test starts as few as it can. The refusals
at the top run everywhere.
"""

import importlib.util
import json
import math
import os
import sys

import pytest
import torch

from synthsteer.cli import main
from synthsteer.decoder import Prefix
from synthsteer.engine import Request, TransformersEngine
from synthsteer.errors import SynthsteerError
from synthsteer.generation import GenerateConfig, generate
from synthsteer.generation.generator import BlockGenerator
from synthsteer.options import SamplingConfig
from synthsteer.runs import read_records, read_run

HAVE_VLLM = importlib.util.find_spec("vllm") is not None
needs_vllm = pytest.mark.skipif(not HAVE_VLLM and not os.environ.get("SYNTHSTEER_REQUIRE_VLLM"),
                                reason="vLLM is not installed (make test-vllm runs these with the CPU build)")


@pytest.fixture(autouse=True)
def _small_engine(monkeypatch, tmp_path_factory):
    # a small KV cache starts faster; vLLM's compile cache stays out of the home directory
    monkeypatch.setenv("VLLM_CPU_KVCACHE_SPACE", "1")
    monkeypatch.setenv("VLLM_CACHE_ROOT", str(tmp_path_factory.getbasetemp() / "vllm-cache"))


# ---------------------------------------------------------------- refusals (no vLLM needed)


def test_steer_on_vllm_is_refused_in_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        main(["generate", "--method", "steer", "--engine", "vllm", "--expert", str(tmp_path / "e"), "--model", "tiny",
              "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err.strip()
    assert e.value.code == 2 and len(err.splitlines()) == 1
    assert "--engine vllm cannot run --method steer" in err and "--engine transformers" in err
    assert "serves softsrv, plain, hard" in err and not (tmp_path / "run").exists()


def test_vllm_settings_need_the_vllm_engine():
    for name, value in (("tensor_parallel_size", 2), ("max_model_len", 512), ("gpu_memory_utilization", 0.5)):
        flag = "--" + name.replace("_", "-")
        with pytest.raises(SynthsteerError, match=f"^{flag} needs --engine vllm$"):
            GenerateConfig(method="plain", **{name: value})
    with pytest.raises(SynthsteerError, match="--gpu-memory-utilization must be in"):
        GenerateConfig(method="plain", engine="vllm", gpu_memory_utilization=1.5)


def test_vllm_not_installed_is_one_line_and_writes_nothing(lm_dir, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "vllm", None)  # what `import vllm` meets where it is not installed
    with pytest.raises(SystemExit) as e:
        main(["generate", "--method", "plain", "--engine", "vllm", "--model", str(lm_dir), "--n", "2",
              "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err.strip()
    assert e.value.code == 2 and len(err.splitlines()) == 1, err
    assert "--engine vllm: vLLM is not installed" in err and "synthsteer[vllm]" in err and "make setup-vllm" in err
    assert not (tmp_path / "run").exists()


# ---------------------------------------------------------------- through vLLM


def hard_config(tmp_path, **kw) -> GenerateConfig:
    """Two-shot GSM8K questions from SmolLM2, in its chat template: a long prefix shared by no two records."""
    return GenerateConfig(**{"method": "hard", "model": "smollm2", "engine": "vllm", "data": "builtin:gsm8k",
                             "shots": 2, "n": 8, "batch_size": 8, "max_new_tokens": 40, "max_model_len": 1024,
                             "out": str(tmp_path / "hard"), **kw})


def essence(records: list[dict]) -> list[tuple]:
    """What decoding decided for each record (ids and provenance come from the settings)."""
    return [(r["index"], r["text"], r["num_tokens"], r["finish"]) for r in sorted(records, key=lambda r: r["index"])]


@pytest.fixture(scope="module")
def hard_records(smollm2, tmp_path_factory):
    """Records 0-7 of `hard_config`, decoded as one block by one engine (shared with the resume and
    Ray tests, which must reproduce them); the engine also answers the batching checks."""
    gen = BlockGenerator(hard_config(tmp_path_factory.mktemp("hard")), smollm2)
    try:
        whole, _ = gen.records([], list(range(8)))
        split = gen.records([], [0, 1, 2])[0] + gen.records([], [3, 4, 5, 6, 7])[0]
        alone, _ = gen.records([], [5])
        requests = [p.request for p in gen.method.plan([0, 1, 2, 3], [11, 12, 13, 14])]
        greedy = SamplingConfig(temperature=0.0, max_new_tokens=16)
        vllm_greedy = gen.engine.run(requests, gen.method.step(), greedy, gen.stop_ids)
        sampled = gen.engine.run(requests, gen.method.step(), SamplingConfig(max_new_tokens=40), gen.stop_ids)
        hf_greedy = TransformersEngine.build(gen.method, gen.config).run(requests, gen.method.step(), greedy,
                                                                          gen.stop_ids)
        yield {"gen": gen, "whole": whole, "split": split, "alone": alone, "requests": requests,
               "vllm_greedy": vllm_greedy, "hf_greedy": hf_greedy, "sampled": sampled}
    finally:
        gen.close()


@needs_vllm
def test_vllm_records_depend_on_their_key_only_whatever_the_batch(hard_records):
    gen, whole = hard_records["gen"], hard_records["whole"]
    assert gen.settings["engine"]["name"] == "vllm" and gen.settings["engine"]["version"].startswith("0.")
    assert essence(hard_records["split"]) == essence(whole)  # another batching, the same records
    assert essence(hard_records["alone"]) == [essence(whole)[5]]  # a request alone, as in its batch
    assert len({r["text"] for r in whole}) == 8  # and every record its own sample


@needs_vllm
def test_vllm_stops_at_special_tokens_of_the_chat_template(hard_records, smollm2):
    tok, gen = smollm2.tokenizer, hard_records["gen"]
    prompt = tok.decode(hard_records["requests"][0].branches["main"].ids)
    assert prompt.startswith("<|im_start|>") and prompt.rstrip().endswith("<|im_start|>assistant")  # the template
    results = hard_records["sampled"]
    assert any(r.finish == "eos" for r in results)  # the assistant ends its turn
    for r in results:
        assert not set(r.tokens) & gen.stop_ids  # the stop token ends a sample, never part of it
        assert (r.finish == "length") == (len(r.tokens) == 40)
        assert math.isfinite(r.logprob) and r.logprob < 0
    assert not any("<|im_end|>" in r["text"] or "<|im_start|>" in r["text"] for r in hard_records["whole"])


@needs_vllm
def test_vllm_prompts_longer_than_one_prefill_step_decode_as_alone(hard_records):
    # 10 seeded prompts of 450 tokens: more than one engine step prefills (4096 tokens on a CPU), the
    # case vLLM 0.32's CPU build died on when it split a prompt over steps
    gen = hard_records["gen"]
    g = torch.Generator().manual_seed(0)
    requests = [Request({"main": Prefix(ids=torch.randint(10, 40000, (450,), generator=g).tolist())}, 100 + i)
                for i in range(10)]
    sampling = SamplingConfig(max_new_tokens=4)
    together = gen.engine.run(requests, gen.method.step(), sampling, gen.stop_ids)
    alone = gen.engine.run(requests[-1:], gen.method.step(), sampling, gen.stop_ids)
    assert len(together) == 10 and together[-1].tokens == alone[0].tokens


@needs_vllm
def test_vllm_prompt_beyond_max_model_len_is_one_line(hard_records):
    gen = hard_records["gen"]
    long = Request({"main": Prefix(ids=[1] * 1000)}, 3)  # + 40 new tokens > --max-model-len 1024
    with pytest.raises(SynthsteerError, match=r"^--max-model-len 1024: a prompt of 1000 tokens \+ --max-new-tokens 40 "
                                              r"do not fit; raise it \(up to the LM's context, 8192\)$"):
        gen.engine.run([long], gen.method.step(), SamplingConfig(max_new_tokens=40), gen.stop_ids)


@needs_vllm
def test_vllm_greedy_matches_the_lockstep_engine(hard_records):
    # the same requests and the same weights: greedy decoding is the argmax of the same logits, so the
    # engines agree but for float ties (vLLM's kernels sum in another order)
    vllm_greedy, hf_greedy = hard_records["vllm_greedy"], hard_records["hf_greedy"]
    agree = sum(v.tokens[:12] == h.tokens[:12] for v, h in zip(vllm_greedy, hf_greedy))
    assert agree >= 3, [(v.tokens[:12], h.tokens[:12]) for v, h in zip(vllm_greedy, hf_greedy)]
    for v, h in zip(vllm_greedy, hf_greedy):  # log-probs of the same greedy tokens agree closely
        if v.tokens == h.tokens:
            assert v.logprob == pytest.approx(h.logprob, abs=0.05 * len(v.tokens) + 0.05)


@needs_vllm
def test_vllm_run_resumes_to_the_same_records(hard_records, smollm2, tmp_path):
    part = hard_config(tmp_path, n=3, batch_size=2)
    generate(part, progress=False, lm=smollm2)
    assert essence(read_run(part.out)) == essence(hard_records["whole"])[:3]
    manifest = json.loads((tmp_path / "hard" / "manifest.json").read_text())
    assert manifest["settings"]["engine"]["name"] == "vllm"
    generate(hard_config(tmp_path, n=8, batch_size=2), progress=False, lm=smollm2)  # resumed: 5 more
    records = read_run(part.out)
    assert len(records) == 8 and len({r["id"] for r in records}) == 8
    assert essence(records) == essence(hard_records["whole"])


@needs_vllm
def test_vllm_records_on_a_ray_worker_are_the_local_ones(hard_records, tmp_path):
    pytest.importorskip("ray")
    config = hard_config(tmp_path, ray=True, workers=1)
    generate(config, progress=False)
    assert essence(read_run(config.out)) == essence(hard_records["whole"])


QA = "Question: {question}\nAnswer: {answer}"


@pytest.fixture(scope="module")
def qa_prompt(smollm2, tmp_path_factory):
    """A soft prompt on SmolLM2 for GSM8K records (barely trained: the tests need its embeddings, not
    its quality)."""
    from synthsteer.softsrv.config import FitConfig
    from synthsteer.softsrv.fit import fit_soft_prompt

    out = tmp_path_factory.mktemp("qa") / "prompt"
    config = FitConfig(model="smollm2", data="builtin:gsm8k", template=QA, limit=16, steps=2, batch_size=4,
                       prompt_length=4, max_length=48, out=str(out), device="cpu")
    return fit_soft_prompt(config, progress=False, lm=smollm2)


@needs_vllm
def test_vllm_softsrv_records_from_prompt_embeddings(qa_prompt, smollm2, tmp_path):
    """SoftSRV through EmbedsPrompt: P(z) then the record's forced 'Question:' embedded by the LM's own
    table, decoded under the record grammar; the same records from a second engine launch."""
    config = GenerateConfig(method="softsrv", prompt=str(qa_prompt), engine="vllm", n=6, batch_size=3,
                            max_new_tokens=96, max_model_len=512, constrain="on", out=str(tmp_path / "soft"))
    gen = BlockGenerator(config, smollm2)
    try:
        first, _ = gen.records([], list(range(6)))
        assert gen.settings["constrain"]["library"] == "xgrammar"
        # a prefix fed as its own embeddings decodes as its token ids do
        ids = smollm2.tokenizer.encode("Question: Tom has 3 apples", add_special_tokens=False)
        embeds = smollm2.embed(torch.tensor(ids)).detach()
        sampling = SamplingConfig(max_new_tokens=16)
        as_ids, as_embeds = gen.engine.run([Request({"main": Prefix(ids=ids)}, 7), Request({"main": Prefix(embeds=embeds)}, 7)],
                                           gen.method.step(), sampling, gen.stop_ids)
        assert as_ids.tokens == as_embeds.tokens and as_ids.logprob == pytest.approx(as_embeds.logprob, abs=1e-3)
    finally:
        gen.close()
    # under the grammar a sample that ends parses into the record's fields; only one cut off by
    # --max-new-tokens can be a reject
    kept = [r for r in first if "reject" not in r]
    assert kept and all(r["finish"] == "length" and r["reject"] == "truncated at max-new-tokens"
                        for r in first if "reject" in r)
    for r in kept:
        assert r["text"].startswith("Question:") and r["question"].strip() and r["answer"].strip()
        assert r["provenance"]["source_id"]
    generate(config, progress=False, lm=smollm2)  # a second launch of the engine
    assert essence(read_run(config.out)) == essence(kept)
    assert essence(read_records(config.out, "rejects")) == essence([r for r in first if "reject" in r])
