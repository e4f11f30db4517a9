"""`synthsteer student`: the target-only loss, each task metric on known answers, the input/target
split, seeds that reproduce bit for bit, resume after kill -9, results.json / results.html, and
bad inputs refused in one line."""

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from synthsteer.cli import main as cli_main
from synthsteer.errors import SynthsteerError

KILL_AT = str(Path(__file__).parent / "kill_at.py")
BOOLQ = "Passage: {passage}\nQuestion: {question}\nAnswer: {label}"
BASE = ["student", "--model", "tiny", "--template", BOOLQ, "--target", "label", "--eval", "builtin:boolq/heldout",
        "--eval-limit", "12", "--max-length", "96", "--r", "2", "--alpha", "4", "--batch-size", "4", "--device", "cpu"]


def main(args):
    with pytest.raises(SystemExit) as exit:
        cli_main(args)
    assert exit.value.code == 0


def refused(args, capsys) -> str:
    with pytest.raises(SystemExit) as exit:
        cli_main(args)
    assert exit.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and len(err.splitlines()) == 1, err
    return err


# ---------------------------------------------------------------- the loss and the metrics


def test_pair_nll_is_the_targets_nll_alone_by_hand(lm_dir):
    from synthsteer.lm import load_lm
    from synthsteer.training import pair_nll

    lm = load_lm(str(lm_dir), device="cpu")
    pairs = [([1, 5, 9, 3], [7, 2]), ([1, 4], [8, 8, 6]), ([1, 2, 3, 4, 5, 6], [9])]
    with torch.no_grad():
        got = pair_nll(lm, pairs)
        for i, (x, y) in enumerate(pairs):  # each pair alone, unpadded, every position's log-softmax by hand
            logp = torch.log_softmax(lm.model(input_ids=torch.tensor([x + y])).logits[0].float(), -1)
            want = -sum(logp[len(x) - 1 + j, t] for j, t in enumerate(y))
            assert got[i].item() == pytest.approx(want.item(), rel=1e-4)
        # the input tokens are read, never learned: changing a target token changes only its pair
        other = pair_nll(lm, [pairs[0], (pairs[1][0], [8, 8, 7]), pairs[2]])
    assert other[0].item() == pytest.approx(got[0].item(), rel=1e-5)
    assert other[2].item() == pytest.approx(got[2].item(), rel=1e-5)
    assert other[1].item() != pytest.approx(got[1].item(), rel=1e-5)


def test_metrics_on_known_answers():
    from synthsteer.metrics import (StudentOutputs, choice_accuracy, exact_match, gsm8k_answer, pass_at_1,
                                    student_metrics, target_loss)

    assert target_loss([2.0, 4.0], [1, 3]) == pytest.approx(1.5)  # summed over tokens, not averaged per record
    # the lowest NLL wins; a gold value outside the set is wrong; a tie goes to the first value
    assert choice_accuracy([[0.1, 2.0], [3.0, 0.5], [1.0, 1.0], [0.2, 0.9]], [0, 1, 1, None]) == pytest.approx(0.5)
    assert gsm8k_answer("She makes 9 * 2 = $18.\n#### 1,018") == "1018"
    assert gsm8k_answer("#### -3.5 dollars") == "-3.5"
    assert gsm8k_answer("the answer is 18") is None
    assert exact_match(["18", None, "7"], ["18", "4", "8"]) == pytest.approx(1 / 3)
    assert pass_at_1([True, False, False, True]) == 0.5
    out = student_metrics(StudentOutputs([1.0], [2], choice_nll=[[0.0, 1.0]], gold_choice=[1]))
    assert out == {"loss": 0.5, "accuracy": 0.0}


def test_the_split_feeds_the_input_and_learns_the_target():
    from synthsteer.records import RecordFormat
    from synthsteer.student.data import StudentTask

    task = StudentTask(RecordFormat.template(BOOLQ), ("label",))
    head, tail = task.split({"passage": "P", "question": "is it?", "label": "yes"})
    assert (head, tail) == ("Passage: P\nQuestion: is it?\nAnswer:", " yes")  # the space goes with the answer
    two = StudentTask(RecordFormat.template(BOOLQ), ("question", "label"))
    assert two.split({"passage": "P", "question": "is it?", "label": "no"}) == ("Passage: P\nQuestion:",
                                                                                 " is it?\nAnswer: no")


def test_tokenize_pair_keeps_the_target_and_the_end_of_a_long_input():
    from synthsteer.lm import load_lm
    from synthsteer.records import RecordFormat
    from synthsteer.student.data import StudentTask
    from synthsteer.student.train import tokenize_pair

    lm = load_lm("tiny", device="cpu")
    task = StudentTask(RecordFormat.template(BOOLQ), ("label",))
    fields = {"passage": "long words " * 200, "question": "is the end kept?", "label": "yes"}
    x, y = tokenize_pair(lm, task, fields, 40)
    assert len(x) + len(y) == 40 and y[-1] == lm.eos_token_id
    assert lm.tokenizer.decode(y[:-1]).strip() == "yes"
    assert lm.tokenizer.decode(x[1:]).endswith("is the end kept?\nAnswer:")


# ---------------------------------------------------------------- the command


@pytest.fixture(scope="module")
def boolq_run(tmp_path_factory):
    """Two sizes of real BoolQ records, two seeds, and the untrained student."""
    out = tmp_path_factory.mktemp("student") / "boolq"
    main([*BASE, "--train", "real=builtin:boolq/train", "--train", "mixed=builtin:boolq/train+builtin:boolq/train",
          "--sizes", "4,8", "--seeds", "0,1", "--steps", "3", "--out", str(out)])
    return out


def test_results_hold_every_student_and_the_untrained_one(boolq_run):
    from synthsteer.student.results import StudentResults

    results = StudentResults.read(boolq_run)
    assert results.metrics == ("loss", "accuracy")  # BoolQ's yes/no inferred as a closed set
    assert len(results.runs) == 2 * 2 * 2 and {(r.set, r.size) for r in results.rows} == {
        ("real", 4), ("real", 8), ("mixed", 4), ("mixed", 8)}
    assert results.eval["n"] == 12 and results.untrained.size is None
    for row in results.rows:
        runs = [r.metrics["loss"] for r in results.runs if r.set == row.set and r.size == row.size]
        assert row.metrics["loss"].mean == pytest.approx(sum(runs) / 2)
        assert row.metrics["loss"].std == pytest.approx(abs(runs[0] - runs[1]) / 2 ** 0.5)
        assert row.gain.mean == pytest.approx(results.untrained.metrics["loss"] - row.metrics["loss"].mean)
        assert 0 <= row.metrics["accuracy"].mean <= 1
    scores = json.loads((boolq_run / "students" / "real-8-s1" / "scores.json").read_text())
    assert len(scores["outputs"]["choice_nll"]) == 12 and set(scores["outputs"]["gold_choice"]) <= {0, 1}
    page = (boolq_run / "results.html").read_text()
    assert 'id="plot-bars-accuracy"' in page and 'id="plot-curve-loss"' in page and "untrained" in page
    assert "A tiny student (lora, 2 seeds) trained on 8 of these records reaches" in results.sentence("mixed")


def test_training_learns_the_target(boolq_run, tmp_path):
    """More steps on the same records lower the held-out target loss below the untrained student's."""
    from synthsteer.student.results import StudentResults

    main([*BASE, "--train", "real=builtin:boolq/train", "--sizes", "32", "--steps", "40", "--lr", "3e-3",
          "--out", str(tmp_path / "s")])
    r = StudentResults.read(tmp_path / "s")
    assert r.rows[0].metrics["loss"].mean < r.untrained.metrics["loss"] - 0.05


def test_seeds_reproduce_bit_for_bit_and_differ_from_each_other(boolq_run, tmp_path):
    from safetensors.torch import load_file

    main([*BASE, "--train", "real=builtin:boolq/train", "--sizes", "4", "--seeds", "1", "--steps", "3",
          "--out", str(tmp_path / "again")])
    weights = [load_file(str(d / "adapter_model.safetensors")) for d in (
        boolq_run / "students" / "real-4-s1", tmp_path / "again" / "students" / "real-4-s1",
        boolq_run / "students" / "real-4-s0")]
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])
    assert not all(torch.equal(weights[0][k], weights[2][k]) for k in weights[0])
    a, b = (json.loads((d / "students" / "real-4-s1" / "scores.json").read_text())["outputs"]
            for d in (boolq_run, tmp_path / "again"))
    assert a == b


def test_a_rerun_keeps_finished_students(boolq_run, capsys):
    before = {p: p.stat().st_mtime_ns for p in (boolq_run / "students").glob("*/adapter_model.safetensors")}
    main([*BASE, "--train", "real=builtin:boolq/train", "--train", "mixed=builtin:boolq/train+builtin:boolq/train",
          "--sizes", "4,8", "--seeds", "0,1", "--steps", "3", "--out", str(boolq_run)])
    assert before == {p: p.stat().st_mtime_ns for p in (boolq_run / "students").glob("*/adapter_model.safetensors")}
    assert "log-likelihoods" not in capsys.readouterr().err  # nothing rescored either


def test_resume_after_kill_9_gives_the_uninterrupted_student(boolq_run, tmp_path):
    from safetensors.torch import load_file

    args = [*BASE, "--train", "real=builtin:boolq/train", "--sizes", "8", "--seeds", "0", "--steps", "6",
            "--save-every", "2", "--out", str(tmp_path / "killed")]
    proc = subprocess.run([sys.executable, KILL_AT, "synthsteer.training:lr_at", "4", "--", *args],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-1500:]
    assert (tmp_path / "killed" / "students" / "real-8-s0" / "train_state" / "state.json").exists()
    main(args)
    main([*args[:-1], str(tmp_path / "whole")])
    got, want = (load_file(str(tmp_path / d / "students" / "real-8-s0" / "adapter_model.safetensors"))
                 for d in ("killed", "whole"))
    assert all(torch.allclose(got[k], want[k], atol=1e-6) for k in want)


def test_runs_are_training_sets_and_the_table_reaches_eval_and_the_card(tmp_path):
    """A run of records trains a student (its format and generated fields are the defaults); `eval
    --student` puts the table into the report and `export --report` the sentence into the card."""
    from synthsteer.student.results import StudentResults

    run = tmp_path / "run"
    main(["generate", "--method", "hard", "--model", "tiny", "--data", "builtin:boolq/train", "--template", BOOLQ,
          "--given", "passage,question", "--n", "6", "--batch-size", "6", "--max-new-tokens", "8", "--out", str(run)])
    main(["student", "--model", "tiny", "--train", f"synthetic={run}", "--train", "real=builtin:boolq/train",
          "--eval", "builtin:boolq/heldout", "--eval-limit", "8", "--steps", "2", "--r", "2", "--max-length", "64",
          "--out", str(tmp_path / "s")])
    r = StudentResults.read(tmp_path / "s")
    assert r.task["target"] == ["label"]  # what the run generated (the grammar kept it to yes / no)
    sizes = {row.set: row.size for row in r.rows}
    assert sizes["synthetic"] == sizes["real"] <= 6  # as many records as the smaller set holds
    sentence = r.sentence("synthetic")
    assert f"on {sizes['real']} real records" in sentence and "untrained" in sentence
    main(["eval", "--real", "builtin:boolq/heldout", "--template", BOOLQ, "--synthetic", f"synthetic={run}",
          "--student", str(tmp_path / "s"), "--max-samples", "6", "--device", "cpu", "--out", str(tmp_path / "eval")])
    report = json.loads((tmp_path / "eval" / "report.json").read_text())
    assert report["student"]["rows"][0]["set"] == "synthetic"
    assert 'id="students"' in (tmp_path / "eval" / "report.html").read_text()
    main(["export", str(run), "--report", str(tmp_path / "eval"), "--to", str(tmp_path / "export")])
    card = (tmp_path / "export" / "README.md").read_text()
    assert "## Does it teach? (`synthsteer student`)" in card and sentence in card


def test_full_fine_tuning_trains_every_weight(tmp_path):
    from safetensors.torch import load_file

    from synthsteer.lm import load_lm

    main([*BASE, "--train", "real=builtin:boolq/train", "--sizes", "4", "--steps", "2", "--finetune", "full",
          "--lr", "1e-4", "--out", str(tmp_path / "f")])
    folder = tmp_path / "f" / "students" / "real-4-s0"
    trained, base = load_file(str(folder / "model.safetensors")), load_lm("tiny", device="cpu").model.state_dict()
    changed = [k for k in trained if not torch.equal(trained[k], base[k])]
    assert len(changed) > len(trained) // 2  # not an adapter: the weights themselves moved
    assert not (folder / "adapter_model.safetensors").exists()


def test_exact_match_decodes_greedy_answers_through_the_engine(tmp_path):
    from synthsteer.student.results import StudentResults

    main(["student", "--model", "tiny", "--template", "Question: {question}\nAnswer: {answer}",
          "--train", "real=builtin:gsm8k/train", "--eval", "builtin:gsm8k/test", "--eval-limit", "5", "--sizes", "4",
          "--steps", "1", "--r", "2", "--max-new-tokens", "8", "--max-length", "160", "--out", str(tmp_path / "g")])
    r = StudentResults.read(tmp_path / "g")
    assert r.metrics == ("loss", "exact_match")
    out = json.loads((tmp_path / "g" / "untrained.json").read_text())["outputs"]
    assert len(out["answers"]) == 5 and all(a.isdigit() for a in out["gold_answers"])
    assert r.untrained.metrics["exact_match"] == 0.0  # 8 tokens of a 5M LM are no "#### N"


def test_pass_at_1_runs_code_only_when_asked(tmp_path, capsys):
    from synthsteer.student.results import StudentResults

    args = ["student", "--model", "tiny", "--template", "Task: {task}\nCode:\n{code}", "--rename", "text=task",
            "--train", "real=builtin:mbpp/train", "--eval", "builtin:mbpp/test", "--eval-limit", "3", "--sizes", "2",
            "--steps", "1", "--r", "2", "--max-new-tokens", "6", "--code-timeout", "5"]
    main([*args, "--out", str(tmp_path / "off")])
    assert StudentResults.read(tmp_path / "off").metrics == ("loss",)
    assert "pass --execute-code" in capsys.readouterr().err
    refused([*args, "--metrics", "pass_at_1", "--out", str(tmp_path / "no")], capsys)
    main([*args, "--execute-code", "--out", str(tmp_path / "on")])
    r = StudentResults.read(tmp_path / "on")
    assert r.metrics == ("loss", "pass_at_1") and r.untrained.metrics["pass_at_1"] == 0.0
    out = json.loads((tmp_path / "on" / "untrained.json").read_text())["outputs"]
    assert out["passed"] == [False, False, False]


@pytest.mark.parametrize("extra, words", [
    (["--train", "real"], "expected NAME=SOURCE"),
    (["--train", "a=builtin:boolq/train", "--train", "a=builtin:boolq/train"], "named twice"),
    (["--train", "a b=builtin:boolq/train"], "a set name is"),
    (["--train", "a=builtin:boolq/train", "--target", "passage"], "must be the record's last fields"),
    (["--train", "a=builtin:boolq/train", "--target", "nope"], "not a field of the record format"),
    (["--train", "a=builtin:boolq/train", "--sizes", "100000"], "holds only"),
    (["--train", "a=builtin:boolq/train", "--seeds", "x"], "--seeds x: not an integer"),
    (["--train", "a=builtin:boolq/train", "--metrics", "bleu"], "--metrics bleu"),
    (["--train", "a=builtin:boolq/train", "--metrics", "exact_match"], "'#### N'"),
    (["--train", "a=builtin:nosuch/train"], "--train a"),
    (["--train", "a=builtin:boolq/train", "--field-values", "passage=x,y"], "--field-values passage: not a generated"),
])
def test_bad_inputs_are_refused_in_one_line(extra, words, tmp_path, capsys):
    err = refused([*BASE, *extra, "--out", str(tmp_path / "s")], capsys)
    assert words in err, err
    assert not (tmp_path / "s").exists()  # nothing written


def test_without_a_template_data_sources_have_no_record_format(tmp_path, capsys):
    err = refused(["student", "--model", "tiny", "--train", "a=builtin:boolq/train", "--eval", "builtin:boolq/heldout",
                   "--out", str(tmp_path / "s")], capsys)
    assert "--template is required" in err


def test_config_is_checked_at_construction():
    from synthsteer.student.config import StudentConfig

    with pytest.raises(SynthsteerError, match="--train is required"):
        StudentConfig(model="tiny", eval="builtin:boolq/heldout")
    with pytest.raises(SynthsteerError, match="distinct seeds"):
        StudentConfig(model="tiny", eval="x.jsonl", train=("a=b.jsonl",), seeds=(1, 1))


def test_a_run_fed_nothing_teaches_its_last_field(tmp_path):
    from synthsteer.student.config import StudentConfig
    from synthsteer.student.data import parse_sets, student_task

    run = tmp_path / "run"
    main(["generate", "--method", "hard", "--model", "tiny", "--data", "builtin:gsm8k/train", "--template",
          "Question: {question}\nAnswer: {answer}", "--n", "2", "--max-new-tokens", "4", "--out", str(run)])
    config = StudentConfig(model="tiny", train=(f"mc={run}",), eval="builtin:gsm8k/test")
    task = student_task(config, parse_sets(config))
    assert task.target == ("answer",) and task.inputs == ("question",)
    # the default follows the student's format, not the run's: re-rendered, its last field is the target
    config = StudentConfig(model="tiny", train=(f"mc={run}",), eval="builtin:gsm8k/test",
                           template="Answer: {answer}\nQuestion: {question}")
    assert student_task(config, parse_sets(config)).target == ("question",)
