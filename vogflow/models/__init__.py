"""Model architectures by name (``architectures``); input shape and class count come from the
dataset."""
