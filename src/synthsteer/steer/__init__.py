"""STEER (O'Neill et al. 2023): contrastive expert guidance and negative prompting at decoding time.

    config     ExpertConfig (the LoRA expert's training run), SteerOptions (decoding knobs)
    expert     training and loading the LoRA expert (peft)
    score      the STEER score, the formula as a pure function
    negatives  the negative pool and the negative prompt
    method     `--method steer`
"""

from importlib import import_module

_EXPORTS = {"ExpertConfig": ".config", "SteerOptions": ".config", "load_expert": ".expert", "train_expert": ".expert",
            "NegativePool": ".negatives", "negative_prompt": ".negatives", "steer_combine": ".score",
            "steer_score": ".score"}
__all__ = list(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
