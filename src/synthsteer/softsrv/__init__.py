"""SoftSRV (DeSalvo et al. 2024): a learned contextual soft prompt for a frozen LM.

    config   FitConfig (the `fit` run), SoftPromptConfig (the prompt's shape), SoftSRVOptions (sampling)
    prompt   the three parameterizations (nsp, mp, mc) as one module
    fit      training the prompt against the frozen LM
    method   `--method softsrv`, and the soft-prompt branch SoftSRV + STEER composes
"""

from importlib import import_module

_EXPORTS = {"FitConfig": ".config", "SoftPromptConfig": ".config", "SoftSRVOptions": ".config",
            "fit_soft_prompt": ".fit", "SoftPrompt": ".prompt", "load_soft_prompt": ".prompt"}
__all__ = list(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
