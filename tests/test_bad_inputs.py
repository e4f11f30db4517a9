"""Every bad input is refused cleanly: one line on stderr naming the flag, file or record, exit code 2,
no traceback, and no new file or directory left behind."""

import dataclasses
import json
import shutil
from pathlib import Path

import pytest

from synthsteer.cli import main

GOLDEN_PROMPT = Path(__file__).parent / "data" / "golden" / "prompt"


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """Input files the cases point at (made before any case runs, so they are not "new")."""
    d = tmp_path_factory.mktemp("inputs")
    (d / "a_file").write_text("x")
    (d / "plain_dir").mkdir()
    (d / "plain_dir" / "notes.txt").write_text("x")
    (d / "empty.jsonl").write_text("")
    rows = [{"question": f"What is {i} + {i}?"} for i in range(12)]
    (d / "q.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    for name, value in (("null", None), ("number", 7), ("blank", "  ")):
        (d / f"{name}.jsonl").write_text(json.dumps({"question": "fine"}) + "\n" + json.dumps({"question": value}) + "\n")
    prompts = {}
    for name in ("truncated", "empty", "notjson", "nolm", "shape", "edited"):
        prompts[name] = d / f"prompt_{name}"
        shutil.copytree(GOLDEN_PROMPT, prompts[name])
    weights = "prompt.safetensors"
    raw = (GOLDEN_PROMPT / weights).read_bytes()
    (prompts["truncated"] / weights).write_bytes(raw[: len(raw) // 2])
    (prompts["empty"] / weights).write_bytes(b"")
    (prompts["notjson"] / "config.json").write_text("{not json")
    for name, edit in (("nolm", lambda m: m.pop("lm")), ("shape", lambda m: m["softprompt"].update(length=5)),
                       ("edited", lambda m: m.update(weights_sha256="0" * 64))):
        meta = json.loads((prompts[name] / "config.json").read_text())
        edit(meta)
        (prompts[name] / "config.json").write_text(json.dumps(meta))
    (d / "bad.yaml").write_text("temperature: [1, 2\n")
    return d


def _cases(d: Path) -> list[tuple[list[str], str]]:
    gen = ["generate", "--model", "tiny", "--device", "cpu"]
    hard = [*gen, "--method", "hard", "--data", str(d / "q.jsonl"), "--field", "question"]
    soft = [*gen, "--method", "softsrv", "--prompt"]
    fit = ["fit", "--data", str(d / "q.jsonl"), "--field", "question", "--model", "tiny", "--device", "cpu"]
    cases = [
        ([*gen, "--temperature", "nan"], "--temperature must not be negative, got nan"),
        ([*gen, "--temperature", "inf"], "--temperature must not be negative, got inf"),
        ([*gen, "--temperature", "-1"], "--temperature must not be negative, got -1.0"),
        ([*gen, "--top-p", "2"], "--top-p must be in (0, 1], got 2.0"),
        ([*gen, "--top-p", "0"], "--top-p must be in (0, 1], got 0.0"),
        ([*gen, "--top-k", "-1"], "--top-k must not be negative"),
        ([*gen, "--context-noise", "nan"], "--context-noise must not be negative"),
        ([*gen, "--context-mix", "2"], "--context-mix must be in [0, 1]"),
        ([*gen, "--gamma", "nan"], "--gamma must not be negative"),
        ([*gen, "--eta", "-0.5"], "--eta must not be negative"),
        ([*gen, "--negatives", "-1"], "--negatives must not be negative"),
        ([*gen, "--negative-max-tokens", "0"], "--negative-max-tokens must be at least 1"),
        ([*gen, "--max-new-tokens", "0"], "--max-new-tokens must be at least 1"),
        ([*gen, "--n", "0"], "--n must be at least 1"),
        ([*gen, "--batch-size", "0"], "--batch-size must be at least 1"),
        ([*gen, "--shots", "-2"], "--shots must not be negative"),
        ([*gen, "--method", "magic"], "--method magic: use one of"),
        ([*gen, "--negative-draw", "far"], "--negative-draw far: use one of uniform, nearest"),
        ([*gen, "--chat-template", "maybe"], "--chat-template maybe: use one of auto, none"),
        (["fit", "--field", "question"], "--data is required: a .jsonl/.json/.csv/.parquet file"),
        (["fit", "--data", str(d / "q.jsonl"), "--field", "question"], "--model is required: a hub id or local path"),
        (["expert", "--data", str(d / "q.jsonl")], "--model is required"),
        (["eval", "--synthetic", str(d / "q.jsonl")], "--real is required: the real held-out data"),
        (["generate", "--method", "plain", "--device", "cpu"], "--model is required"),
        ([*fit, "--warmup-ratio", "1.5"], "--warmup-ratio must be in [0, 1], got 1.5"),
        ([*fit, "--val-fraction", "1"], "--val-fraction must be in [0, 1), got 1"),
        ([*fit, "--val-fraction", "0.99"], "--val-fraction 0.99: leaves no training records"),
        ([*fit, "--subset", "sst2"], "--subset sst2: only hub datasets have subsets"),
        (["fit", "--data", str(d / "none-*.jsonl"), "--model", "tiny"], "none-*.jsonl: no file matches"),
        ([*gen, "--workers", "2"], "--workers needs --ray"),
        ([*gen, "--ray-address", "auto"], "--ray-address needs --ray"),
        ([*gen, "--ray", "--workers", "0"], "--workers must be at least 1"),
        ([*gen, "--ray", "--gpus-per-worker", "-1"], "--gpus-per-worker must not be negative"),
        ([*gen, "--ray", "--gpus-per-worker", "nan"], "--gpus-per-worker must not be negative"),
        ([*gen, "--engine", "spark"], "--engine spark: use one of transformers"),
        ([*gen, "--pool-lag", "-1"], "--pool-lag must not be negative"),
        ([*gen, "--dtype", "float8"], "--dtype float8: use one of"),
        ([*hard, "--template", "{question}"], "--field and --template exclude each other"),
        ([*gen, "--method", "hard", "--data", "x.jsonl", "--template", "{question"], "not a valid template"),
        ([*gen, "--method", "hard", "--data", "x.jsonl", "--template", "{0}"], "not positional ones"),
        ([*gen, "--method", "hard", "--data", "x.jsonl", "--template", "{}"], "not positional ones"),
        ([*gen, "--method", "hard", "--data", "x.jsonl", "--template", "{question.__class__}"], "not a plain field name"),
        ([*gen, "--method", "hard", "--data", "x.jsonl", "--template", "{question[0]}"], "not a plain field name"),
        ([*gen, "--method", "hard", "--data", "x.jsonl", "--template", "{question:{question}}"], "nested fields"),
        ([*gen, "--method", "hard", "--data", "x.jsonl", "--template", "no fields"], "names no field"),
        ([*gen, "--method", "hard", "--data", ""], "--data: empty"),
        ([*gen, "--method", "hard", "--data", str(d / "plain_dir"), "--field", "q"], "not a dataset written by"),
        ([*gen, "--method", "hard", "--data", str(d / "missing.jsonl"), "--field", "q"], "missing.jsonl: no such file"),
        ([*hard, "--out", str(d / "a_file")], "exists and is a file, not a directory"),
        ([*hard, "--out", str(d / "a_file" / "run")], "is a file, so nothing can be created under it"),
        ([*hard, "--out", "/proc/synthsteer-run"], "cannot create anything in /proc"),
        ([*hard, "--shots", "100"], "--shots 100: only 12 training examples"),
        ([*gen, "--method", "hard", "--data", str(d / "null.jsonl"), "--field", "question"],
         "record 2: field 'question' is null, not text"),
        ([*gen, "--method", "hard", "--data", str(d / "number.jsonl"), "--field", "question"],
         "record 2: field 'question' is a int, not text"),
        ([*gen, "--method", "hard", "--data", str(d / "blank.jsonl"), "--field", "question"], "record 2: the text is empty"),
        ([*gen, "--method", "hard", "--data", str(d / "empty.jsonl"), "--field", "question"], "the dataset is empty"),
        ([*gen, "--method", "steer"], "--method steer needs --expert DIR"),
        ([*gen, "--method", "steer", "--expert", "e", "--prompt", "p"], "takes --expert (instruction prompt) or --prompt"),
        ([*gen, "--method", "softsrv"], "--method softsrv needs --prompt DIR"),
        ([*soft, str(d / "plain_dir")], "not a soft-prompt directory"),
        ([*soft, str(d / "prompt_truncated")], "prompt.safetensors does not match the sha256 it records"),
        ([*soft, str(d / "prompt_empty")], "prompt.safetensors does not match the sha256 it records"),
        ([*soft, str(d / "prompt_notjson")], "config.json is not valid JSON"),
        ([*soft, str(d / "prompt_nolm")], "config.json lacks 'lm'"),
        ([*soft, str(d / "prompt_shape")], "prompt.safetensors does not fit the shape config.json records"),
        ([*soft, str(d / "prompt_edited")], "does not match the sha256 it records"),
        ([*gen, "--config", str(d / "missing.yaml")], "--config " + str(d / "missing.yaml") + ": no such file"),
        ([*gen, "--config", str(d / "bad.yaml")], "bad.yaml:2: malformed YAML"),
        ([*fit, "--lr", "-1"], "--lr must be a positive number, got -1.0"),
        ([*fit, "--lr", "nan"], "--lr must be a positive number, got nan"),
        ([*fit, "--max-grad-norm", "0"], "--max-grad-norm must be a positive number"),
        ([*fit, "--warmup", "-1"], "--warmup must not be negative"),
        ([*fit, "--limit", "0"], "--limit must be at least 1"),
        ([*fit, "--weight-decay", "-1"], "--weight-decay must not be negative"),
        ([*fit, "--precision", "fp8"], "--precision fp8: use one of auto, fp32, bf16"),
        ([*fit, "--parameterization", "xx"], "--parameterization xx: use one of nsp, mp, mc"),
        ([*fit, "--max-length", "1"], "--max-length must be at least 2"),
        ([*fit, "--prompt-length", "0"], "--prompt-length must be at least 1"),
        ([*fit, "--template", "{question}"], "--field and --template exclude each other"),
        ([*fit, "--out", str(d / "a_file")], "exists and is a file, not a directory"),
        (["fit", "--data", str(d / "empty.jsonl"), "--field", "q", "--model", "tiny", "--out", str(d / "out_fit")],
         "the dataset is empty"),
        (["expert", "--dropout", "1", "--device", "cpu"], "--dropout must be in [0, 1), got 1.0"),
        (["expert", "--r", "0", "--device", "cpu"], "--r must be at least 1"),
        (["expert", "--data", str(d / "q.jsonl"), "--field", "question", "--model", "tiny", "--target-modules",
          "nonexistent", "--device", "cpu", "--out", str(d / "out_expert")], "--target-modules nonexistent:"),
        (["eval", "--synthetic", str(d / "q.jsonl"), "--max-samples", "-1"], "--max-samples must not be negative"),
        (["eval", "--synthetic", str(d / "q.jsonl"), "--knn-k", "0"], "--knn-k must be at least 1"),
        (["filter", str(d / "plain_dir"), "--near-threshold", "2"], "--near-threshold must be in (0, 1], got 2.0"),
        (["filter", str(d / "plain_dir"), "--ngram", "0"], "--ngram must be at least 1"),
    ]
    # NaN and inf for every bounded float flag of the generate, fit and expert configs
    from synthsteer import GenerateConfig
    from synthsteer.softsrv.config import FitConfig
    from synthsteer.steer.config import ExpertConfig

    for command, config in (("generate", GenerateConfig), ("fit", FitConfig), ("expert", ExpertConfig)):
        for f in dataclasses.fields(config):
            if f.type in ("float", float) and any(f.metadata.get(k) is not None for k in ("ge", "gt", "le", "lt")):
                for bad in ("nan", "inf"):
                    cases.append(([command, f"--{f.name.replace('_', '-')}", bad, "--device", "cpu"],
                                  f"--{f.name.replace('_', '-')} must"))
    return cases


def _tree(d: Path) -> set[str]:
    return {str(p.relative_to(d)) for p in d.rglob("*")}


def test_there_are_at_least_sixty_cases(inputs):
    assert len(_cases(inputs)) >= 60


def test_every_bad_input_is_refused_cleanly(inputs, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # default --out directories would land here
    failures = []
    for args, expected in _cases(inputs):
        before = _tree(inputs) | _tree(tmp_path)
        with pytest.raises(SystemExit) as e:
            main(args)
        err = capsys.readouterr().err.strip().splitlines()
        errors = [line for line in err if line.startswith("error:")]
        new = (_tree(inputs) | _tree(tmp_path)) - before
        if e.value.code != 2 or len(errors) != 1 or expected not in errors[0] or "Traceback" in "\n".join(err) or new:
            failures.append((args, expected, e.value.code, err[-3:], sorted(new)))
    assert not failures, "\n".join(map(str, failures))
