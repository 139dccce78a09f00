"""Pieces every tab shares: the file preview (listen + piano roll or spectrogram), the plain
"not available yet" notice, examples from assets/, and turning errors into one sentence."""

import logging
from dataclasses import dataclass

import gradio as gr

from pianoapp import constants
from pianoapp.errors import PianoappError
from pianoapp.services.availability import missing_reason
from pianoapp.services.preview import preview_file

log = logging.getLogger(__name__)

GENERIC_ERROR = "Something went wrong on our side while handling this; it has been logged. Try another file."
KIND_LABELS = {"midi": "Notes, played on a piano", "audio": "Recording"}
SUFFIXES = {
    "midi": constants.SYMBOLIC_SUFFIXES,  # MIDI, MusicXML and the other scores music21 reads
    "audio": constants.AUDIO_SUFFIXES,
}


def user_message(err: Exception) -> str:
    """The sentence to show for a failure: a PianoappError's own words, anything else a generic
    sentence (the traceback goes to the log, never to the page)."""
    if isinstance(err, PianoappError):
        return str(err)
    log.error("unexpected error", exc_info=err)
    return GENERIC_ERROR


def warning_line(message: str) -> str:
    """A status line for a failure: the sentence as is, drawn as a warning by the app's CSS."""
    return f"> ⚠ {message}"


def explain(text: str) -> gr.Markdown:
    return gr.Markdown(text, elem_classes="tab-intro")


def availability_notice(capability: str) -> gr.Markdown | None:
    reason = missing_reason(capability)
    return gr.Markdown(reason, elem_classes="notice") if reason else None


def asset_examples(*kinds: str) -> list[str]:
    """Demo files in assets/ of the given kinds, found at run time."""
    suffixes = tuple(s for kind in kinds for s in SUFFIXES[kind])
    if not constants.ASSETS_DIR.is_dir():
        return []
    return sorted(str(p) for p in constants.ASSETS_DIR.iterdir() if p.suffix.lower() in suffixes)


@dataclass
class PreviewOutputs:
    status: gr.Markdown
    audio: gr.Audio
    plot: gr.Plot

    def as_list(self) -> list:
        return [self.audio, self.plot, self.status]


def preview_outputs(hint: str = "") -> PreviewOutputs:
    """A one-line summary, a player and the figure, filled by `show_preview`; hidden until then."""
    status = gr.Markdown(hint, elem_classes="preview-status")
    audio = gr.Audio(label="Listen", type="filepath", interactive=False, buttons=["download"], visible=False)
    plot = gr.Plot(show_label=False, visible=False)
    return PreviewOutputs(status, audio, plot)


def show_preview(path: str | None) -> tuple:
    """Updates for (audio, figure, summary line); on failure the line is the error's sentence."""
    hidden = gr.update(value=None, visible=False)
    if not path:
        return hidden, hidden, ""
    try:
        preview = preview_file(path)
    except Exception as err:  # noqa: BLE001 - every failure becomes one sentence on the page
        message = user_message(err)
        gr.Warning(message)
        return hidden, hidden, warning_line(message)
    return (
        gr.update(value=str(preview.wav_path), visible=True),
        gr.update(value=preview.figure, visible=True),
        f"**{KIND_LABELS[preview.kind]}** · {preview.summary}",
    )


def file_preview(label: str, *kinds: str) -> gr.File:
    """An upload box that previews what is dropped on it, with any matching demo files as examples."""
    suffixes = [s for kind in kinds for s in SUFFIXES[kind]]
    upload = gr.File(label=label, file_types=suffixes, type="filepath", height=140)
    examples = asset_examples(*kinds)
    if examples:
        gr.Examples([[p] for p in examples], inputs=upload, label="Demo files", examples_per_page=6)
    outputs = preview_outputs()
    upload.change(show_preview, upload, outputs.as_list(), show_progress="minimal")
    return upload
