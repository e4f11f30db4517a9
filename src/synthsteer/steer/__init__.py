"""STEER (O'Neill et al. 2023): contrastive expert guidance and negative prompting at decoding time."""

from .config import ExpertConfig
from .expert import load_expert, train_expert
from .negatives import NegativePool, negative_prompt
from .score import steer_combine, steer_score

__all__ = ["ExpertConfig", "load_expert", "train_expert", "NegativePool", "negative_prompt",
           "steer_combine", "steer_score"]
