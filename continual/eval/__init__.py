"""Evaluators: holdout loss, the prompted baseline and the lm-eval bridge."""
