"""Records of several fields: the format parses back, rejects are counted once, given fields are fed."""

import json

import pytest

from synthsteer import ExpertConfig, FitConfig, GenerateConfig, fit_soft_prompt, generate, read_run, train_expert
from synthsteer.errors import SynthsteerError
from synthsteer.records import RecordFormat, Unparsable
from synthsteer.runs import read_records

# ---------------------------------------------------------------- the format (pure)


@pytest.mark.parametrize("template, message", [
    ("{question}{answer}", "{question} and {answer} are not separated by any text"),
    ("Q: {q}\nA: {q}", "{q} appears twice"),
    ("Q: {q:>10}", "{q:>10} rewrites the value"),
    ("Q: {q!r}", "{q!r} rewrites the value"),
    ("no fields", "names no field"),
    ("Q: {q.x}", "not a plain field name"),
    ("{id}: {q}", None),
])
def test_a_template_that_would_not_parse_back_is_refused(template, message):
    if message is None:  # a fine template, but its field would overwrite the record's own id
        with pytest.raises(SynthsteerError, match="would overwrite the record's own 'id'"):
            RecordFormat.template(template).check_record_keys()
        return
    with pytest.raises(SynthsteerError, match=message.replace("{", r"\{").replace("(", r"\(")):
        RecordFormat.template(template)


@pytest.mark.parametrize("values", [
    {"q": "What is 2+2?", "a": "4"},
    {"q": "", "a": ""},  # empty fields
    {"q": "Wie viel kostet 1 Äpfel? 🍎", "a": "Antwort: 3 €\nA: nochmal"},  # unicode; the last field holds the separator
])
def test_render_and_parse_are_inverse(values):
    fmt = RecordFormat.template("Q: {q}\nA: {a}")
    text = fmt.render(values)
    assert fmt.parse(text) == values and fmt.render(fmt.parse(text)) == text
    js = RecordFormat.json(("q", "a"))
    assert js.parse(js.render(values)) == values


def test_a_field_holding_the_next_separator_splits_at_its_first_occurrence():
    fmt = RecordFormat.template("Q: {q}\nA: {a}")
    text = fmt.render({"q": "x\nA: y", "a": "z"})
    assert fmt.parse(text) == {"q": "x", "a": "y\nA: z"}  # deterministic, and still render(parse(t)) == t
    assert fmt.render(fmt.parse(text)) == text


@pytest.mark.parametrize("text, reason", [
    ("Question 2+2", "missing the start 'Q: '"),
    ("Q: 2+2 and no answer", "missing 'A:'"),
])
def test_a_text_that_does_not_parse_says_why(text, reason):
    assert RecordFormat.template("Q: {q}\nA: {a}").parse(text) == Unparsable(reason)


@pytest.mark.parametrize("text, reason", [
    ("not json", "not one JSON object"),
    ("[1]", "not one JSON object"),
    ('{"q": "x"}', "missing a"),
    ('{"q": "x", "a": "y", "b": "z"}', "extra b"),
    ('{"q": "x", "a": 3}', "a is not a string"),
])
def test_json_records_hold_exactly_the_declared_string_fields(text, reason):
    assert RecordFormat.json(("q", "a")).parse(text) == Unparsable(reason)


def test_given_fields_come_first_and_are_forced_without_trailing_spaces():
    fmt = RecordFormat.template("Label: {label}\nComment: {comment}")
    assert fmt.forced_prefix({}) == "Label:"
    assert fmt.forced_prefix({"label": "toxic"}) == "Label: toxic\nComment:"
    assert RecordFormat.json(("label", "comment")).forced_prefix({"label": "toxic"}) == '{"label": "toxic", "comment": "'
    with pytest.raises(SynthsteerError, match="given fields must come first"):
        fmt.check_given(("comment",))
    with pytest.raises(SynthsteerError, match="every field is given"):
        fmt.check_given(("label", "comment"))
    with pytest.raises(SynthsteerError, match="not a field of the record format"):
        fmt.check_given(("topic",))
    assert RecordFormat.from_dict(fmt.as_dict(), "x") == fmt


# ---------------------------------------------------------------- through generate

TEMPLATE = "Label: {label}\nComment:{comment}"  # no space to write after the colon: every given sample parses


@pytest.fixture(scope="module")
def labelled(tmp_path_factory, small_jsonl):
    rows = [json.loads(line) for line in small_jsonl.read_text().splitlines()]
    path = tmp_path_factory.mktemp("labelled") / "c.jsonl"
    path.write_text("".join(json.dumps({"label": ["toxic", "calm"][i % 2], "comment": r["question"]}) + "\n"
                            for i, r in enumerate(rows)))
    return path


@pytest.fixture(scope="module")
def trained(labelled, lm_dir, tmp_path_factory):
    """A soft prompt and a LoRA expert trained on the rendered records (a few steps: only the plumbing counts)."""
    root = tmp_path_factory.mktemp("trained")
    common = dict(data=str(labelled), template=TEMPLATE, model=str(lm_dir), steps=2, batch_size=4, max_length=48,
                  device="cpu")
    prompt = fit_soft_prompt(FitConfig(**common, out=str(root / "prompt"), encoder="lm-mean", prompt_length=4),
                             progress=False)
    expert = train_expert(ExpertConfig(**common, out=str(root / "expert"), r=2), progress=False)
    return prompt, expert


@pytest.mark.parametrize("method", ["hard", "softsrv", "steer", "softsrv-steer"])
def test_given_fields_are_fed_in_every_method_and_copied_verbatim(method, trained, labelled, lm_dir, tmp_path):
    prompt, expert = trained
    kw = {"hard": dict(method="hard", data=str(labelled), template=TEMPLATE, model=str(lm_dir)),
          "softsrv": dict(method="softsrv", prompt=str(prompt)),
          "steer": dict(method="steer", expert=str(expert), negatives=2),
          "softsrv-steer": dict(method="steer", prompt=str(prompt), negatives=2)}[method]
    out = generate(GenerateConfig(**kw, given=("label",), out=str(tmp_path / "run"), n=6, batch_size=3,
                                  max_new_tokens=8, device="cpu"), progress=False)
    records, rejects = read_run(out), read_records(out, "rejects")
    assert len(records) + len(rejects) == 6
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["settings"]["format"] == {"kind": "template", "template": TEMPLATE}
    assert manifest["settings"]["given"] == ["label"]
    labels = {json.loads(line)["comment"]: json.loads(line)["label"] for line in labelled.read_text().splitlines()}
    from synthsteer.data import load_records

    by_id = {rec.id: labels[rec.meta["comment"]] for rec in load_records(str(labelled), template=TEMPLATE)}
    for r in records + rejects:  # kept or not, every sample was fed its given label
        label = r["text"][len("Label: "):].split("\n")[0]
        assert label in ("toxic", "calm") and r["text"].startswith(f"Label: {label}\nComment:"), r["text"]
        if method in ("softsrv", "softsrv-steer"):  # the label of the example whose context seeded the record
            assert label == by_id[r["provenance"]["source_id"]]
    for r in records:
        assert r["text"] == f"Label: {r['label']}\nComment:{r['comment']}" and r["provenance"]["given"] == ["label"]
    assert len(records) == 6 and not rejects


def test_rejects_are_counted_kept_apart_and_never_redone(labelled, lm_dir, tmp_path, capsys):
    """A random LM rarely writes the " " after the fed "Label:", or the "\\nComment:" literal: most samples are
    rejects."""
    kw = dict(method="hard", data=str(labelled), template=TEMPLATE, model=str(lm_dir), out=str(tmp_path / "run"),
              batch_size=4, max_new_tokens=6, device="cpu", constrain="off")
    out = generate(GenerateConfig(**kw, n=8), progress=False)
    rejects = read_records(out, "rejects")
    reasons = ("truncated at max-new-tokens", "missing 'Comment:'", "missing the start 'Label: '")
    assert rejects and all(r["reject"] in reasons for r in rejects)
    assert all(r["text"].startswith("Label:") for r in rejects)  # the leading literal is fed, not written
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["records"] + manifest["rejects"] == 8 and sum(manifest["reject_reasons"].values()) == manifest["rejects"]
    assert f"kept {manifest['records']} of 8, {manifest['rejects']} unparsable: " in capsys.readouterr().err
    before = {p.name: p.read_bytes() for p in out.glob("*-*.jsonl")}
    generate(GenerateConfig(**kw, n=8), progress=False)  # a rerun: nothing to do
    assert {p.name: p.read_bytes() for p in out.glob("*-*.jsonl")} == before
    generate(GenerateConfig(**kw, n=12), progress=False)  # a resume to more: each index once, kept or rejected
    indices = [r["index"] for r in read_run(out)] + [r["index"] for r in read_records(out, "rejects")]
    assert sorted(indices) == list(range(12))
    whole = generate(GenerateConfig(**{**kw, "out": str(tmp_path / "whole")}, n=12), progress=False)
    assert sorted(r["id"] for r in read_records(whole, "rejects")) == sorted(r["id"] for r in read_records(out, "rejects"))


def test_given_needs_a_format_examples_and_leading_fields(labelled, lm_dir, tmp_path):
    with pytest.raises(SynthsteerError, match="--given needs a record format"):
        generate(GenerateConfig(method="hard", data=str(labelled), field="comment", given=("label",), model=str(lm_dir),
                                out=str(tmp_path / "a"), n=2, device="cpu"), progress=False)
    with pytest.raises(SynthsteerError, match="given fields must come first"):
        generate(GenerateConfig(method="hard", data=str(labelled), template=TEMPLATE, given=("comment",),
                                model=str(lm_dir), out=str(tmp_path / "b"), n=2, device="cpu"), progress=False)
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_export_writes_a_column_per_field_and_the_card_says_which_were_given(labelled, lm_dir, tmp_path):
    from synthsteer import ExportConfig, export_runs, to_dataset

    kw = dict(method="hard", data=str(labelled), template=TEMPLATE, model=str(lm_dir), batch_size=4, max_new_tokens=6,
              device="cpu", constrain="off")
    given = generate(GenerateConfig(**kw, given=("label",), out=str(tmp_path / "given"), n=4), progress=False)
    loose = generate(GenerateConfig(**kw, out=str(tmp_path / "loose"), n=8), progress=False)
    ds = to_dataset(str(given))
    assert {"text", "label", "comment"} <= set(ds.column_names) and len(ds) == 4
    assert all(row["text"] == f"Label: {row['label']}\nComment:{row['comment']}" for row in ds)
    folder = export_runs(ExportConfig(runs=(f"given={given}", f"loose={loose}"), to=str(tmp_path / "export")))
    card = (tmp_path / "export" / "README.md").read_text()
    assert "Run given holds records of several fields, one column each: `label` (given), `comment` (generated)" in card
    rejects = json.loads((loose / "manifest.json").read_text())["rejects"]
    assert f"{rejects} samples did not parse into that format and are not rows" in card, folder


def test_filter_dedups_on_a_field(tmp_path):
    from synthsteer import FilterConfig, filter_run
    from synthsteer.runs import RunDir

    run = RunDir(tmp_path / "run", {"method": "plain"})
    rows = [("What is 2+2?", "4"), ("what is 2+2?", "5"), ("What is 3+3?", "4")]
    run.append([{"id": f"r{i}", "index": i, "text": f"Q: {q}\nA: {a}", "q": q, "a": a} for i, (q, a) in enumerate(rows)])
    run.finish(n_requested=3)
    run.close()
    assert filter_run(FilterConfig(run=str(tmp_path / "run"), out=str(tmp_path / "whole"), dedup=True))["duplicate"] == 0
    summary = filter_run(FilterConfig(run=str(tmp_path / "run"), out=str(tmp_path / "by-q"), dedup=True, dedup_on="q"))
    assert summary["duplicate"] == 1 and [r["a"] for r in read_run(tmp_path / "by-q")] == ["4", "4"]
    with pytest.raises(SynthsteerError, match="--dedup-on answer: record r0 has no such text field; its fields: id, "
                                              "index, text, q, a"):
        filter_run(FilterConfig(run=str(tmp_path / "run"), out=str(tmp_path / "x"), dedup=True, dedup_on="answer"))


def test_eval_scores_each_generated_field_against_the_real_one(labelled, lm_dir, tmp_path):
    from synthsteer import EvalConfig, evaluate
    from synthsteer.export import read_report

    run = generate(GenerateConfig(method="hard", data=str(labelled), template=TEMPLATE, model=str(lm_dir), given=("label",),
                                  out=str(tmp_path / "run"), n=8, batch_size=4, max_new_tokens=6, device="cpu"),
                   progress=False)
    report = evaluate(EvalConfig(real=str(labelled), template=TEMPLATE, synthetic=(f"given={run}",),
                                 out=str(tmp_path / "eval"), mauve_seeds=(0,), device="cpu"), progress=False)
    assert list(report.fields) == ["comment"]  # the given label is not the LM's work
    scored = report.fields["comment"]["given"].values
    assert scored["n"] == 8 and 0 <= scored["mauve"]["mean"] <= 1 and "self_bleu" not in scored
    assert read_report(str(tmp_path / "eval")).fields["comment"]["given"].values == scored
    html = (tmp_path / "eval" / "report.html").read_text()
    assert '<table class="field" data-field="comment">' in html


@pytest.mark.parametrize("template, values", [
    ("Q: {comment}\nA: {label}", ()),  # a random LM writes the "\nA: " literal only when made to
    ("Comment: {comment}\nLabel: {label}.", ("label=toxic,calm",)),  # a closed set, then a literal to end on
    ("Comment: {comment}\nLabel: {label}", ()),  # the closed set inferred from the training data
])
def test_constrained_decoding_always_parses_even_on_a_random_lm(template, values, lm_dir, tmp_path):
    """Under the grammar a field before a literal ends within a quarter more than the training data's
    longest (+8 characters), so with room enough for that every sample parses."""
    data = tmp_path / "short.jsonl"
    data.write_text("".join(json.dumps({"comment": f"short comment {i}", "label": ["toxic", "calm"][i % 2]}) + "\n"
                            for i in range(12)))
    kw = dict(method="hard", data=str(data), template=template, model=str(lm_dir), n=8, batch_size=4,
              max_new_tokens=64, device="cpu", field_values=values)
    out = generate(GenerateConfig(**kw, out=str(tmp_path / "on")), progress=False)
    records, rejects = read_run(out), read_records(out, "rejects")
    assert len(records) == 8 and not rejects
    settings = json.loads((out / "manifest.json").read_text())["settings"]
    assert settings["constrain"]["library"] == "xgrammar"
    if "label" in template.split("\n")[-1]:
        assert settings["constrain"]["values"] == {"label": ["calm", "toxic"]} or values
        assert all(r["label"] in ("toxic", "calm") for r in records)
    again = generate(GenerateConfig(**{**kw, "batch_size": 3}, out=str(tmp_path / "again")), progress=False)
    assert [r["text"] for r in read_run(again)] == [r["text"] for r in records]  # (seed, index) only
    off = generate(GenerateConfig(**kw, out=str(tmp_path / "off"), constrain="off"), progress=False)
    assert len(read_run(off)) < len(records)


def test_json_records_from_fit_to_generate_parse_and_constrain(lm_dir, tmp_path):
    """--format json --fields: the examples are JSON objects (fields may hold newlines), the prompt records
    the format, generate feeds the given field inside the object and the grammar keeps it one object."""
    data = tmp_path / "code.jsonl"
    data.write_text("".join(json.dumps({"task": f"task {i}", "code": f"def f{i}():\n    return {i}"}) + "\n"
                            for i in range(12)))
    from synthsteer.data import load_records

    spec_kw = dict(data=str(data), format="json", fields=("task", "code"))
    from synthsteer.data import DataSpec

    records = load_records(DataSpec.of(GenerateConfig(method="hard", **spec_kw)))
    assert json.loads(records[1].text) == {"task": "task 1", "code": "def f1():\n    return 1"}
    prompt = fit_soft_prompt(FitConfig(**spec_kw, model=str(lm_dir), out=str(tmp_path / "prompt"), steps=2,
                                       batch_size=4, max_length=48, encoder="lm-mean", prompt_length=4, device="cpu"),
                             progress=False)
    assert json.loads((prompt / "config.json").read_text())["data"]["fields"] == ["task", "code"]
    out = generate(GenerateConfig(method="softsrv", prompt=str(prompt), given=("task",), n=6, batch_size=3,
                                  max_new_tokens=48, out=str(tmp_path / "run"), device="cpu"), progress=False)
    kept = read_run(out)
    assert len(kept) == 6 and not read_records(out, "rejects")
    for r in kept:
        assert json.loads(r["text"], strict=False) == {"task": r["task"], "code": r["code"]} and r["task"].startswith("task ")
    with pytest.raises(SynthsteerError, match="--format json needs --fields"):
        DataSpec.of(GenerateConfig(method="hard", data=str(data), format="json"))


def test_one_grammar_serves_every_given_value_even_one_spanning_lines(lm_dir, tmp_path):
    """The grammar covers what follows the fed prefix, so a given passage of several lines is fed as it
    is and the generated question is still held to one line and the answer to the closed set."""
    data = tmp_path / "p.jsonl"
    data.write_text("".join(json.dumps({"passage": f"first line {i}\nsecond line", "q": f"is {i} even",
                                        "a": ["yes", "no"][i % 2]}) + "\n" for i in range(12)))
    fmt = RecordFormat.template("Passage: {passage}\nQ: {q}\nA: {a}")
    assert fmt.tail_regex(1, {"a": ("yes", "no")}, {"q": 20}) == r" [^\n]{1,20}\nA: (yes|no)"
    out = generate(GenerateConfig(method="hard", data=str(data), template="Passage: {passage}\nQ: {q}\nA: {a}",
                                  given=("passage",), model=str(lm_dir), n=6, batch_size=3, max_new_tokens=40,
                                  out=str(tmp_path / "run"), device="cpu"), progress=False)
    records = read_run(out)
    assert len(records) == 6 and not read_records(out, "rejects")
    assert all("\n" in r["passage"] and "\n" not in r["q"] and r["a"] in ("yes", "no") for r in records)


def test_given_values_are_drawn_per_record_for_any_method_plain_included(lm_dir, tmp_path, labelled):
    kw = dict(method="plain", template=TEMPLATE, model=str(lm_dir), n=40, batch_size=8, max_new_tokens=6, device="cpu",
              given_values=("label=toxic:3,calm:1",))
    out = generate(GenerateConfig(**kw, out=str(tmp_path / "plain")), progress=False)
    records = read_run(out) + read_records(out, "rejects")
    labels = [r["text"][len("Label: "):].split("\n")[0] for r in sorted(records, key=lambda r: r["index"])]
    assert set(labels) == {"toxic", "calm"} and 20 < labels.count("toxic") < 40  # about three in four
    again = generate(GenerateConfig(**{**kw, "batch_size": 5}, out=str(tmp_path / "again")), progress=False)
    assert [r["text"] for r in read_run(again)] == [r["text"] for r in read_run(out)]
    settings = json.loads((out / "manifest.json").read_text())["settings"]
    assert settings["given"] == ["label"] and settings["given_values"] == {"label": [["toxic", "calm"], [0.75, 0.25]]}
    with pytest.raises(SynthsteerError, match="--given-values label: 'toxic:x': the weight after ':' is not a number"):
        generate(GenerateConfig(**{**kw, "given_values": ("label=toxic:x",)}, out=str(tmp_path / "bad")), progress=False)
    with pytest.raises(SynthsteerError, match="has no training examples to take the values from"):
        generate(GenerateConfig(**{**kw, "given_values": ()}, given=("label",), out=str(tmp_path / "none")),
                 progress=False)


def test_rename_lets_a_field_named_like_a_record_key_be_a_record_field(lm_dir, tmp_path):
    """MBPP's task is in a field named `text`, which a record keeps for the whole record: --rename."""
    from synthsteer.data import DataSpec, load_records

    options = GenerateConfig(method="hard", data="builtin:mbpp/train", template="Task: {task}\nCode: {code}",
                             rename=("text=task",))
    spec = DataSpec.of(options)
    records = load_records(spec)
    assert records[0].text.startswith("Task: ") and "\nCode: " in records[0].text
    assert [r.id for r in records] == [r.id for r in load_records("builtin:mbpp/train", field="text")]
    assert spec.as_dict()["rename"] == [["text", "task"]]
    with pytest.raises(SynthsteerError, match="--rename text: expected OLD=NEW"):
        DataSpec.of(GenerateConfig(method="hard", data="builtin:mbpp", rename=("text",)))
    out = generate(GenerateConfig(**{**options.__dict__, "out": str(tmp_path / "run"), "model": str(lm_dir), "n": 3,
                                     "batch_size": 3, "max_new_tokens": 8, "device": "cpu", "given": ("task",)}),
                   progress=False)
    assert all(r["text"].startswith(f"Task: {r['task']}\nCode:") for r in read_run(out))
