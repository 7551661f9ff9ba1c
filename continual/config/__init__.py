"""Config checks: validation of a composed config and of command-line override keys."""
