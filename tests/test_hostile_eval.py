"""Hostile --config files, eval labels and sample counts, and Ray addresses and resources: each is refused
in one line through the CLI (exit 2, no traceback, nothing written), and their legitimate neighbours work."""

import json
import shutil
import time
from pathlib import Path

import pytest
from hostile import Case, check_table, refusal_problems

from synthsteer.cli import main

GOLDEN = Path(__file__).parent / "data" / "golden"
TEXTS = [f"The weather on day {i} was {'sunny and warm' if i % 2 else 'cold with rain'} near the "
         f"{['lake', 'hill', 'city'][i % 3]}." for i in range(12)]


def _jsonl(path: Path, labels: list) -> str:
    """Real (or synthetic) data: one row per label, `text` and `label` fields."""
    path.write_text("".join(json.dumps({"text": t, "label": lab}) + "\n" for t, lab in zip(TEXTS, labels)))
    return str(path)


def _run(path: Path, labels: list) -> str:
    """A synthetic run: the golden plain run with its first len(labels) records, each given a label
    (a `...` label: the record has none)."""
    shutil.copytree(GOLDEN / "runs" / "plain", path)
    shard = path / "records-00000.jsonl"
    records = [json.loads(line) for line in shard.read_text().splitlines()][: len(labels)]
    for r, lab in zip(records, labels):
        if lab is not ...:
            r["label"] = lab
    shard.write_text("".join(json.dumps(r) + "\n" for r in records))
    return str(path)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """Every input the cases point at, made before any case runs (so none of it counts as new)."""
    d = tmp_path_factory.mktemp("inputs")
    real = {name: _jsonl(d / f"real_{name}.jsonl", labels) for name, labels in {
        "str": ["pos", "neg"] * 6, "int": [0, 1] * 6, "bool": [True, False] * 6, "intfloat": [0.0, 1.0] * 6,
        "float": [0.5, 1.5] * 6, "nan": [float("nan"), 1] * 6, "list": [[1], [2]] * 6, "dict": [{"a": 1}] * 12,
        "mixed": ["pos", 1] * 6, "boolint": [True, 1] * 6, "null": ["pos", None] * 6, "three": ["pos", "neg", "pos"],
        "one_class": ["pos"] * 12}.items()}
    (d / "real_nolabel.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in TEXTS))
    real["nolabel"] = str(d / "real_nolabel.jsonl")
    runs = {name: _run(d / f"run_{name}", labels) for name, labels in {
        "str": ["pos", "neg"] * 3, "int": [0, 1] * 3, "bool": [True, False] * 3, "float": [0.25] * 6,
        "list": [[1, 2]] * 6, "dict": [{"a": 1}] * 6, "mixed": ["pos", 1] * 3, "some_missing": ["pos", ...] * 3,
        "unseen": ["pos", "maybe"] * 3, "one_class": ["pos"] * 6, "two": ["pos", "neg"], "one": ["pos"]}.items()}
    syn = {"float": _jsonl(d / "syn_float.jsonl", [0.5] * 12), "str": _jsonl(d / "syn_str.jsonl", ["neg", "pos"] * 6)}
    yaml = d / "yaml"
    yaml.mkdir()
    (yaml / "a_directory.yaml").mkdir()
    (yaml / "latin1.yaml").write_bytes("real: caf\xe9\n".encode("latin-1"))
    for name, text in {
        "nested": f"synthetic: {runs['str']}\nreal:\n  path: {real['str']}\n",
        "list_for_scalar": f"synthetic: {runs['str']}\nreal: [{real['str']}, {real['int']}]\n",
        "list_for_int": f"real: {real['str']}\nsynthetic: {runs['str']}\nknn_k: [1, 2]\n",
        "mapping_for_list": f"real: {real['str']}\nsynthetic: {{a: {runs['str']}}}\n",
        "list_in_list": f"real: {real['str']}\nsynthetic: [{runs['str']}, [{runs['int']}]]\n",
        "int_key": f"real: {real['str']}\n1: x\n",
        "null_key": f"real: {real['str']}\nnull: x\n",
        "bool_key": f"real: {real['str']}\non: x\n",  # YAML 1.1: `on` is True
        "bad_int": f"real: {real['str']}\nsynthetic: {runs['str']}\nknn_k: many\n",
        "fractional_int": f"real: {real['str']}\nsynthetic: {runs['str']}\nmax_samples: 2.5\n",
        "bad_bool": f"real: {real['str']}\nsynthetic: {runs['str']}\nquiet: {{a: 1}}\n",
        "top_level_list": "- real\n- x\n",
        "malformed": "real: [x\n",
        "unknown": "reel: x\n",
        # legitimate: one set for the repeatable --synthetic, numbers as strings, YAML booleans
        "good": f"real: {real['str']}\nsynthetic: {runs['str']}\nlabel_field: label\nknn_k: '2'\nquiet: yes\n"
                "mauve_seeds: 0\ndevice: cpu\n",
    }.items():
        (yaml / f"{name}.yaml").write_text(text)
    return {"dir": d, "real": real, "runs": runs, "syn": syn, "yaml": yaml}


@pytest.fixture
def cwd(tmp_path, monkeypatch):
    """A clean working directory, watched too: a refusal must not leave runs/eval or a log there."""
    d = tmp_path / "cwd"
    d.mkdir()
    monkeypatch.chdir(d)
    return d


def _eval_cases(inputs, out: Path) -> list[Case]:
    real, runs, syn, y = inputs["real"], inputs["runs"], inputs["syn"], inputs["yaml"]

    def ev(real_name, *synthetic, label=True, extra=()):
        return ["eval", "--real", real[real_name], *(a for s in synthetic for a in ("--synthetic", s)),
                "--out", str(out), "--device", "cpu", *(["--label-field", "label"] if label else []), *extra]

    def cfg(name, *extra):
        return ["eval", "--config", str(y / f"{name}.yaml"), "--out", str(out), *extra]

    return [
        # --config files
        Case(cfg("latin1"), f"--config {y / 'latin1.yaml'}: not UTF-8 text (byte 0xe9", "a Latin-1 file"),
        Case(cfg("a_directory"), "is a directory, not a YAML file", "--config DIR"),
        Case(cfg("missing"), "missing.yaml: no such file", "a missing file"),
        Case(cfg("nested"), "nested.yaml: real: expected one value, got a mapping", "a nested mapping"),
        Case(cfg("list_for_scalar"), "real: expected one value, got a list", "a list for --real"),
        Case(cfg("list_for_int"), "knn_k: expected one value, got a list", "a list for --knn-k"),
        Case(cfg("mapping_for_list"), "synthetic: expected values, got a mapping", "a mapping for --synthetic"),
        Case(cfg("list_in_list"), "synthetic: expected values, got a list inside the list", "a list in a list"),
        Case(cfg("int_key"), "int_key.yaml: setting names are strings, not 1", "an integer key"),
        Case(cfg("null_key"), "setting names are strings, not None", "a null key"),
        Case(cfg("bool_key"), "setting names are strings, not True", "YAML 1.1's `on:` key"),
        Case(cfg("bad_int"), "bad_int.yaml: knn_k: Input should be a valid integer", "knn_k: many"),
        Case(cfg("fractional_int"), "max_samples: Input should be a valid integer", "max_samples: 2.5"),
        Case(cfg("bad_bool"), "quiet: expected one value, got a mapping", "a mapping for a boolean flag"),
        Case(cfg("top_level_list"), "expected a mapping of flag names to values", "a list at the top"),
        Case(cfg("malformed"), "malformed.yaml:2: malformed YAML", "unclosed bracket (found at the end)"),
        Case(cfg("unknown"), "unknown setting 'reel'", "a misspelt key"),
        # labels that are not classes, in the real data and in synthetic runs and files
        Case(ev("float", runs["str"]), f"--real {real['float']}: --label-field 'label': label 1 is the float 0.5",
             "real float labels"),
        Case(ev("nan", runs["str"]), "label 1 is the float nan", "real NaN labels"),
        Case(ev("list", runs["str"]), "--label-field 'label': label 1 is a list ([1])", "real list labels"),
        Case(ev("dict", runs["str"]), "label 1 is a dict", "real dict labels"),
        Case(ev("null", runs["str"]), "label 2 is null", "a real null label"),
        Case(ev("mixed", runs["str"]), "labels mix int (1) and str ('pos')", "real str and int labels"),
        Case(ev("boolint", runs["str"]), "labels mix bool (True) and int (1)", "real bool and int labels"),
        Case(ev("nolabel", runs["str"]), "no field 'label'", "real data without the field"),
        Case(ev("str", runs["float"]), f"--synthetic {runs['float']}: --label-field 'label': label 1 is the float 0.25",
             "run float labels"),
        Case(ev("str", runs["list"]), f"--synthetic {runs['list']}: --label-field 'label': label 1 is a list",
             "run list labels"),
        Case(ev("str", runs["dict"]), "label 1 is a dict", "run dict labels"),
        Case(ev("str", runs["mixed"]), f"--synthetic {runs['mixed']}: --label-field 'label': labels mix int",
             "run mixed labels"),
        Case(ev("str", runs["some_missing"]), "some records carry no 'label'", "run with gaps"),
        Case(ev("str", syn["float"]), f"--synthetic {syn['float']}: --label-field 'label': label 1 is the float 0.5",
             "synthetic file float labels"),
        Case(ev("str", runs["str"], runs["int"]),
             f"--synthetic {runs['int']}: --label-field 'label': its labels are int (0) but the real data's are str",
             "int run labels against str real ones"),
        Case(ev("bool", runs["int"]), "its labels are int (0) but the real data's are bool (True)",
             "int run labels against bool real ones"),
        # too few samples, by --max-samples or by themselves
        *(Case(ev("str", runs["str"], label=False, extra=("--max-samples", str(n))),
               f"--max-samples {n}: at least 4 samples per set are needed", f"--max-samples {n}") for n in (1, 2, 3)),
        Case(ev("three", runs["str"], label=False), f"--real {real['three']}: 3 sample(s); at least 4 are needed",
             "3 real rows"),
        Case(ev("str", runs["one"], label=False), f"--synthetic {runs['one']}: 1 sample(s); at least 2 are needed",
             "a 1-record run"),
    ]


def test_eval_and_config_refusals(inputs, cwd, capsys, monkeypatch):
    out = cwd / "report"  # not there yet: a refusal must not make it
    cases = _eval_cases(inputs, out)
    assert len(cases) >= 25
    check_table(cases, [inputs["dir"], cwd], capsys, monkeypatch)


def _report(args, capsys):
    with pytest.raises(SystemExit) as e:
        main(args)
    err = capsys.readouterr().err
    assert e.value.code == 0, err
    return err


def test_legit_labels_are_scored_and_odd_ones_warned(inputs, tmp_path, capsys):
    real, runs = inputs["real"], inputs["runs"]
    base = ["--device", "cpu", "--mauve-seeds", "0", "--label-field", "label"]
    # str labels, a set with labels the real data never has, a single-class set: scored, with a warning each
    err = _report(["eval", "--real", real["str"], "--synthetic", runs["str"], "--synthetic", runs["unseen"],
                   "--synthetic", runs["one_class"], "--out", str(tmp_path / "s"), *base], capsys)
    m = json.loads((tmp_path / "s" / "report.json").read_text())["metrics"]
    assert m["run_str"]["tstr"]["accuracy"] is not None and m["run_str"]["label_agreement"] is not None
    assert m["run_one_class"]["tstr"]["accuracy"] is None  # one class: nothing to train
    assert "labels 'maybe' never occur in the real data's 'label'" in err
    assert f"--synthetic {runs['one_class']}: --label-field 'label' has a single class ('pos')" in err
    # ints, integral floats (as pandas writes ints with gaps) against ints, and booleans
    for name, real_name, run in (("i", "int", "int"), ("f", "intfloat", "int"), ("b", "bool", "bool")):
        _report(["eval", "--real", real[real_name], "--synthetic", runs[run], "--out", str(tmp_path / name), *base],
                capsys)
        t = json.loads((tmp_path / name / "report.json").read_text())["metrics"][f"run_{run}"]["tstr"]
        assert t["accuracy"] is not None and t["n_train"] == 6
    # a single-class real label column: warned, scored without label agreement
    err = _report(["eval", "--real", real["one_class"], "--synthetic", runs["str"], "--out", str(tmp_path / "o"),
                   *base], capsys)
    assert "has a single class ('pos'); no label agreement" in err
    assert json.loads((tmp_path / "o" / "report.json").read_text())["metrics"]["run_str"]["label_agreement"] is None


def test_the_smallest_sets_are_scored(inputs, tmp_path, capsys):
    """--max-samples 4 and a 2-record run: the minimum is computed, and a lowered k-NN k is said."""
    real, runs = inputs["real"], inputs["runs"]
    _report(["eval", "--real", real["str"], "--synthetic", runs["two"], "--out", str(tmp_path / "r"), "--device", "cpu",
             "--mauve-seeds", "0", "--max-samples", "4", "--label-field", "label"], capsys)
    report = json.loads((tmp_path / "r" / "report.json").read_text())
    assert report["real"]["n"] == 4 and report["sets"]["run_two"]["n"] == 2
    m = report["metrics"]["run_two"]
    assert m["mauve"]["mean"] >= 0 and m["auroc"] is not None and "k lowered to 1" in m["knn_note"]


def test_a_good_config_file_works(inputs, tmp_path, capsys):
    """A scalar for the repeatable --synthetic, a number written as a string, YAML's `yes`."""
    _report(["eval", "--config", str(inputs["yaml"] / "good.yaml"), "--out", str(tmp_path / "g")], capsys)
    report = json.loads((tmp_path / "g" / "report.json").read_text())
    assert report["config"]["knn_k"] == 2 and report["config"]["quiet"] is True and list(report["sets"]) == ["run_str"]


def test_metrics_on_degenerate_sets():
    import numpy as np

    from synthsteer.errors import SynthsteerError
    from synthsteer.metrics import authenticity_auroc, knn_precision_recall, label_values

    same = np.ones((3, 4))
    assert authenticity_auroc(same, same) == 0.5  # one point repeated: nothing to tell apart
    assert knn_precision_recall(np.eye(3), np.eye(3), k=3)["knn_note"].startswith("k lowered to 2")
    assert "knn_note" not in knn_precision_recall(np.eye(5), np.eye(5), k=3)
    ints = label_values([1.0, 2, np.int64(3)], "x")
    assert ints == [1, 2, 3] and {type(v) for v in ints} == {int}
    assert label_values([np.bool_(True), False], "x") == [True, False]
    with pytest.raises(SynthsteerError, match="x: label 1 is the float inf"):
        label_values([float("inf")], "x")


# ---------------------------------------------------------------- Ray

ray = pytest.importorskip("ray")


def _generate(out: Path, *flags: str) -> list[str]:
    return ["generate", "--prompt", str(GOLDEN / "prompt"), "--n", "2", "--max-new-tokens", "4", "--device", "cpu",
            "--out", str(out), "--ray", *flags]


def test_ray_addresses_refused_in_seconds(cwd, capsys, monkeypatch):
    """No Ray running in this process: every address is probed before ray.init could hang on it."""
    assert not ray.is_initialized()
    out = cwd / "run"
    t0 = time.time()
    problem = refusal_problems(Case(_generate(out, "--ray-address", "127.0.0.1:1"),
                                    "--ray-address 127.0.0.1:1: nothing answers at 127.0.0.1:1"), [cwd], capsys,
                               monkeypatch)
    assert problem is None and time.time() - t0 < 15
    check_table([
        Case(_generate(out, "--ray-address", "127.0.0.1"), "--ray-address 127.0.0.1: expected HOST:PORT", "no port"),
        Case(_generate(out, "--ray-address", "127.0.0.1:99999"), "expected HOST:PORT", "a port out of range"),
        Case(_generate(out, "--ray-address", "http://127.0.0.1:8265"), "expected HOST:PORT", "the dashboard's URL"),
        Case(_generate(out, "--ray-address", "ray://127.0.0.1"), "nothing answers at 127.0.0.1:10001",
             "Ray Client's default port"),
        Case(_generate(out), "RAY_ADDRESS=127.0.0.1:1: nothing answers at 127.0.0.1:1", "$RAY_ADDRESS",
             env={"RAY_ADDRESS": "127.0.0.1:1"}),
        # a fresh local Ray (no GPUs) is started, asked, and shut down again
        Case(_generate(out, "--gpus-per-worker", "1"), "--gpus-per-worker 1: the Ray cluster has 0 GPUs",
             "a GPU on a machine without any"),
    ], [cwd], capsys, monkeypatch)
    assert not ray.is_initialized()


def test_ray_resources_refused_before_an_actor_waits_forever(cwd, capsys, monkeypatch):
    """A local Ray declaring 2 CPUs and 1 GPU: workers it cannot hold are refused, not left pending."""
    ray.init(num_cpus=2, num_gpus=1, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    try:
        out = cwd / "run"
        check_table([
            Case(_generate(out, "--gpus-per-worker", "2"), "--gpus-per-worker 2: the Ray cluster has 1 GPUs"),
            Case(_generate(out, "--workers", "2", "--gpus-per-worker", "1"),
                 "--workers 2: 2 workers of 1 GPU(s) need 2 GPUs; the Ray cluster has 1"),
            Case(_generate(out, "--workers", "4", "--gpus-per-worker", "0.5"),
                 "--workers 4: 4 workers of 0.5 GPU(s) need 2 GPUs"),
            Case(_generate(out, "--workers", "3", "--gpus-per-worker", "0"),
                 "--workers 3: each worker needs a CPU; the Ray cluster has 2"),
        ], [cwd], capsys, monkeypatch)
    finally:
        ray.shutdown()
