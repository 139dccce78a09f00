"""Arrange: a lead sheet becomes a piano part in the style of a reference recording."""

import gradio as gr

from pianoapp.ui.components import availability_notice, explain, file_preview


def build() -> None:
    explain("Give a lead sheet (melody and chords) and a reference recording; "
            "the arranger writes a piano part for the tune in the reference's style.")
    availability_notice("arrange")
    with gr.Row(equal_height=False):
        with gr.Column():
            file_preview("Lead sheet (MIDI or score)", "midi")
        with gr.Column():
            file_preview("Style reference (recording)", "audio")
