"""synthsteer: steer a frozen LLM to generate synthetic data that looks like a target dataset."""

from ._version import __version__
from .data import DataSpec, Record, load_records
from .decoder import Prefix, SamplingConfig, decode
from .errors import SynthsteerError
from .generation import GenerateConfig, generate
from .lm import load_lm
from .runs import read_run
from .softsrv import FitConfig, SoftPrompt, SoftPromptConfig, fit_soft_prompt, load_soft_prompt

__all__ = [
    "__version__",
    "DataSpec", "Record", "load_records", "Prefix", "SamplingConfig", "decode", "SynthsteerError",
    "GenerateConfig", "generate", "load_lm", "read_run", "FitConfig", "SoftPrompt", "SoftPromptConfig",
    "fit_soft_prompt", "load_soft_prompt",
]
