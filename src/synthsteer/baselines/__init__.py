"""The baselines every method is compared with, through the same engine.

    config   the declarations of `--method plain` and `--method hard`, and what each reads
    method   their algorithms: BOS-only sampling, and zero-/few-shot hard prompts
"""
