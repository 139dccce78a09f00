"""Held-out metrics and protocols, one module per model family (`lm.py`: NLL against an n-gram)."""
