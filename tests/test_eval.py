import json
import shutil
import subprocess

import pytest

from synthsteer.cli import main
from synthsteer.data import load_records
from synthsteer.evaluation import EvalConfig, evaluate


def _write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return str(path)


@pytest.fixture(scope="module")
def sets(tmp_path_factory):
    d = tmp_path_factory.mktemp("evalsets")
    gsm_test = [{"text": r.text} for r in load_records("builtin:gsm8k/test", limit=240)]
    gsm_train = [{"text": r.text} for r in load_records("builtin:gsm8k/train", limit=300)]
    toxic = [{"text": r.text} for r in load_records("builtin:jigsaw/train", limit=240)]
    copied = gsm_train[:3] + gsm_test[3:120]
    return {"real": _write(d / "real.jsonl", gsm_test), "same": _write(d / "same.jsonl", gsm_test),
            "other": _write(d / "other.jsonl", toxic), "train": _write(d / "train.jsonl", gsm_train),
            "copied": _write(d / "copied.jsonl", copied)}


@pytest.fixture(scope="module")
def report(sets, tmp_path_factory):
    out = tmp_path_factory.mktemp("report")
    cfg = EvalConfig(real=sets["real"], synthetic=(f"same={sets['same']}", f"other={sets['other']}",
                                                   f"copied={sets['copied']}"),
                     train=sets["train"], field="text", out=str(out), device="cpu")
    return evaluate(cfg, progress=False), out


def test_identical_and_disjoint_sets(report):
    r, _ = report
    same, other = r.metrics["same"].values, r.metrics["other"].values
    assert same["mauve"]["mean"] > 0.95 and len(same["mauve"]["scores"]) == 3
    assert abs(same["auroc"] - 0.5) < 0.1
    assert other["mauve"]["mean"] < 0.1 and other["auroc"] > 0.95
    assert same["precision"] > 0.9 and other["precision"] < 0.2
    assert r.metrics["real vs real"].values["mauve"]["mean"] > other["mauve"]["mean"]
    assert any("MAUVE is biased" in w for w in r.warnings)
    assert r.featurizer == "st:minilm" and r.packages["mauve-text"]
    assert r.real.n == 240 and r.sets["same"].n == 240 and r.sets["same"].settings == {}


def test_each_set_gets_a_verdict_and_samples_beside_real_ones(report, sets):
    r, out = report
    same, other = r.metrics["same"], r.metrics["other"]
    assert same.verdict.startswith("close to the real data: MAUVE") and "barely" in same.verdict
    assert other.verdict.startswith("far from the real data: MAUVE 0.0") and "perfectly (AUROC 1.00)" in other.verdict
    assert r.metrics["real vs real"].verdict is None and r.metrics["real vs real"].examples is None
    real = {json.loads(line)["text"] for line in open(sets["real"])}
    toxic = {json.loads(line)["text"] for line in open(sets["other"])}
    ex = other.examples
    assert len(ex.synthetic) == 10 and set(ex.synthetic) <= toxic and set(ex.real) <= real
    # a sample of the identical set has itself as its closest real text
    assert all(n.synthetic == n.real and n.cosine > 0.99 for n in same.examples.neighbours)
    page = (out / "report.html").read_text()
    assert page.count('class="verdict"') == 3 and "closest real (cosine" in page


def test_copied_training_examples_are_flagged(report, sets):
    r, _ = report
    mem = r.metrics["copied"].values["memorization"]
    assert mem["exact_rate"] == pytest.approx(3 / 120)
    train = [json.loads(line)["text"] for line in open(sets["train"])]
    assert {w["synthetic"] for w in mem["worst"][:3]} == set(train[:3])
    assert r.metrics["same"].values["memorization"]["exact_rate"] == 0
    assert "memorization" not in r.metrics["real vs real"].values  # the ceiling is real by construction


def test_report_files(report):
    from synthsteer.export import read_report
    from synthsteer.report import EvalReport

    r, out = report
    saved = json.loads((out / "report.json").read_text())
    assert saved["metrics"]["same"]["n"] == 240 and saved["plots"] == ["lengths", "projection"]
    assert set(saved) == {"synthsteer_version", "packages", "config", "featurizer", "real", "sets",
                          "varying_settings", "metrics", "warnings", "seconds", "plots"}
    assert "distinct_3" in saved["metrics"]["same"] and "unique_3gram_ratio" not in saved["metrics"]["same"]
    assert saved["real"] == {"source": r.real.source, "n": 240}  # the real data has no manifest settings
    # report.json reads back as the report evaluate returned
    back = read_report(str(out))
    assert back.to_json() == saved and back.metrics["same"].examples == r.metrics["same"].examples
    old = {**saved, "metrics": {k: {**v, "unique_3gram_ratio": v["distinct_3"]} for k, v in saved["metrics"].items()}}
    assert EvalReport.from_json(old).to_json() == saved  # a report of a version that wrote both keys
    page = (out / "report.html").read_text()
    assert page.count("data:image/png;base64,") == 2 and "real vs real" in page


def _chromium():
    return shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(not _chromium(), reason="needs Debian's chromium (installed by .ci/run)")
def test_report_opens_in_headless_chromium_with_plots(report):
    _, out = report
    dom = subprocess.run([_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                          "--no-first-run", "--disable-background-networking", "--disable-component-update",
                          "--disable-sync", f"--user-data-dir={out / 'chromium-profile'}",
                          "--virtual-time-budget=5000", "--dump-dom", (out / "report.html").as_uri()],
                         capture_output=True, text=True, timeout=120).stdout
    assert 'data-plots-loaded="2"' in dom and 'id="metrics"' in dom


def _fake_run(d, settings, texts):
    d.mkdir()
    (d / "manifest.json").write_text(json.dumps({"settings": settings, "settings_hash": str(settings)}))
    (d / "records-00000.jsonl").write_text("".join(json.dumps({"id": str(i), "index": i, "text": x}) + "\n"
                                                   for i, x in enumerate(texts)))
    return str(d)


def test_sweep_plot_and_cli(tmp_path, sets, capsys):
    runs = []
    for t in (0.5, 1.0):
        texts = [json.loads(line)["text"] for line in open(sets["same" if t == 0.5 else "other"])][:60]
        runs.append(_fake_run(tmp_path / f"t{t}", {"method": "plain", "sampling": {"temperature": t}}, texts))
    with pytest.raises(SystemExit) as e:
        main(["eval", "--real", sets["real"], "--field", "text", "--synthetic", runs[0], "--synthetic", runs[1],
              "--out", str(tmp_path / "rep"), "--device", "cpu"])
    assert e.value.code == 0
    saved = json.loads((tmp_path / "rep" / "report.json").read_text())
    assert saved["varying_settings"] == {"temperature": [0.5, 1.0]} and "sweep" in saved["plots"]
    assert "not checked: pass --train" in (tmp_path / "rep" / "report.html").read_text()  # no --train given
    assert "MAUVE" in capsys.readouterr().out


@pytest.mark.parametrize("name,field,label", [("jigsaw", "comment_text", "label_name"), ("boolq", "question", "label")])
def test_tstr_on_bundled_labelled_sets(tmp_path, name, field, label):
    def every_kth(split, n):  # a spread-out subset: the files are not shuffled by label
        recs = load_records(f"builtin:{name}/{split}", field=field)
        return [{"text": r.text, "label": r.meta[label]} for r in recs[:: len(recs) // n][:n]]

    real_rows, syn_rows = every_kth("heldout", 300), every_kth("train", 300)
    values = sorted({x["label"] for x in real_rows})
    flipped = [{**x, "label": values[1 - values.index(x["label"])]} for x in syn_rows]  # every label wrong
    unlabelled = [{"text": x["text"]} for x in syn_rows[:100]]
    cfg = EvalConfig(real=_write(tmp_path / "real.jsonl", real_rows),
                     synthetic=(_write(tmp_path / "syn.jsonl", syn_rows), _write(tmp_path / "flipped.jsonl", flipped),
                                _write(tmp_path / "plain.jsonl", unlabelled)),
                     field="text", label_field="label", out=str(tmp_path / "out"), device="cpu", mauve_seeds=(0,))
    r = evaluate(cfg, progress=False)
    m = {name: s.values for name, s in r.metrics.items()}
    t = m["syn"]["tstr"]
    # labels hold on real-looking data, and a judge trained on real labels sees through flipped ones
    assert m["syn"]["label_agreement"] > 0.6 > m["flipped"]["label_agreement"]
    # an unlabelled baseline sits in the same report, without TSTR
    assert "tstr" not in m["plain"] and "label_agreement" not in m["plain"] and m["plain"]["mauve"]["mean"] > 0
    assert "label_agreement" not in m["real vs real"]
    majority = max(sum(x["label"] == v for x in real_rows) for v in {x["label"] for x in real_rows}) / len(real_rows)
    assert t["n_train"] == 300 and t["accuracy"] > (0.6 if name == "jigsaw" else 0.5)
    assert m["real vs real"]["tstr"]["accuracy"] is not None
    assert 0 <= t["macro_f1"] <= 1 and majority < 1


def test_two_numeric_settings_give_a_heatmap(tmp_path, sets):
    texts = [json.loads(line)["text"] for line in open(sets["same"])]
    runs = [_fake_run(tmp_path / f"g{g}e{e}", {"method": "steer", "gamma": g, "eta": e}, texts[i * 30: i * 30 + 30])
            for i, (g, e) in enumerate([(0.0, 0.0), (0.0, 0.5), (0.5, 0.0), (0.5, 0.5)])]
    r = evaluate(EvalConfig(real=sets["real"], field="text", synthetic=tuple(runs), out=str(tmp_path / "rep"),
                            device="cpu", mauve_seeds=(0,)), progress=False)
    assert r.varying_settings == {"eta": [0.0, 0.5, 0.0, 0.5], "gamma": [0.0, 0.0, 0.5, 0.5]}
    assert "sweep" in r.plots and 'id="plot-sweep"' in (tmp_path / "rep" / "report.html").read_text()
