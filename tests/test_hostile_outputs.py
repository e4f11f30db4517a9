"""Hostile outputs and damaged artifacts: synthsteer never destroys what it did not write, never
writes into what it reads, and refuses every damaged run, prompt, expert, report or checkpoint in one
line (tests/hostile.py: exit 2, one `error:` line, no traceback, nothing new, old bytes identical)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from hostile import Case, check_table

GOLDEN = Path(__file__).parent / "data" / "golden"
GEN = ["generate", "--model", "tiny", "--device", "cpu", "--n", "2", "--max-new-tokens", "4"]


def _edit_json(path: Path, edit) -> None:
    meta = json.loads(path.read_text())
    edit(meta)
    path.write_text(json.dumps(meta))


def _restamp_sha(folder: Path, meta_file: str, weights: str, key: str = "weights_sha256") -> None:
    """Record the file's current sha256, so that the damage is found by the reader, not the hash."""
    import hashlib

    sha = hashlib.sha256((folder / weights).read_bytes()).hexdigest()
    _edit_json(folder / meta_file, lambda m: m.update({key: sha}))


@pytest.fixture(scope="module")
def d(tmp_path_factory):
    """Everything the cases point at, made before any case runs."""
    d = tmp_path_factory.mktemp("hostile")
    rows = [{"question": f"What is {i} plus {i}?"} for i in range(12)]
    (d / "q.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    # a Hugging Face model directory and a thesis folder that happen to hold a config.json
    hf = d / "hf_model"
    hf.mkdir()
    for name, text in (("config.json", '{"model_type": "llama"}'), ("model.safetensors", "weights"),
                       ("generation_config.json", "{}")):
        (hf / name).write_text(text)
    thesis = d / "thesis"
    thesis.mkdir()
    (thesis / "config.json").write_text("{}")
    (thesis / "thesis.tex").write_text("\\documentclass{article}")
    (d / "a_file").write_text("x")
    (d / "notes.jsonl").write_text('{"mine": 1}\n')
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"mine": [1, 2]}), d / "notes.parquet")
    for name in ("prompt", "expert"):
        shutil.copytree(GOLDEN / name, d / name)
    shutil.copytree(GOLDEN / "runs" / "plain", d / "run")
    shutil.copytree(GOLDEN / "runs" / "hard", d / "other_run")
    # a marked prompt with a stray file of the user's in it, and one with a user's NAME.new beside it
    shutil.copytree(GOLDEN / "prompt", d / "prompt_stray")
    (d / "prompt_stray" / "notes.txt").write_text("mine")
    shutil.copytree(GOLDEN / "prompt", d / "prompt_beside")
    (d / ".prompt_beside.synthsteer-new").mkdir()
    (d / ".prompt_beside.synthsteer-new" / "keep.txt").write_text("mine")
    # the user's own, finished prompts that happen to be called NAME.old and NAME.new
    for name in ("keep", "keep.old", "keep.new"):
        shutil.copytree(GOLDEN / "prompt", d / name)
    shutil.copytree(GOLDEN / "prompt", d / "keep3")
    (d / ".keep3.synthsteer-old").symlink_to(d / "prompt")
    shutil.copytree(GOLDEN / "prompt", d / "prompt_legacy")
    (d / "prompt_legacy" / ".synthsteer.json").unlink()
    # an export folder of the Hub's layout that synthsteer did not write, and a parent holding a run
    (d / "hub_layout" / "data").mkdir(parents=True)
    (d / "hub_layout" / "README.md").write_text("# my dataset")
    (d / "parent").mkdir()
    shutil.copytree(GOLDEN / "runs" / "plain", d / "parent" / "run")
    (d / ".export_busy.synthsteer-new").mkdir()
    (d / ".export_busy.synthsteer-new" / "keep.txt").write_text("mine")
    # a symlink loop
    (d / "loop").symlink_to(d / "loop")

    # damaged runs: (name, edit of the records text or manifest)
    damaged_lines = {
        "not_utf8": b'{"id": "a", "index": 0, "text": "\xff\xfe"}\n',
        "no_id": b'{"index": 0, "text": "x"}\n',
        "a_list": b'["id", "index", "text"]\n',
        "text_number": b'{"id": "a", "index": 0, "text": 7}\n',
        "index_string": b'{"id": "a", "index": "0", "text": "x"}\n',
        "index_negative": b'{"id": "a", "index": -1, "text": "x"}\n',
        "provenance_string": b'{"id": "a", "index": 0, "text": "x", "provenance": "x"}\n',
        "deep": b'{"id": "a", "index": 0, "text": "x", "p": ' + b"[" * 100_000 + b"]" * 100_000 + b"}\n",
        "huge_int": b'{"id": "a", "index": ' + b"9" * 5000 + b', "text": "x"}\n',
        "not_json": b"{not json\n",
    }
    for name, line in damaged_lines.items():
        shutil.copytree(GOLDEN / "runs" / "plain", d / f"run_{name}")
        shard = d / f"run_{name}" / "records-00000.jsonl"
        shard.write_bytes(line + shard.read_bytes())  # the damage on line 1, whole records after it
    damaged_manifests = {
        "manifest_not_json": "{not json",
        "manifest_list": "[1, 2]",
        "manifest_no_settings": '{"settings_hash": "x"}',
        "manifest_settings_string": '{"settings": "plain", "settings_hash": "x"}',
        "manifest_lm_string": '{"settings": {"method": "plain", "lm": "tiny"}, "settings_hash": "x"}',
        "manifest_no_hash": '{"settings": {"method": "plain"}}',
        "manifest_n_negative": '{"settings": {"method": "plain"}, "settings_hash": "x", "n_requested": -3}',
    }
    for name, text in damaged_manifests.items():
        shutil.copytree(GOLDEN / "runs" / "plain", d / f"run_{name}")
        (d / f"run_{name}" / "manifest.json").write_text(text)

    # damaged prompts
    prompts = {
        "length_string": lambda m: m["softprompt"].update(length="16"),
        "length_negative": lambda m: m["softprompt"].update(length=-4),
        "lm_string": lambda m: m.update(lm="tiny"),
        "data_string": lambda m: m.update(data="builtin:gsm8k"),
        "hidden_huge": lambda m: (m["softprompt"].update(hidden_size=10**9), m["lm"].update(hidden_size=10**9)),
        "hidden_mismatch": lambda m: m["softprompt"].update(hidden_size=128),
        "unknown_key": lambda m: m["softprompt"].update(depth=3),
        "bad_parameterization": lambda m: m["softprompt"].update(parameterization="xl"),
        "sha_removed": lambda m: m.pop("weights_sha256"),
        "sha_empty": lambda m: m.update(weights_sha256=""),
        "meta_list": None,
        "lm_weights_differ": lambda m: m["lm"].update(weights_sha256="0" * 16),
    }
    for name, edit in prompts.items():
        shutil.copytree(GOLDEN / "prompt", d / f"prompt_{name}")
        if edit is None:
            (d / f"prompt_{name}" / "config.json").write_text("[]")
        else:
            _edit_json(d / f"prompt_{name}" / "config.json", edit)
    raw = (GOLDEN / "prompt" / "prompt.safetensors").read_bytes()
    shutil.copytree(GOLDEN / "prompt", d / "prompt_truncated_restamped")
    (d / "prompt_truncated_restamped" / "prompt.safetensors").write_bytes(raw[: len(raw) // 2])
    _restamp_sha(d / "prompt_truncated_restamped", "config.json", "prompt.safetensors")
    import torch
    from safetensors.torch import load_file, save_file

    tensors = load_file(str(GOLDEN / "prompt" / "prompt.safetensors"))
    first = sorted(tensors)[0]
    tensors[first] = tensors[first].clone()
    tensors[first].view(-1)[0] = float("inf")
    shutil.copytree(GOLDEN / "prompt", d / "prompt_inf")
    save_file(tensors, str(d / "prompt_inf" / "prompt.safetensors"))
    _restamp_sha(d / "prompt_inf", "config.json", "prompt.safetensors")

    # damaged experts
    experts = {
        "r_mismatch": ("adapter_config.json", lambda m: m.update(r=3)),
        "r_string": ("adapter_config.json", lambda m: m.update(r="2")),
        "peft_unknown": ("adapter_config.json", lambda m: m.update(peft_type="MAGIC")),
        "lm_string": ("synthsteer_expert.json", lambda m: m.update(lm="tiny")),
        "instruction_number": ("synthsteer_expert.json", lambda m: m.update(instruction=3)),
        "sha_removed": ("synthsteer_expert.json", lambda m: m.pop("weights_sha256")),
        "lm_differs": ("synthsteer_expert.json", lambda m: m["lm"].update(num_hidden_layers=40)),
    }
    for name, (file, edit) in experts.items():
        shutil.copytree(GOLDEN / "expert", d / f"expert_{name}")
        _edit_json(d / f"expert_{name}" / file, edit)
        if file == "adapter_config.json":
            _restamp_sha(d / f"expert_{name}", "synthsteer_expert.json", file, "adapter_config_sha256")
    shutil.copytree(GOLDEN / "expert", d / "expert_alpha_edited")  # changes every output, not the weights
    _edit_json(d / "expert_alpha_edited" / "adapter_config.json", lambda m: m.update(lora_alpha=4000))
    shutil.copytree(GOLDEN / "expert", d / "expert_adapter_not_json")
    (d / "expert_adapter_not_json" / "adapter_config.json").write_text("{nope")
    shutil.copytree(GOLDEN / "expert", d / "expert_bin_only")
    (d / "expert_bin_only" / "adapter_model.safetensors").rename(d / "expert_bin_only" / "adapter_model.bin")
    shutil.copytree(GOLDEN / "expert", d / "expert_meta_not_json")
    (d / "expert_meta_not_json" / "synthsteer_expert.json").write_bytes(b"\xff{")

    # a model directory and an encoder directory holding only pickles
    for name in ("pickle_model", "pickle_encoder"):
        (d / name).mkdir()
        (d / name / "config.json").write_text('{"model_type": "llama"}')
        (d / name / "pytorch_model.bin").write_bytes(b"\x80\x04not really")

    # eval reports for export --report
    for name, text in (("report_not_json", "{nope"), ("report_empty", "{}"),
                       ("report_metrics_list", '{"real": {"source": "x", "n": 3}, "metrics": []}'),
                       ("report_mauve_string", '{"real": {"source": "x", "n": 3}, "metrics": {"a": {"mauve": "high"}}}')):
        (d / name).mkdir()
        (d / name / "report.json").write_text(text)
    # run shards that are not plain files: a symlink to a user's file, a directory, a FIFO, a device
    import os

    (d / "victim.txt").write_text("precious data, no newline")
    for name, make in (("link", lambda p: p.symlink_to(d / "victim.txt")), ("dir", lambda p: p.mkdir()),
                       ("fifo", lambda p: os.mkfifo(p)), ("zero", lambda p: p.symlink_to("/dev/zero"))):
        shutil.copytree(GOLDEN / "runs" / "plain", d / f"run_shard_{name}")
        shard = d / f"run_shard_{name}" / "records-00000.jsonl"
        shard.unlink()
        make(shard)
    shutil.copytree(GOLDEN / "runs" / "plain", d / "run_manifest_link")
    (d / "run_manifest_link" / "manifest.json").unlink()
    (d / "run_manifest_link" / "manifest.json").symlink_to(d / "victim.txt")
    # prompts whose encoder was edited, directories stamp must not vouch for, a torn GGUF
    shutil.copytree(GOLDEN / "prompt", d / "prompt_encoder_minilm")  # an lm-mean prompt (256-wide contexts)
    _edit_json(d / "prompt_encoder_minilm" / "config.json", lambda m: m.update(encoder="minilm"))
    shutil.copytree(GOLDEN / "prompt", d / "prompt_encoder_empty")
    _edit_json(d / "prompt_encoder_empty" / "config.json", lambda m: m.update(encoder=""))
    shutil.copytree(GOLDEN / "prompt", d / "prompt_lm_name_number")
    _edit_json(d / "prompt_lm_name_number" / "config.json", lambda m: (m["lm"].update(name=5), m.pop("weights_sha256")))
    for name, text in (("webapp", '{"name": "app", "icons": []}'), ("manifest_list_only", "[]")):
        (d / name).mkdir()
        (d / name / "manifest.json").write_text(text)
    (d / "torn.gguf").write_bytes(b"GGUF" + b"\x03\x00\x00\x00" + b"\x00" * 8 + b"\x40\x42\x0f\x00" + b"\x00" * 4)
    (d / "cache_file").write_text("not a directory")
    (d / "bool.yaml").write_text("steps: true\n")
    # a forged swap half holding a user's file, a marker of odd shapes, a damaged prompt to stamp
    (d / ".q.synthsteer-old").mkdir()
    (d / ".q.synthsteer-old" / "mine.txt").write_text("mine")
    (d / ".q.synthsteer-old" / "config.json").write_text("{}")
    (d / ".q.synthsteer-old" / ".synthsteer.json").write_text('{"kind": "prompt", "role": "old"}')
    (d / "empty.jsonl").write_text("")
    for name, text in (("marker_dict_kind", '{"kind": {"a": 1}}'), ("marker_deep", "[" * 100_000 + "]" * 100_000)):
        shutil.copytree(GOLDEN / "prompt", d / name)
        (d / name / ".synthsteer.json").write_text(text)
    shutil.copytree(GOLDEN / "prompt", d / "prompt_flipped")
    raw = bytearray((d / "prompt_flipped" / "prompt.safetensors").read_bytes())
    raw[-1] ^= 1
    (d / "prompt_flipped" / "prompt.safetensors").write_bytes(bytes(raw))
    (d / "prompt_link").symlink_to(d / "prompt")
    (d / "twice.yaml").write_text("steps: 2\nlr: 0.1\nsteps: 3\n")
    torch.manual_seed(0)
    return d


def _cases(d: Path) -> list[Case]:
    fit = ["fit", "--data", str(d / "q.jsonl"), "--field", "question", "--model", "tiny", "--device", "cpu",
           "--steps", "2", "--batch-size", "2"]
    expert = ["expert", "--data", str(d / "q.jsonl"), "--field", "question", "--model", "tiny", "--device", "cpu",
              "--steps", "2", "--batch-size", "2"]
    hard = [*GEN, "--method", "hard", "--data", str(d / "q.jsonl"), "--field", "question"]
    soft = [*GEN, "--method", "softsrv", "--prompt"]
    steer = [*GEN, "--method", "steer", "--data", "builtin:gsm8k", "--field", "question", "--expert"]
    run = str(d / "run")
    real = ["--real", "builtin:gsm8k/test", "--field", "question"]
    cases = [
        # --overwrite / --resume never take a directory synthsteer did not write (a config.json proves nothing)
        Case([*fit, "--overwrite", "--out", str(d / "hf_model")], "not a prompt directory synthsteer wrote",
             "fit --overwrite over a Hugging Face model directory"),
        Case([*fit, "--overwrite", "--out", str(d / "thesis")], "not a prompt directory synthsteer wrote",
             "fit --overwrite over a thesis with a config.json"),
        Case([*fit, "--resume", "--out", str(d / "hf_model")], "refusing to resume it", "fit --resume into a model"),
        Case([*fit, "--out", str(d / "hf_model")], "not a prompt directory synthsteer wrote", "fit into a model dir"),
        Case([*expert, "--overwrite", "--out", str(d / "hf_model")], "not an expert directory", "expert --overwrite"),
        Case([*expert, "--resume", "--out", str(d / "thesis")], "not an expert directory", "expert --resume"),
        Case([*expert, "--overwrite", "--out", str(d / "prompt")], "it is a synthsteer prompt directory",
             "expert --overwrite over a prompt"),
        Case([*fit, "--overwrite", "--out", str(d / "expert")], "it is a synthsteer expert directory",
             "fit --overwrite over an expert"),
        Case([*fit, "--overwrite", "--out", run], "it is a synthsteer run directory", "fit --overwrite over a run"),
        Case([*fit, "--overwrite", "--out", str(d / "prompt_legacy")], "written by an older synthsteer",
             "fit --overwrite over an unmarked (older) prompt"),
        Case([*fit, "--overwrite", "--out", str(d / "prompt_stray")], "holds 'notes.txt'",
             "fit --overwrite over a prompt holding a user's file"),
        Case([*fit, "--overwrite", "--out", str(d / "prompt_beside")], ".prompt_beside.synthsteer-new is in the way",
             "fit --overwrite with a user's directory in its swap place"),
        Case([*fit, "--out", str(d / "keep")], "already exists; pass --resume",
             "fit beside the user's own keep.old and keep.new (neither is moved)"),
        Case([*fit, "--overwrite", "--out", str(d / "keep3")], ".keep3.synthsteer-old is in the way",
             "fit --overwrite with a symlink in its swap place"),
        Case([*fit, "--out", str(d)], "contains the input", "fit --out the folder holding --data"),
        Case([*fit, "--out", str(d / "q.jsonl")], "exists and is a file", "fit --out the data file"),
        Case([*fit, "--out", str(d / "loop")], "a symlink loop", "fit --out a symlink loop"),
        Case([*fit, "--out", "/proc/synthsteer-fit"], "cannot create anything in /proc", "fit --out under /proc"),
        # generate never writes into something else
        Case([*hard, "--out", str(d / "hf_model")], "not a run directory synthsteer wrote", "generate into a model"),
        Case([*hard, "--out", str(d / "prompt")], "it is a synthsteer prompt directory", "generate into a prompt"),
        Case([*soft, str(d / "prompt"), "--out", str(d / "prompt" / "samples")], "lies inside the input",
             "generate --out inside its --prompt"),
        Case([*hard, "--out", str(d / "loop")], "a symlink loop", "generate --out a symlink loop"),
        Case([*hard, "--out", str(d / "hub_layout")], "not a run directory synthsteer wrote", "generate into a dataset"),
        # eval and filter write only their own directories
        Case(["eval", *real, "--synthetic", run, "--out", run], "is the input", "eval --out RUN"),
        Case(["eval", *real, "--synthetic", run, "--out", str(d / "other_run")], "it is a synthsteer run directory",
             "eval --out another run"),
        Case(["eval", *real, "--synthetic", run, "--out", str(d / "hf_model")], "not an eval directory",
             "eval --out a model dir"),
        Case(["eval", *real, "--synthetic", run, "--out", str(d / "a_file")], "exists and is a file",
             "eval --out a file"),
        Case(["eval", *real, "--synthetic", run, "--out", "/proc/synthsteer-eval"], "cannot create anything",
             "eval --out under /proc"),
        Case(["eval", *real, "--synthetic", run, "--out", str(d / "loop")], "a symlink loop", "eval --out a loop"),
        Case(["filter", run, "--out", run], "is the input", "filter --out RUN"),
        Case(["filter", run, "--out", str(d)], "contains the input", "filter --out the run's parent"),
        Case(["filter", run, "--out", str(d / "hf_model")], "not a run directory", "filter --out a model dir"),
        Case(["filter", run, "--out", str(d / "a_file")], "exists and is a file", "filter --out a file"),
        Case(["filter", run, "--out", "/proc/synthsteer-filter"], "cannot create anything", "filter --out /proc"),
        Case(["filter", run, "--decontaminate", str(d / "q.jsonl"), "--out", str(d / "q.jsonl" / "x")],
             "is a file, so nothing can be created under it", "filter --out under a file"),
        # export: never the run, its parent, a foreign folder, a user's file, or outside --to
        Case(["export", run, "--to", run, "--overwrite"], "is the input", "export RUN --to RUN"),
        Case(["export", str(d / "parent" / "run"), "--to", str(d / "parent"), "--overwrite"], "contains the input",
             "export RUN --to PARENT"),
        Case(["export", run, "--to", str(d / "hf_model"), "--overwrite"], "not an export directory synthsteer wrote",
             "export --to a foreign folder"),
        Case(["export", run, "--to", str(d / "hub_layout"), "--overwrite"], "not an export directory synthsteer wrote",
             "export --to a Hub-layout folder it did not write"),
        Case(["export", run, "--to", str(d / "run" / "records-00001.jsonl")], "lies inside the input",
             "export --to a shard name inside the run"),
        Case(["export", run, "--to", str(d / "run" / "more.parquet")], "lies inside the input",
             "export --to a parquet inside the run"),
        Case(["export", run, "--to", str(d / "out_split"), "--split", "../../escaped"], "--split '../../escaped'",
             "export --split escaping --to"),
        Case(["export", run, "--to", str(d / "out_split"), "--split", "/abs/path"], "--split '/abs/path'",
             "export --split an absolute path"),
        Case(["export", run, "--to", str(d / "out_split"), "--split", "a/b"], "--split 'a/b'", "export --split a/b"),
        Case(["export", run, "--to", str(d / "notes.jsonl"), "--overwrite"], "not an export synthsteer wrote",
             "export --overwrite over a user's jsonl"),
        Case(["export", run, "--to", str(d / "notes.parquet"), "--overwrite"], "not an export synthsteer wrote",
             "export --overwrite over a user's parquet"),
        Case(["export", run, "--to", str(d / "notes.jsonl")], "already exists; pass --overwrite",
             "export over a file without --overwrite"),
        Case(["export", run, "--to", str(d / "export_busy")], ".export_busy.synthsteer-new is in the way",
             "export with a user's directory in its swap place"),
        Case(["export", run, "--to", "hub:my org/x"], "use hub:ORG/NAME", "hub name with a space"),
        Case(["export", run, "--to", "hub:../x"], "use hub:ORG/NAME", "hub name with .."),
        Case(["export", run, "--to", "hub:a/b/c"], "use hub:ORG/NAME", "hub name with two slashes"),
        Case(["export", run, "--to", "hub:a/b"], "the push failed", "a valid hub name, offline"),
        Case(["export", run, "--to", str(d / "out_report"), "--report", str(d / "report_not_json")],
             "report.json is not valid JSON", "export --report not JSON"),
        Case(["export", run, "--to", str(d / "out_report"), "--report", str(d / "report_empty")],
             "report.json lacks 'real'", "export --report without keys"),
        Case(["export", run, "--to", str(d / "out_report"), "--report", str(d / "report_metrics_list")],
             "'metrics' must be an object", "export --report with metrics a list"),
        Case(["export", run, "--to", str(d / "out_report"), "--report", str(d / "report_mauve_string")],
             "'metrics.a.mauve' must be an object", "export --report with mauve a string"),
        Case(["export", run, "--to", str(d / "out_report"), "--report", str(d / "hf_model")], "no report.json",
             "export --report a folder without one"),
        # damaged prompts
        *[Case([*soft, str(d / f"prompt_{name}"), "--out", str(d / "out_soft")], expected, f"prompt {name}")
          for name, expected in (
              ("length_string", "'softprompt.length' must be an integer"),
              ("length_negative", "'softprompt.length' is -4, outside [1, 65536]"),
              ("lm_string", "'lm' must be an object"),
              ("data_string", "'data' must be an object"),
              ("hidden_huge", "'softprompt.hidden_size' is 1000000000, outside"),
              ("hidden_mismatch", "softprompt.hidden_size (128) is not its LM's"),
              ("unknown_key", "softprompt has an unknown entry 'depth'"),
              ("bad_parameterization", "softprompt.parameterization must be one of"),
              ("sha_removed", "records no sha256 of prompt.safetensors"),
              ("sha_empty", "records no sha256 of prompt.safetensors"),
              ("meta_list", "config.json must be a JSON object, not a list"),
              ("lm_weights_differ", "differs in weights_sha256"),
              ("truncated_restamped", "prompt.safetensors is not a readable safetensors file"),
              ("inf", "holds values that are not finite numbers"))],
        # damaged experts
        *[Case([*steer, str(d / f"expert_{name}"), "--out", str(d / "out_steer")], expected, f"expert {name}")
          for name, expected in (
              ("r_mismatch", "not rank r=3 as adapter_config.json says"),
              ("alpha_edited", "adapter_config.json does not match the sha256 it records"),
              ("r_string", "'r' must be an integer"),
              ("peft_unknown", "peft_type is 'MAGIC'"),
              ("lm_string", "'lm' must be an object"),
              ("instruction_number", "'instruction' must be a string"),
              ("sha_removed", "records no sha256 of adapter_model.safetensors"),
              ("lm_differs", "differs in num_hidden_layers"),
              ("adapter_not_json", "adapter_config.json is not valid JSON"),
              ("bin_only", "adapter_model.bin is a pickle"),
              ("meta_not_json", "synthsteer_expert.json is not valid JSON"))],
        # pickles are never loaded
        Case([*GEN, "--method", "plain", "--model", str(d / "pickle_model"), "--out", str(d / "out_pickle")],
             "its weights are only pickles (pytorch_model.bin)", "a model directory of pickles"),
        Case([*fit, "--encoder", str(d / "pickle_encoder"), "--out", str(d / "out_pickle")],
             "--encoder", "an encoder directory of pickles"),
        # values checked against what they must fit
        Case([*hard, "--n", str(10**12), "--out", str(d / "out_n")], "--n must be at most", "--n 1e12"),
        Case([*hard, "--max-new-tokens", str(10**9), "--out", str(d / "out_m")], "do not fit the context of tiny",
             "--max-new-tokens 1e9"),
        Case([*hard, "--max-new-tokens", "3000", "--out", str(d / "out_m")], "(1024 positions)",
             "--max-new-tokens beyond the context"),
        Case([*hard, "--instruction", "word " * 12_000, "--out", str(d / "out_i")], "the prompt (",
             "a 12k-token instruction"),
        Case([*steer, str(d / "expert"), "--instruction", "word " * 12_000, "--out", str(d / "out_i")],
             "do not fit the context", "a 12k-token STEER instruction"),
        Case([*hard, "--seed", str(2**70), "--out", str(d / "out_s")], "--seed must be in [0, 9223372036854775807]",
             "generate --seed 2**70"),
        Case([*hard, "--seed", "-1", "--out", str(d / "out_s")], "--seed must be in", "generate --seed -1"),
        Case([*fit, "--seed", str(2**70), "--out", str(d / "out_s")], "--seed must be in", "fit --seed 2**70"),
        Case([*expert, "--seed", str(2**64), "--out", str(d / "out_s")], "--seed must be in", "expert --seed 2**64"),
        Case(["eval", *real, "--synthetic", run, "--seed", str(2**40), "--out", str(d / "out_e")], "--seed must be in",
             "eval --seed beyond scikit-learn's"),
        Case(["eval", *real, "--synthetic", run, "--mauve-seeds", str(2**40), "--out", str(d / "out_e")],
             "--mauve-seeds", "eval --mauve-seeds beyond 32 bits"),
        Case([*expert, "--r", "100000", "--out", str(d / "out_r")], "--r 100000: a LoRA rank above the LM's width",
             "expert --r 100000"),
        Case([*fit, "--prompt-length", "1500", "--out", str(d / "out_p")], "do not fit the context of tiny",
             "fit --prompt-length 1500"),
        Case([*fit, "--max-length", "5000", "--out", str(d / "out_p")], "do not fit the context of tiny",
             "fit --max-length 5000"),
        Case([*fit, "--mlp-hidden", str(10**8), "--out", str(d / "out_p")], "--mlp-hidden must be at most 65536",
             "--mlp-hidden beyond any prompt"),
        Case([*fit, "--mlp-layers", str(2**63), "--out", str(d / "out_p")], "--mlp-layers must be at most 64",
             "--mlp-layers 2**63"),
        Case([*fit, "--prompt-length", "900", "--max-length", "16", "--mlp-hidden", "65536", "--mlp-layers", "64",
              "--out", str(d / "out_p")], "GiB, more than this machine's", "a soft prompt beyond memory"),
        Case([*expert, "--instruction", "word " * 3000, "--out", str(d / "out_i")], "do not fit the context",
             "expert with an instruction beyond the context"),
    ]
    # damaged runs, read by filter, export and eval
    for name, expected in (("not_utf8", "records-00000.jsonl:1: not valid UTF-8"),
                           ("no_id", "records-00000.jsonl:1: the record has no 'id'"),
                           ("a_list", "records-00000.jsonl:1: a record must be a JSON object, not a list"),
                           ("text_number", "records-00000.jsonl:1: the record's 'text' is not a string"),
                           ("index_string", "records-00000.jsonl:1: the record's 'index' is not an integer"),
                           ("index_negative", "records-00000.jsonl:1: the record's 'index' is negative"),
                           ("provenance_string", "records-00000.jsonl:1: the record's 'provenance' is not an object"),
                           ("deep", "records-00000.jsonl:1: JSON nested too deeply"),
                           ("huge_int", "records-00000.jsonl:1: malformed record line"),
                           ("not_json", "records-00000.jsonl:1: malformed record line"),
                           ("manifest_not_json", "manifest.json: not readable JSON"),
                           ("manifest_list", "manifest.json: must be a JSON object, not a list"),
                           ("manifest_no_settings", "manifest.json: lacks 'settings' entry"),
                           ("manifest_settings_string", "manifest.json: has a malformed 'settings' entry"),
                           ("manifest_lm_string", "settings.lm is a str, not a object"),
                           ("manifest_no_hash", "manifest.json: lacks its 'settings_hash'"),
                           ("manifest_n_negative", "n_requested is not a count")):
        src = str(d / f"run_{name}")
        cases += [Case(["filter", src, "--out", str(d / "out_filter")], expected, f"filter a run: {name}"),
                  Case(["export", src, "--to", str(d / "out_export")], expected, f"export a run: {name}"),
                  Case(["eval", *real, "--synthetic", src, "--out", str(d / "out_eval")], expected,
                       f"eval a run: {name}")]
    for name, expected in (("link", "not a plain file"), ("dir", "not a plain file"), ("fifo", "not a plain file"),
                           ("zero", "not a plain file")):
        src = str(d / f"run_shard_{name}")
        cases += [Case(["filter", src, "--out", str(d / "out_filter")], expected, f"filter a run whose shard is a {name}"),
                  Case(["export", src, "--to", str(d / "out_export")], expected, f"export a run whose shard is a {name}")]
    cases += [
        Case(["filter", str(d / "run_manifest_link"), "--out", str(d / "out_filter")], "manifest.json: not a plain file",
             "a run whose manifest is a symlink"),
        Case([*soft, str(d / "prompt_encoder_minilm"), "--out", str(d / "out_soft")], "gives 384-wide contexts",
             "a prompt whose encoder was edited to another width"),
        Case([*soft, str(d / "prompt_encoder_empty"), "--out", str(d / "out_soft")], "'encoder' is empty",
             "a prompt whose encoder was emptied"),
        Case(["stamp", str(d / "prompt_lm_name_number"), "--device", "cpu"], "'lm.name' must be a string",
             "stamp a prompt whose LM name is a number"),
        Case(["stamp", str(d / "webapp")], "manifest.json: lacks 'settings' entry", "stamp a web app's manifest.json"),
        Case(["stamp", str(d / "manifest_list_only")], "must be a JSON object, not a list", "stamp a list manifest"),
        Case(["stamp", str(d / "hf_model")], "not a prompt, expert or run directory", "stamp a model directory"),
        Case([*GEN, "--method", "plain", "--model", str(d / "torn.gguf"), "--out", str(d / "out_gguf")],
             "could not read this GGUF file", "a torn GGUF", env={"SYNTHSTEER_CACHE": str(d / "cache_gguf")}),
        Case([*soft, str(d / "prompt"), "--out", str(d / "out_cache")], "SYNTHSTEER_CACHE=",
             "the cache is a file", env={"SYNTHSTEER_CACHE": str(d / "cache_file")}),
        Case([*soft, str(d / "prompt"), "--out", str(d / "out_cache")], "SYNTHSTEER_CACHE=",
             "the cache under a file", env={"SYNTHSTEER_CACHE": str(d / "cache_file" / "sub")}),
        Case(["eval", *real, "--synthetic", run, "--device", "cuda", "--out", str(d / "out_e")],
             "CUDA is not available", "eval --device cuda without a GPU"),
        Case(["eval", *real, "--synthetic", run, "--device", "meta", "--out", str(d / "out_e")], "--device meta",
             "eval --device meta"),
        Case([*hard, "--n", "1e3", "--out", str(d / "out_n")], "Invalid value for '--n'", "--n 1e3 (click's parse)"),
        Case([*hard, "--bogus", "--out", str(d / "out_n")], "No such option: --bogus", "an unknown flag"),
        Case([*hard, "--out", "/"], "the file system's root", "--out /"),
        Case(["fit", "--data", str(d / "empty.jsonl"), "--field", "q", "--model", "tiny", "--out", str(d / "q")],
             "the dataset is empty", "a forged swap half holding a user's file is not restored"),
        Case([*fit, "--overwrite", "--out", str(d / "marker_dict_kind")], "synthsteer's marker is missing",
             "a marker whose kind is an object"),
        Case([*fit, "--overwrite", "--out", str(d / "marker_deep")], "synthsteer's marker is missing",
             "a marker nested too deeply"),
        Case(["stamp", str(d / "prompt_flipped"), "--device", "cpu"], "does not match the sha256 it records",
             "stamp a prompt whose weights no longer match"),
        Case(["export", run, "--to", str(d / "other_run" / "records-00001.jsonl")],
             "lies inside the synthsteer run directory", "export a file into another run"),
        Case(["export", run, "--to", str(d / "prompt" / "exp")], "lies inside the synthsteer prompt directory",
             "export a folder into a prompt"),
        Case([*hard, "--out", str(d / "prompt" / "samples")], "lies inside the synthsteer prompt directory",
             "generate into a prompt's subfolder"),
        Case([*fit, "--overwrite", "--out", str(d / "prompt_link")], "a symlink; to replace what it points to",
             "fit --overwrite through a symlink"),
        Case([*fit, "--config", str(d / "bool.yaml"), "--out", str(d / "out_y")], "steps: expected a value, got true",
             "YAML true for a count"),
        Case([*fit, "--config", str(d / "twice.yaml"), "--out", str(d / "out_y")], "twice.yaml:3: 'steps' is set twice",
             "YAML with a setting twice"),
        Case([*hard, "--out", str(d / ("x" * 300))], "not a usable path", "a path component over 255 bytes"),
        Case([*hard, "--out", str(d) + "/\udcff\udcfe"], "holds bytes that are not UTF-8", "--out of undecodable bytes"),
    ]
    golden_plain = ["generate", "--method", "plain", "--model", "tiny", "--device", "cpu", "--top-k", "20", "--n", "6",
                    "--batch-size", "4", "--max-new-tokens", "12", "--seed", "5"]  # tools/make_golden.py's plain run
    cases.append(Case([*golden_plain, "--out", str(d / "run_no_id")], "records-00000.jsonl:1: the record has no 'id'",
                      "generate resuming a damaged run (no truncation of whole records)"))
    return cases


def test_at_least_a_hundred_cases(d):
    assert len(_cases(d)) >= 100


def test_hostile_outputs_and_damaged_artifacts_are_refused_cleanly(d, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    check_table(_cases(d), [d, tmp_path], capsys, monkeypatch)
