"""Metrics that say whether synthetic text looks like the real thing."""

from __future__ import annotations

import numpy as np


def distinct_n(texts: list[str], n: int = 2) -> float:
    """Share of distinct word n-grams among all word n-grams of the set (Li et al. 2016)."""
    grams = [tuple(words[i: i + n]) for words in (t.split() for t in texts) for i in range(len(words) - n + 1)]
    return len(set(grams)) / len(grams) if grams else 0.0


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
        from .errors import SynthsteerError

        raise SynthsteerError("MAUVE needs the optional extra: pip install 'synthsteer[eval]'") from None
    scores = [mauve.compute_mauve(p_features=np.asarray(p_features), q_features=np.asarray(q_features),
                                  seed=s, mauve_scaling_factor=scaling_factor, verbose=False).mauve
              for s in seeds]
    return {"mean": float(np.mean(scores)), "std": float(np.std(scores)), "scores": [float(s) for s in scores],
            "n_p": len(p_features), "n_q": len(q_features), "scaling_factor": scaling_factor}
