"""SoftSRV (DeSalvo et al. 2024): a learned contextual soft prompt for a frozen LM."""

from .config import FitConfig, SoftPromptConfig
from .fit import fit_soft_prompt
from .prompt import SoftPrompt, load_soft_prompt

__all__ = ["FitConfig", "SoftPromptConfig", "fit_soft_prompt", "SoftPrompt", "load_soft_prompt"]
