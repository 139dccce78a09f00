"""Arrange: a lead sheet becomes a piano part in the style of a reference recording.

Both inputs preview as they are dropped in; the demo buttons load the Playford lead sheet with one of
the demo recordings. The result plays, downloads as a two-track MIDI, and is drawn with melody and
accompaniment in two colours.
"""

from collections.abc import Iterator

import gradio as gr

from pianoapp import constants
from pianoapp.io.leadsheet import MAX_BARS
from pianoapp.services.arrange import DEFAULT_BARS, arrange
from pianoapp.ui.components import (
    availability_notice,
    explain,
    file_preview,
    preview_outputs,
    user_message,
    warning_line,
)

DEMO_LEADSHEET = "nottingham_playford14_lead_sheet.mid"
DEMO_REFERENCES = {  # button label → recording in assets/
    "ragtime (Maple Leaf Rag)": "joplin_maple_leaf_rag_opening.flac",
    "gentle broken chords": "pedal_arpeggios.flac",
    "pop ballad (POP909)": "pop909_piano_reference.flac",
    "classical (Mozart K. 545)": "mozart_k545_opening.flac",
}


def build() -> None:
    explain("Give a lead sheet (a melody with chords: MIDI or a score) and a reference recording; the "
            "arranger writes a piano accompaniment for the tune in the reference's style. The melody "
            "stays as written, on its own track.")
    availability_notice("arrange")
    with gr.Row(equal_height=False):
        with gr.Column():
            leadsheet = file_preview("Lead sheet: melody and chords (MIDI or score)", "midi")
        with gr.Column():
            reference = file_preview("Style reference: a recording (optional)", "audio")
    demos = {label: name for label, name in DEMO_REFERENCES.items()
             if (constants.ASSETS_DIR / name).is_file() and (constants.ASSETS_DIR / DEMO_LEADSHEET).is_file()}
    if demos:
        with gr.Row(equal_height=True):
            gr.Markdown("**Demo:** a Playford dance (Nottingham) arranged as", elem_classes="tab-intro")
            for label, name in demos.items():
                pair = (str(constants.ASSETS_DIR / DEMO_LEADSHEET), str(constants.ASSETS_DIR / name))
                gr.Button(label, size="sm").click(lambda pair=pair: pair, None, [leadsheet, reference])
    with gr.Row(equal_height=True):
        bars = gr.Slider(1, MAX_BARS, value=DEFAULT_BARS, step=1, label="Bars to arrange",
                         info=f"from the start of the lead sheet; at most {MAX_BARS}", scale=3)
        seed = gr.Number(0, precision=0, minimum=0, label="Seed", info="same seed, same arrangement", scale=1)
    chords = gr.Textbox(label="Chords (optional)", placeholder="C G Am F | F G C C",
                        info="one group per bar, bars separated by |; replaces the lead sheet's own chords")
    start = gr.Button("Arrange", variant="primary")
    result = preview_outputs("Give a lead sheet (and a reference, or none for the default style), then press "
                             "Arrange.")
    download = gr.DownloadButton("Download MIDI", visible=False)
    start.click(run, [leadsheet, reference, bars, seed, chords],
                [result.audio, result.plot, result.status, download], show_progress="minimal")


def run(leadsheet: str | None, reference: str | None, bars, seed, chords: str | None) -> Iterator[tuple]:
    """Updates for (audio, piano roll, status, download): a working line, then the arrangement or
    the failure's one sentence."""
    if not leadsheet:
        yield _failed("Upload a lead sheet (MIDI or score with a melody) or press a demo button first.")
        return
    style = "the default style" if not reference else "the reference's style"
    working = f"Arranging {int(bars)} bars in {style}…"
    yield gr.update(value=None), gr.update(), working, gr.update(visible=False)
    try:
        done = arrange(leadsheet, reference or None, bars=int(bars), seed=int(seed),
                       chords_text=chords or None)
    except Exception as err:  # noqa: BLE001 - every failure becomes one sentence on the page
        yield _failed(user_message(err))
        return
    status = f"**Arranged** · {done.summary()} · seed {int(seed)}"
    yield (
        gr.update(value=str(done.saved.wav_path), visible=True),
        gr.update(value=done.figure(), visible=True),
        "\n\n".join([status, *done.notices]),
        gr.update(value=str(done.saved.midi_path), visible=True),
    )


def _failed(message: str) -> tuple:
    gr.Warning(message)
    return gr.update(), gr.update(), warning_line(message), gr.update()
