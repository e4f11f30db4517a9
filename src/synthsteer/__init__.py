"""synthsteer: steer a frozen LLM to generate synthetic data that looks like a target dataset."""

__version__ = "0.1.0"
