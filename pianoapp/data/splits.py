"""Piece-disjoint train/val/test splits.

A piece's split is a hash of its `piece_id`, so it never depends on which other files are present,
and every performance and score of a piece lands in the same split.
"""

import hashlib

SPLITS = ("train", "val", "test")
FRACTIONS = (0.8, 0.1, 0.1)


def split_of(piece_id: str) -> str:
    """'train', 'val' or 'test' for a piece, deterministically (80/10/10 over many pieces)."""
    digest = hashlib.sha256(piece_id.encode("utf-8")).digest()
    position = int.from_bytes(digest[:8], "big") / 2**64
    edge = 0.0
    for split, fraction in zip(SPLITS, FRACTIONS):
        edge += fraction
        if position < edge:
            return split
    return SPLITS[-1]
