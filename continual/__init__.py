"""continual: continual-learning experiments for LLM fine-tuning."""

__version__ = "0.1.0"
