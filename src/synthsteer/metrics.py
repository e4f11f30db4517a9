"""Metrics that say whether synthetic text looks like the real thing.

Small functions with explicit arguments, each computing one number (or one small dict) from texts
or embedding matrices; `evaluation.py` decides which to run on what.

Fidelity:     mauve_score, knn_precision_recall, nearest_cosine
Diversity:    distinct_n, steer_diversity, self_bleu, compression_ratio, vendi_score
Authenticity: authenticity_auroc
Memorization: memorization
Downstream:   tstr, label_agreement
Students:     target_loss, choice_accuracy, gsm8k_answer / exact_match, pass_at_1

`METRICS` is the table of what `synthsteer eval` computes for every set and how the report shows
it: every number of a report comes from one entry there. `STUDENT_METRICS` is the same for what
`synthsteer student` scores a fine-tuned student by, on real held-out records.
"""

from __future__ import annotations

import functools
import gzip
import math
import numbers
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from .errors import SynthsteerError

# The fewest samples a set can be scored with: the authenticity classifier's 2-fold cross-validation
# needs 2 per side (and a k-NN ball a neighbour). The real data, split in two halves for the
# real-vs-real ceiling, needs twice that.
MIN_SAMPLES = 2


def words(text: str) -> list[str]:
    """Word and punctuation tokens, lower-cased: what the n-gram metrics count."""
    return re.findall(r"\w+|[^\w\s]", text.lower())


def normalize_text(text: str) -> str:
    """A text up to case and whitespace: what counts as "the same text" for exact copies (eval's
    memorization, filter's decontamination) and for filter's duplicates alike."""
    return " ".join(text.lower().split())


def n_words(text: str) -> int:
    """Whitespace-separated words: the length the report shows and filter's --min-length counts."""
    return len(text.split())


def _ngrams(tokens: list[str], n: int) -> list[tuple[str, ...]]:
    return [tuple(tokens[i: i + n]) for i in range(len(tokens) - n + 1)]


# ---------------------------------------------------------------- diversity


def distinct_n(texts: list[str], n: int = 2) -> float:
    """Distinct n-grams / all n-grams over the whole set (Li et al. 2016). 1 = no n-gram repeats."""
    grams = [g for t in texts for g in _ngrams(words(t), n)]
    return len(set(grams)) / len(grams) if grams else 0.0


def steer_diversity(texts: list[str]) -> float:
    """The STEER paper's diversity, prod_{n=2..4} (1 - rep_n) with rep_n = 1 - distinct_n."""
    return float(np.prod([distinct_n(texts, n) for n in (2, 3, 4)]))


def self_bleu(texts: list[str], *, n_hypotheses: int = 100, n_references: int = 100, seed: int = 0) -> float:
    """Mean BLEU-4 of samples against other samples of the same set (Zhu et al. 2018); lower is more
    diverse. Each hypothesis is scored against a seeded random subsample of the *other* samples."""
    from nltk.translate.bleu_score import SmoothingFunction, sentence_bleu

    if len(texts) < 2:
        return 0.0
    rng = np.random.default_rng(seed)
    tokens = [words(t) for t in texts]
    hyps = rng.choice(len(texts), size=min(n_hypotheses, len(texts)), replace=False)
    smooth = SmoothingFunction().method1
    scores = []
    for h in hyps:
        others = np.delete(np.arange(len(texts)), h)
        refs = rng.choice(others, size=min(n_references, len(others)), replace=False)
        scores.append(sentence_bleu([tokens[r] for r in refs], tokens[h], smoothing_function=smooth))
    return float(np.mean(scores))


def compression_ratio(texts: list[str]) -> float:
    """Bytes of the joined set / bytes gzipped (Shaib et al. 2024); higher is more repetitive."""
    raw = "\n".join(texts).encode("utf-8")
    return len(raw) / len(gzip.compress(raw, mtime=0)) if raw else 0.0


def vendi_score(embeddings: np.ndarray) -> float:
    """Vendi score (Friedman & Dieng 2023): exp of the entropy of the eigenvalues of K/n, with K the
    cosine-similarity matrix; the effective number of distinct samples, from 1 to n."""
    x = embeddings / np.linalg.norm(embeddings, axis=1, keepdims=True).clip(1e-12)
    eig = np.linalg.eigvalsh(x @ x.T / len(x)).clip(0)
    eig = eig[eig > 1e-12]
    return float(np.exp(-(eig * np.log(eig)).sum()))


# ---------------------------------------------------------------- fidelity


def mauve_score(p_features: np.ndarray, q_features: np.ndarray, seeds: tuple[int, ...] = (0, 1, 2),
                scaling_factor: float = 5.0) -> dict:
    """MAUVE (Pillutla et al. 2021) between two feature sets, as mean and std over k-means seeds.

    Args:
        p_features: [n_p, d] features of one text set (e.g. real held-out data).
        q_features: [n_q, d] features of the other (e.g. synthetic data).
        seeds: k-means seeds; the score moves by ~0.01 between seeds, hence several.
        scaling_factor: MAUVE's divergence-curve scaling (the package default, 5).
    """
    try:
        import mauve
    except ImportError:
        raise SynthsteerError("MAUVE needs the optional extra: pip install 'synthsteer[eval]'") from None
    from .logs import native_stderr_to_log

    with native_stderr_to_log():
        scores = [mauve.compute_mauve(p_features=np.asarray(p_features), q_features=np.asarray(q_features),
                                      seed=s, mauve_scaling_factor=scaling_factor, verbose=False).mauve
                  for s in seeds]
    return {"mean": float(np.mean(scores)), "std": float(np.std(scores)), "scores": [float(s) for s in scores],
            "n_p": len(p_features), "n_q": len(q_features), "scaling_factor": scaling_factor}


def _pairwise_dist(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    d2 = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2 * a @ b.T
    return np.sqrt(d2.clip(0))


def knn_precision_recall(real: np.ndarray, synthetic: np.ndarray, k: int = 3) -> dict:
    """Improved precision and recall (Kynkaanniemi et al. 2019): each point's manifold ball has the
    radius of its k-th nearest neighbour within its own set. Precision = share of synthetic points
    inside some real ball (fidelity); recall = share of real points inside some synthetic ball
    (coverage)."""

    def radii(x):
        d = _pairwise_dist(x, x)
        return np.sort(d, axis=1)[:, min(k, len(x) - 1)]

    cross = _pairwise_dist(synthetic, real)  # [n_s, n_r]
    precision = (cross <= radii(real)[None, :]).any(1).mean()
    recall = (cross <= radii(synthetic)[:, None]).any(0).mean()
    out = {"precision": float(precision), "recall": float(recall), "k": k}
    if min(len(real), len(synthetic)) <= k:  # a set of n has n-1 neighbours: say that k was lowered
        out["knn_note"] = f"k lowered to {min(len(real), len(synthetic)) - 1} on the smaller side (n <= k={k})"
    return out


def nearest_cosine(real: np.ndarray, synthetic: np.ndarray) -> float:
    """Mean, over synthetic samples, of the cosine similarity to the nearest real sample."""
    r = real / np.linalg.norm(real, axis=1, keepdims=True).clip(1e-12)
    s = synthetic / np.linalg.norm(synthetic, axis=1, keepdims=True).clip(1e-12)
    return float((s @ r.T).max(1).mean())


# ---------------------------------------------------------------- authenticity and downstream


def authenticity_auroc(real: np.ndarray, synthetic: np.ndarray, *, folds: int = 5, seed: int = 0) -> float | None:
    """AUROC of a logistic-regression real-vs-synthetic classifier on embeddings, from out-of-fold
    predictions of seeded stratified k-fold; 0.5 = indistinguishable, 1 = trivially told apart.

    Identical embeddings share a fold: otherwise a synthetic copy of a real sample trains the
    classifier against its twin and drives the AUROC below 0.5 instead of to it."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import StratifiedGroupKFold, cross_val_predict

    x = np.concatenate([real, synthetic])
    y = np.concatenate([np.zeros(len(real)), np.ones(len(synthetic))])
    folds = min(folds, len(real), len(synthetic))
    if folds < 2:
        raise SynthsteerError("authenticity needs at least 2 real and 2 synthetic samples")
    groups = np.unique(np.round(x, 5), axis=0, return_inverse=True)[1].reshape(-1)
    if groups.max() == 0:
        return 0.5  # every embedding is the same point: nothing to tell apart
    folds = min(folds, int(groups.max()) + 1)
    splits = list(StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed).split(x, y, groups))
    if any(len(np.unique(y[train])) < 2 for train, _ in splits):
        return None  # twins of tiny sets left a fold one class to learn from: not computable (shown as '–')
    p = cross_val_predict(LogisticRegression(max_iter=2000), x, y, cv=splits, method="predict_proba")[:, 1]
    return float(roc_auc_score(y, p))


def label_values(values: list, where: str) -> list:
    """One set's labels as classes a classifier can learn: strings, integers or booleans, one type per
    set. A float with an integral value counts as that integer (pandas writes an int column with gaps
    as 1.0); any other value (0.5, NaN, null, a list, a mapping) is refused in one line naming `where`
    (the set and the field): scikit-learn would crash on it, or it is a regression target."""
    out = []
    for i, v in enumerate(values):
        if isinstance(v, (bool, np.bool_)):
            v = bool(v)
        elif isinstance(v, numbers.Integral) or (isinstance(v, numbers.Real) and math.isfinite(v)
                                                 and float(v).is_integer()):
            v = int(v)
        elif isinstance(v, str):
            v = str(v)  # numpy's str_ too, so that one type is one type
        else:
            what = ("null" if v is None else f"the float {v!r} (labels are classes, not a regression target)"
                    if isinstance(v, numbers.Real) else f"a {type(v).__name__} ({repr(v)[:40]})")
            raise SynthsteerError(f"{where}: label {i + 1} is {what}; labels are strings, integers or booleans")
        out.append(v)
    first = {}
    for v in out:
        first.setdefault(type(v).__name__, v)
    if len(first) > 1:  # [1, "1"] would be two classes; [True, 1] one class or two depending on the library
        raise SynthsteerError(f"{where}: labels mix {' and '.join(f'{k} ({v!r})' for k, v in sorted(first.items()))}; "
                              "give every row the same type")
    return out


def record_label(record: dict, field: str):
    """A run record's label: its top-level `field` (a data file's column, `generate --label-field`),
    else the same key of its provenance (None when neither has it)."""
    return record.get(field, (record.get("provenance") or {}).get(field))


def tstr(train_x: np.ndarray, train_y: list, test_x: np.ndarray, test_y: list, *, seed: int = 0) -> dict:
    """Train a logistic-regression classifier on (train_x, train_y), test on (test_x, test_y):
    accuracy and macro-F1. With synthetic training data this is train-on-synthetic/test-on-real."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import accuracy_score, f1_score

    if len(set(train_y)) < 2:
        return {"accuracy": None, "macro_f1": None, "n_train": len(train_y), "n_test": len(test_y),
                "note": f"training labels have a single class ({sorted(set(map(str, train_y)))})"}
    clf = LogisticRegression(max_iter=2000, random_state=seed).fit(train_x, train_y)
    pred = clf.predict(test_x)
    return {"accuracy": float(accuracy_score(test_y, pred)),
            "macro_f1": float(f1_score(test_y, pred, average="macro")),
            "n_train": len(train_y), "n_test": len(test_y)}


def label_classifier(x: np.ndarray, y: list, *, seed: int = 0):
    """A logistic-regression judge of labels, trained on the real data's embeddings (None: one class)."""
    from sklearn.linear_model import LogisticRegression

    if len(set(y)) < 2:
        return None
    return LogisticRegression(max_iter=2000, random_state=seed).fit(x, y)


def label_agreement(judge, x: np.ndarray, labels: list) -> float | None:
    """Share of records whose intended label the real-data judge also predicts: do the labels hold?"""
    if judge is None:
        return None
    pred = judge.predict(x)
    return float(np.mean([str(p) == str(lab) for p, lab in zip(pred, labels)]))


# ---------------------------------------------------------------- memorization


def _shingles(text: str, k: int = 5) -> set[str]:
    t = normalize_text(text)
    return {t[i: i + k] for i in range(max(1, len(t) - k + 1))}


def copy_scores(synthetic: list[str], reference: list[str], *, near_threshold: float = 0.8, ngram: int = 13,
                num_perm: int = 128, seed: int = 0) -> list[dict]:
    """Per synthetic sample, how it copies the reference texts: `exact` (identical up to case and
    whitespace), `jaccard` and `match` (the most similar reference by character-5-gram Jaccard among
    MinHash-LSH candidates at `near_threshold`, confirmed exactly; 0 and -1 when none), `verbatim`
    (contains a run of `ngram` words that occurs in the reference)."""
    index = _copy_index(tuple(reference), near_threshold, ngram, num_perm, seed)
    return [index.score(text) for text in synthetic]


class _CopyIndex:
    """The reference side of `copy_scores`, built once per reference: an eval scores many sets
    against one training set, and hashing thousands of training texts dominated its time."""

    def __init__(self, reference: tuple[str, ...], near_threshold: float, ngram: int, num_perm: int, seed: int):
        from datasketch import MinHashLSH

        self.ngram, self.num_perm, self.seed = ngram, num_perm, seed
        self.norm = {normalize_text(t) for t in reference}
        self.shingles = [_shingles(t) for t in reference]
        self.lsh = MinHashLSH(threshold=near_threshold, num_perm=num_perm)
        for i, sh in enumerate(self.shingles):
            self.lsh.insert(str(i), self.minhash(sh))
        self.grams = {g for t in reference for g in _ngrams(words(t), ngram)}

    def minhash(self, shingles):
        from datasketch import MinHash

        m = MinHash(num_perm=self.num_perm, seed=self.seed)
        m.update_batch([x.encode("utf-8") for x in shingles])
        return m

    def score(self, text: str) -> dict:
        sh = _shingles(text)
        scored = [(len(sh & self.shingles[c]) / len(sh | self.shingles[c]), c)
                  for c in map(int, self.lsh.query(self.minhash(sh)))]
        jac, match = max(scored) if scored else (0.0, -1)
        return {"exact": normalize_text(text) in self.norm, "jaccard": jac, "match": match,
                "verbatim": any(g in self.grams for g in _ngrams(words(text), self.ngram))}


_copy_index = functools.lru_cache(maxsize=2)(_CopyIndex)


def memorization(synthetic: list[str], train: list[str], *, near_threshold: float = 0.8, ngram: int = 13,
                 worst: int = 10, seed: int = 0) -> dict:
    """How much of the synthetic set copies the training data: the shares of exact copies, near
    copies (character-5-gram Jaccard >= `near_threshold`) and samples containing a verbatim
    `ngram`-word run of the training data, and the `worst` offenders."""
    scores = copy_scores(synthetic, train, near_threshold=near_threshold, ngram=ngram, seed=seed)
    flagged = [i for i, c in enumerate(scores) if c["exact"] or c["jaccard"] >= near_threshold or c["verbatim"]]
    flagged.sort(key=lambda i: (-scores[i]["exact"], -scores[i]["jaccard"], -scores[i]["verbatim"]))
    n = max(1, len(synthetic))
    return {
        "exact_rate": sum(c["exact"] for c in scores) / n,
        "near_rate": sum(c["jaccard"] >= near_threshold for c in scores) / n,
        "verbatim_rate": sum(c["verbatim"] for c in scores) / n,
        "near_threshold": near_threshold, "ngram": ngram,
        "worst": [{"synthetic": synthetic[i], "train": train[scores[i]["match"]] if scores[i]["match"] >= 0 else None,
                   "jaccard": round(scores[i]["jaccard"], 4), "exact": scores[i]["exact"],
                   "verbatim_ngram": scores[i]["verbatim"]} for i in flagged[:worst]],
    }


# ---------------------------------------------------------------- the metric table


@dataclass(frozen=True)
class Labelled:
    """Embeddings with their labels: what a classifier trains or is tested on."""

    x: np.ndarray
    y: list


@dataclass(frozen=True)
class SetInputs:
    """What a per-set metric may read: the set's texts and features, the real ones, the settings, and
    what only some evaluations have (None: absent, and the entries that need it are skipped).

    train_texts: the data the generator learned from (--train), for memorization; None for the
        real-vs-real ceiling, whose texts are real by construction.
    labels: the set's labels (--label-field), aligned with `texts`, for label agreement.
    tstr_train / tstr_test: what the TSTR classifier trains and is tested on: the set's labelled
        embeddings / the held-out real half. The ceiling trains on the other real half instead
        (train-on-real), which is why this is not simply `feats` and `labels`.
    judge: a classifier of the real labels (`label_classifier`; None when the real data has one
        class, and label agreement is then None)."""

    texts: list[str]
    feats: np.ndarray
    real_texts: list[str]
    real_feats: np.ndarray
    seed: int = 0
    mauve_seeds: tuple[int, ...] = (0, 1, 2)
    knn_k: int = 3
    train_texts: list[str] | None = None
    labels: list | None = None
    tstr_train: Labelled | None = None
    tstr_test: Labelled | None = None
    judge: Any = None


def mean_std(v: dict) -> str:
    """A score over seeds (MAUVE) as a cell: mean ± std."""
    return f"{v['mean']:.3f} ± {v['std']:.3f}"


def _copied(m: dict) -> str:
    return f"{m['exact_rate']:.1%} / {m['near_rate']:.1%} / {m['verbatim_rate']:.1%}"


def _accuracy_f1(t: dict) -> str | None:
    return f"{t['accuracy']:.3f} / {t['macro_f1']:.3f}" if t.get("accuracy") is not None else None


@dataclass(frozen=True)
class Metric:
    """One entry of the evaluation. `compute` gives its value, or, with `keys`, a dict of several
    values (an entry without `compute` is shown from such a dict); `applies` says for which sets it
    is computed at all (None: every set; a skipped entry has no key in the report, while a computed
    None is saved as null); `title`, `better` (an arrow) and `fmt` (a format string of the value, or
    a function of it giving the cell, None for "–") say how the report shows it; an entry without a
    title is computed and saved but not shown in the tables. A new metric is one entry here."""

    key: str
    title: str | None = None
    better: str = ""
    fmt: str | Callable[[Any], str | None] = "{:.3f}"
    compute: Callable[[SetInputs], Any] | None = None
    keys: tuple[str, ...] = ()
    applies: Callable[[SetInputs], bool] | None = None

    def show(self, value) -> str | None:
        """The value as a table cell; None when there is nothing to show."""
        if value is None:
            return None
        return self.fmt(value) if callable(self.fmt) else self.fmt.format(value)


METRICS: tuple[Metric, ...] = (
    Metric("n", "n", "", "{:d}", lambda x: len(x.texts)),
    Metric("mauve", "MAUVE", "↑", mean_std, lambda x: mauve_score(x.real_feats, x.feats, seeds=x.mauve_seeds)),
    Metric("knn", compute=lambda x: knn_precision_recall(x.real_feats, x.feats, k=x.knn_k), keys=("precision", "recall")),
    Metric("precision", "precision", "↑"),
    Metric("recall", "recall", "↑"),
    Metric("nearest_cosine", "NN cosine", "↑", compute=lambda x: nearest_cosine(x.real_feats, x.feats)),
    Metric("auroc", "AUROC", "→0.5", compute=lambda x: authenticity_auroc(x.real_feats, x.feats, seed=x.seed)),
    Metric("distinct_1", compute=lambda x: distinct_n(x.texts, 1)),
    Metric("distinct_2", "distinct-2", "↑", compute=lambda x: distinct_n(x.texts, 2)),
    Metric("distinct_3", compute=lambda x: distinct_n(x.texts, 3)),  # also the "unique 3-gram ratio"
    Metric("steer_diversity", "diversity", "↑", compute=lambda x: steer_diversity(x.texts)),
    Metric("self_bleu", "self-BLEU", "↓", compute=lambda x: self_bleu(x.texts, seed=x.seed)),
    Metric("compression_ratio", "compression", "↓", "{:.2f}", lambda x: compression_ratio(x.texts)),
    Metric("vendi", "Vendi", "↑", "{:.1f}", lambda x: vendi_score(x.feats)),
    Metric("mean_words", "words", "", "{:.1f}", lambda x: float(np.mean([n_words(t) for t in x.texts]))),
    Metric("memorization", "copied exact / near / 13-gram", "", _copied,
           lambda x: memorization(x.texts, x.train_texts, seed=x.seed), applies=lambda x: x.train_texts is not None),
    Metric("tstr", "TSTR acc / F1", "", _accuracy_f1,
           lambda x: tstr(x.tstr_train.x, x.tstr_train.y, x.tstr_test.x, x.tstr_test.y, seed=x.seed),
           applies=lambda x: x.tstr_train is not None and x.tstr_test is not None),
    Metric("label_agreement", "labels hold", "↑", "{:.1%}", lambda x: label_agreement(x.judge, x.feats, x.labels),
           applies=lambda x: x.labels is not None),
)


# what each generated field of records is scored by (eval's table per field): closeness, diversity, length
FIELD_METRICS = ("n", "mauve", "distinct_2", "steer_diversity", "mean_words")


def compute_metrics(inputs: SetInputs, keys: tuple[str, ...] | None = None) -> dict:
    """Every metric of the table that applies to one set (or only those of `keys`), in table order."""
    out: dict = {}
    for m in METRICS:
        if keys is not None and m.key not in keys:
            continue
        if m.compute is None or (m.applies is not None and not m.applies(inputs)):
            continue
        value = m.compute(inputs)
        if m.keys:
            out.update(value)
        else:
            out[m.key] = value
    return out


# ---------------------------------------------------------------- students: does the data teach?


def target_loss(nll: list[float], tokens: list[int]) -> float:
    """Mean NLL per target token over held-out records (summed NLLs over summed token counts): how
    well a student predicts the real targets, for every task."""
    return float(sum(nll) / max(sum(tokens), 1))


def choice_accuracy(choice_nll: list[list[float]], gold: list[int | None]) -> float:
    """Share of records whose gold value has the highest log-likelihood among the closed set's values
    (lm-evaluation-harness's `acc` for multiple choice); a gold value outside the set counts as wrong.
    Ties go to the first value, so a constant score is not a lucky guess."""
    right = [g is not None and int(np.argmin(s)) == g for s, g in zip(choice_nll, gold)]
    return float(np.mean(right)) if right else 0.0


GSM8K_ANSWER = re.compile(r"#### (\-?[0-9\.\,]+)")  # grade-school-math's dataset.py


def gsm8k_answer(text: str) -> str | None:
    """The final number of a GSM8K solution, the way the GSM8K paper's code extracts it: the number
    after "#### ", commas removed; None when there is none (an invalid answer)."""
    m = GSM8K_ANSWER.search(text)
    return m.group(1).strip().replace(",", "") if m else None


def exact_match(predicted: list[str | None], gold: list[str | None]) -> float:
    """Share of records whose extracted answer equals the gold one (an invalid prediction is wrong)."""
    right = [p is not None and p == g for p, g in zip(predicted, gold)]
    return float(np.mean(right)) if right else 0.0


def pass_at_1(passed: list[bool]) -> float:
    """Share of tasks whose one greedy program passes all of the task's tests (Chen et al. 2021's
    pass@k at k = n = 1)."""
    return float(np.mean(passed)) if passed else 0.0


@dataclass(frozen=True)
class StudentOutputs:
    """What a student did on the held-out records, per record (None: not scored that way).

    target_nll / target_tokens: summed NLL of each gold target and its token count.
    choice_nll / gold_choice: each closed-set value's summed NLL, and the gold value's index.
    answers / gold_answers: the extracted final answers (GSM8K) of the greedy output and of the record.
    passed: whether the greedy program passed the task's tests (MBPP)."""

    target_nll: list[float]
    target_tokens: list[int]
    choice_nll: list[list[float]] | None = None
    gold_choice: list[int | None] | None = None
    answers: list[str | None] | None = None
    gold_answers: list[str | None] | None = None
    passed: list[bool] | None = None


STUDENT_METRICS: tuple[Metric, ...] = (
    Metric("loss", "target loss", "↓", "{:.3f}", lambda o: target_loss(o.target_nll, o.target_tokens)),
    Metric("accuracy", "accuracy", "↑", "{:.1%}", lambda o: choice_accuracy(o.choice_nll, o.gold_choice),
           applies=lambda o: o.choice_nll is not None),
    Metric("exact_match", "exact match", "↑", "{:.1%}", lambda o: exact_match(o.answers, o.gold_answers),
           applies=lambda o: o.answers is not None),
    Metric("pass_at_1", "pass@1", "↑", "{:.1%}", lambda o: pass_at_1(o.passed), applies=lambda o: o.passed is not None),
)


def student_metrics(outputs: StudentOutputs) -> dict[str, float]:
    """Every student metric that applies to `outputs`, in table order."""
    return {m.key: m.compute(outputs) for m in STUDENT_METRICS if m.applies is None or m.applies(outputs)}
