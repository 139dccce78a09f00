"""Explore: how the learned encoders lay out the collection."""

from pianoapp.ui.components import availability_notice, explain


def build() -> None:
    explain("See how the models hear music: a map (UMAP) of every indexed piece's embedding, and how "
            "closely the audio and MIDI encoders agree layer by layer (CKA).")
    availability_notice("explore")
