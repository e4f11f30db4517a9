import numpy as np
import pytest

from synthsteer.metrics import (authenticity_auroc, compression_ratio, copy_scores, distinct_n, knn_precision_recall,
                                memorization, nearest_cosine, self_bleu, steer_diversity, tstr, vendi_score)

SENTENCES = [f"the {a} {b} jumps over the {c} dog number {i}" for i, (a, b, c) in
             enumerate(zip(["quick", "slow", "red", "tiny", "big"] * 8, ["fox", "cat", "hen", "owl", "elk"] * 8,
                           ["lazy", "sleepy", "old", "young", "brave", "calm", "wild", "shy"] * 5))]


def test_repeated_sentence_has_minimal_diversity():
    same = ["the cat sat on the mat"] * 50
    assert distinct_n(same, 2) == pytest.approx(5 / 250)
    assert steer_diversity(same) < 1e-3
    assert self_bleu(same) == pytest.approx(1.0)
    assert compression_ratio(same) > 10
    assert distinct_n(SENTENCES, 1) > distinct_n(same, 1)
    assert self_bleu(SENTENCES) < 0.9 and steer_diversity(SENTENCES) > steer_diversity(same)


def test_vendi_counts_effective_samples():
    assert vendi_score(np.ones((20, 4))) == pytest.approx(1.0)
    assert vendi_score(np.eye(6)) == pytest.approx(6.0)


def test_knn_precision_recall_known_geometry():
    rng = np.random.default_rng(0)
    real = rng.normal(size=(200, 2))
    assert knn_precision_recall(real, real + 1e-6)["precision"] == pytest.approx(1.0)
    far = knn_precision_recall(real, rng.normal(size=(200, 2)) + 50)
    assert far["precision"] == 0 and far["recall"] == 0
    # a synthetic set covering only one half of the real data: faithful but low coverage
    half = real[real[:, 0] > 0]
    pr = knn_precision_recall(real, half)
    assert pr["precision"] == 1.0 and pr["recall"] < 0.75


def test_nearest_cosine_and_auroc():
    rng = np.random.default_rng(1)
    a = rng.normal(size=(120, 8))
    assert nearest_cosine(a, a) == pytest.approx(1.0)
    assert authenticity_auroc(a, a.copy()) == pytest.approx(0.5, abs=0.1)
    assert authenticity_auroc(a, rng.normal(size=(120, 8)) + 3) > 0.99


def test_memorization_flags_copies():
    train = SENTENCES[:20]
    long = "one two three four five six seven eight nine ten eleven twelve thirteen fourteen"
    synthetic = [SENTENCES[3], SENTENCES[5].upper() + " ", "a wholly new line about nothing at all",
                 "prefix " + long, SENTENCES[7].replace("dog", "dogs")]
    m = memorization(synthetic, train + [long])
    assert m["exact_rate"] == pytest.approx(2 / 5)
    assert m["near_rate"] >= 3 / 5  # the two exact copies and the one-letter edit
    assert m["verbatim_rate"] >= 1 / 5
    flagged = [w["synthetic"] for w in m["worst"]]
    assert SENTENCES[3] in flagged and "a wholly new line about nothing at all" not in flagged
    scores = copy_scores(["a wholly new line about nothing at all"], train)
    assert scores[0] == {"exact": False, "jaccard": 0.0, "match": -1, "verbatim": False}


def test_tstr():
    rng = np.random.default_rng(2)
    x = np.concatenate([rng.normal(size=(50, 4)) - 2, rng.normal(size=(50, 4)) + 2])
    y = ["a"] * 50 + ["b"] * 50
    r = tstr(x, y, x, y)
    assert r["accuracy"] > 0.95 and r["macro_f1"] > 0.95
    assert tstr(x, ["a"] * 100, x, y)["accuracy"] is None


def test_table_entries_needing_absent_inputs_are_skipped(monkeypatch):
    """Memorization, TSTR and label agreement are table entries like the rest: computed where their
    inputs are given (a computed None stays, as null), absent from the set's values otherwise."""
    from synthsteer import metrics
    from synthsteer.metrics import Labelled, SetInputs, compute_metrics, label_classifier

    optional = ("memorization", "tstr", "label_agreement")
    monkeypatch.setattr(metrics, "METRICS", tuple(m for m in metrics.METRICS if m.key in optional))
    rng = np.random.default_rng(3)
    x = np.concatenate([rng.normal(size=(20, 4)) - 2, rng.normal(size=(20, 4)) + 2])
    y = ["a"] * 20 + ["b"] * 20
    bare = SetInputs(SENTENCES, x, SENTENCES, x)
    assert compute_metrics(bare) == {}
    full = SetInputs(SENTENCES, x, SENTENCES, x, train_texts=SENTENCES[:5], labels=y, tstr_train=Labelled(x, y),
                     tstr_test=Labelled(x, y), judge=label_classifier(x, y))
    values = compute_metrics(full)
    assert list(values) == list(optional)
    assert values["memorization"]["exact_rate"] == pytest.approx(5 / 40) and values["tstr"]["accuracy"] > 0.95
    assert values["label_agreement"] > 0.95
    no_judge = compute_metrics(SetInputs(SENTENCES, x, SENTENCES, x, labels=y))
    assert no_judge == {"label_agreement": None}  # labelled, but the real data had one class


def test_one_text_normalisation_and_label_lookup():
    from synthsteer.metrics import n_words, normalize_text, record_label

    assert normalize_text("  The CAT\tsat \n") == "the cat sat" and n_words(" a  b\nc ") == 3
    assert copy_scores(["THE cat  sat"], ["the cat sat"])[0]["exact"]  # memorization's "exact" is this one
    assert record_label({"label": "x", "provenance": {"label": "y"}}, "label") == "x"
    assert record_label({"provenance": {"label": "y"}}, "label") == "y"
    assert record_label({"text": "t"}, "label") is None
