"""transformers integration: hooks, the "ahn" attention function and the bounded cache."""
