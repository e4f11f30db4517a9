"""synthsteer: steer a frozen LLM to generate synthetic data that looks like a target dataset."""

__version__ = "0.1.0"

from .data import DataSpec, Record, load_records  # noqa: E402
from .decoder import Prefix, SamplingConfig, decode  # noqa: E402
from .errors import SynthsteerError  # noqa: E402
from .generation import GenerateConfig, generate  # noqa: E402
from .lm import load_lm  # noqa: E402
from .runs import read_run  # noqa: E402
from .softsrv import FitConfig, SoftPrompt, SoftPromptConfig, fit_soft_prompt, load_soft_prompt  # noqa: E402

__all__ = [
    "DataSpec", "Record", "load_records", "Prefix", "SamplingConfig", "decode", "SynthsteerError",
    "GenerateConfig", "generate", "load_lm", "read_run", "FitConfig", "SoftPrompt", "SoftPromptConfig",
    "fit_soft_prompt", "load_soft_prompt",
]
