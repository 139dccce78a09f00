"""Held-out metrics and protocols, one module per capability (e.g. `lm.py`: NLL against an n-gram)."""
