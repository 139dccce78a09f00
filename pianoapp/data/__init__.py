"""Training and demo data: corpora, piece-disjoint splits, attributes from notes, captions."""
