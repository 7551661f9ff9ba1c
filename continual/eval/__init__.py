"""Evaluation: holdout loss, the prompted baseline, lm-eval tasks (writing our holdout tasks,
running any task), and the suite the recipe runs after every stage."""
