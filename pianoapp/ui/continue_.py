"""Continue: the piano language model plays on from the opening you give it.

Generation streams: the piano roll grows every few notes, then the result is rendered to audio and
MIDI. A result can be kept and continued further, or sampled again from any point with a new seed.
"""

import time
from collections.abc import Iterator
from pathlib import Path

import gradio as gr

from pianoapp.services.continue_ import (
    Continuation,
    continue_notes,
    load_prompt,
    regenerate,
    save_continuation,
)
from pianoapp.ui.components import (
    SUFFIXES,
    asset_examples,
    availability_notice,
    explain,
    preview_outputs,
    show_preview,
    user_message,
    warning_line,
)

UPDATE_EVERY_S = 0.3  # redraw the growing roll at most this often: each redraw sends the whole figure
DEFAULT_SECONDS = 15


def build() -> None:
    explain("Give the opening of a piece (MIDI, a score, or a recording, which is transcribed to notes "
            "first); the piano model plays on from where it stops, and you watch it write.")
    availability_notice("continue")
    source = gr.State(None)  # the file or recording to continue
    result = gr.State(None)  # the latest Continuation, for "keep" and "regenerate"
    with gr.Row(equal_height=True):
        upload = gr.File(label="Opening: MIDI, score or recording",
                         file_types=[*SUFFIXES["midi"], *SUFFIXES["audio"]], type="filepath", height=140,
                         scale=3)
        recording = gr.Audio(label="…or play it into the microphone", sources=["microphone"],
                             type="filepath", scale=2)
    examples = asset_examples("midi", "audio")
    if examples:
        gr.Examples([[p] for p in examples], inputs=upload, label="Demo openings", examples_per_page=6)
    with gr.Row(equal_height=True):
        seconds = gr.Slider(5, 60, value=DEFAULT_SECONDS, step=1, label="Length to add (seconds)", scale=3)
        seed = gr.Number(0, precision=0, minimum=0, label="Seed", info="same seed, same music", scale=1)
    with gr.Accordion("Sampling", open=False), gr.Row():
        temperature = gr.Slider(0.5, 1.5, value=0.98, step=0.01, label="Temperature",
                                info="higher is more adventurous")
        top_p = gr.Slider(0.5, 1.0, value=1.0, step=0.01, label="Top-p",
                          info="sample from the likeliest notes covering this share")
        min_p = gr.Slider(0.0, 0.2, value=0.035, step=0.005, label="Min-p",
                          info="drop notes less likely than this × the likeliest")
    start = gr.Button("Continue", variant="primary")
    preview = preview_outputs("Upload an opening or pick a demo, then press Continue.")
    with gr.Column(visible=False) as actions:
        from_s = gr.Slider(0, 1, value=0, step=0.1, label="Regenerate from (seconds)",
                           info="keep everything before this point and sample the rest with the next seed")
        with gr.Row():
            keep = gr.Button("Keep this and continue", variant="primary")
            again = gr.Button("Regenerate from here")
            download = gr.DownloadButton("Download MIDI")

    sampling = [seconds, temperature, top_p, min_p, seed]
    outputs = [result, preview.audio, preview.plot, preview.status, actions, download, from_s]
    for box, other in ((upload, recording), (recording, upload)):
        box.change(select_source, [box, other], [source, *outputs], show_progress="minimal")
    start.click(generate, [source, *sampling], outputs, show_progress="hidden")
    keep.click(keep_and_continue, [source, result, *sampling], outputs, show_progress="hidden")
    from_s.release(show_cut, [result, from_s], preview.plot, show_progress="hidden")
    again.click(regenerate_from, [source, result, from_s, *sampling], [*outputs, seed],
                show_progress="hidden")


def select_source(path: str | None, other: str | None = None) -> tuple:
    """A new opening (or, when this one is cleared, the other box's): preview it as it is and forget
    the previous result."""
    path = path or other
    audio, plot, status = show_preview(path)
    return path, None, audio, plot, status, gr.update(visible=False), None, gr.update()


def generate(source: str | None, seconds, temperature, top_p, min_p, seed) -> Iterator[tuple]:
    if not source:
        yield _failed("Upload an opening (MIDI, score or recording) or pick a demo first.")
        return
    yield _progress(None, "Reading the opening…")

    def results():
        prompt, notices = load_prompt(source)
        yield from continue_notes(prompt, notices=notices, seconds=seconds, seed=int(seed),
                                  temperature=temperature, top_p=top_p, min_p=min_p)

    yield from _stream(results(), source, int(seed))


def keep_and_continue(source: str | None, result: Continuation | None, seconds, temperature, top_p, min_p,
                      seed) -> Iterator[tuple]:
    """The whole current result becomes the prompt."""
    if result is None:
        yield _failed("Press Continue first; then the result can be kept and continued.")
        return
    results = continue_notes(result.notes(), seconds=seconds, seed=int(seed),
                             temperature=temperature, top_p=top_p, min_p=min_p)
    yield from _stream(results, source, int(seed))


def regenerate_from(source: str | None, result: Continuation | None, from_s, seconds, temperature, top_p,
                    min_p, seed) -> Iterator[tuple]:
    """Keep the result up to `from_s` and sample the rest again with the next seed, shown in the seed box."""
    if result is None:
        yield (*_failed("Press Continue first; then any part of the result can be regenerated."), gr.update())
        return
    seed = int(seed) + 1
    results = regenerate(result, from_s=from_s, seconds=seconds, seed=seed,
                         temperature=temperature, top_p=top_p, min_p=min_p)
    for update in _stream(results, source, seed):
        yield *update, seed


def show_cut(result: Continuation | None, from_s) -> dict:
    """Redraw the roll with the regeneration point marked, so the slider's number has a place."""
    return gr.update() if result is None else gr.update(value=result.figure(cut_s=from_s))


def _stream(results: Iterator[Continuation], source: str | None, seed: int) -> Iterator[tuple]:
    """Updates for (result, audio, plot, status, actions, download, from_s) while the roll grows,
    then the rendered result; a failure at any point becomes its sentence."""
    shown = 0.0
    try:
        for current in results:
            if current.done:
                break
            if time.monotonic() - shown >= UPDATE_EVERY_S:
                shown = time.monotonic()
                yield _progress(current, f"Writing… {current.summary()}")
        name = f"{Path(source).stem if source else 'opening'}-continued"
        saved = save_continuation(current, name=name)
    except Exception as err:  # noqa: BLE001 - every failure becomes one sentence on the page
        yield _failed(user_message(err))
        return
    prompt_end = float(max(n.start for n in current.prompt))  # a NumPy float would reach the page as text
    end = float(current.end_s or prompt_end + 1)
    cut_s = round((prompt_end + end) / 2, 1)  # regenerating the second half is the likeliest wish
    status = f"**Continued** · {current.summary()} · seed {seed}"
    yield (
        current,
        gr.update(value=str(saved.wav_path), visible=True),
        gr.update(value=current.figure(cut_s=cut_s), visible=True),
        "\n\n".join([status, *current.notices]),
        gr.update(visible=True),
        str(saved.midi_path),
        gr.update(minimum=round(prompt_end, 1), maximum=round(end, 1), value=cut_s),
    )


def _progress(current: Continuation | None, status: str) -> tuple:
    """While generating: the growing roll, no audio yet, no actions on a result that is not finished."""
    plot = gr.update() if current is None else gr.update(value=current.figure(), visible=True)
    return (gr.update(), gr.update(value=None), plot, status, gr.update(visible=False), gr.update(),
            gr.update())


def _failed(message: str) -> tuple:
    gr.Warning(message)
    return (gr.update(), gr.update(), gr.update(), warning_line(message), gr.update(), gr.update(),
            gr.update())

