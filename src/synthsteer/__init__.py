"""synthsteer: steer a frozen LLM to generate synthetic data that looks like a target dataset.

The names below load on first use, so that `import synthsteer` (and `synthsteer --help`) does not
import torch.
"""

from importlib import import_module

from ._version import __version__

_EXPORTS = {
    "DataSpec": ".data", "Record": ".data", "load_records": ".data",
    "Prefix": ".decoder", "decode": ".decoder", "SamplingConfig": ".options",
    "SynthsteerError": ".errors",
    "GenerateConfig": ".generation", "generate": ".generation",
    "load_lm": ".lm", "read_run": ".runs",
    "FitConfig": ".softsrv.config", "SoftPromptConfig": ".softsrv.config", "fit_soft_prompt": ".softsrv.fit",
    "SoftPrompt": ".softsrv.prompt", "load_soft_prompt": ".softsrv.prompt",
    "ExpertConfig": ".steer.config", "train_expert": ".steer.expert",
    "EvalConfig": ".evaluation", "evaluate": ".evaluation", "EvalReport": ".report",
    "FilterConfig": ".filter", "filter_run": ".filter",
    "StudentConfig": ".student.config", "run_students": ".student.run", "StudentResults": ".student.results",
    "ExportConfig": ".export", "export_runs": ".export", "to_dataset": ".export",
}
__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
