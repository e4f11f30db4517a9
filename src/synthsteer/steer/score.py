"""The STEER score (O'Neill et al. 2023), on log-softmax log-probabilities of the three branches:

    s(v) = (1 + gamma) log p_E(v | c, x<t)  -  gamma log p_B(v | c, x<t)  -  eta log p_E(v | n, x<t)

then renormalised and sampled. gamma = eta = 0 is sampling from the expert.
"""

import torch

BRANCHES = ("expert", "base", "negative")  # the named branches of every STEER sample, in this order
EXPERT, BASE, NEGATIVE = range(len(BRANCHES))


def steer_score(expert: torch.Tensor, base: torch.Tensor, negative: torch.Tensor, gamma: float, eta: float) -> torch.Tensor:
    """Contrastive expert guidance plus negative prompting; the caller renormalises."""
    return (1 + gamma) * expert - gamma * base - eta * negative


def steer_combine(gamma: float, eta: float):
    """The decoder's combine rule: log-probs [B, 3, V] in (expert, base, negative) order -> scores."""

    def combine(logprobs: torch.Tensor, **_) -> torch.Tensor:
        return steer_score(logprobs[:, EXPERT], logprobs[:, BASE], logprobs[:, NEGATIVE], gamma, eta)

    return combine
