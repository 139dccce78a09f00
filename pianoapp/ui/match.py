"""Match: which indexed piece does this recording or MIDI file come from, and where in it. Select a
result to hear the matching span beside the recording and see both in one aligned piano roll."""

import gradio as gr

from pianoapp.services.preview import clock
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

HEADERS = ["Title", "Composer", "Collection", "Span", "Score", "Match"]
K = 10


def build() -> None:
    explain("Upload or record a piano performance to find the piece it comes from and where it sits; "
            "or give a MIDI file or score to find its recordings. Your own files (added in Search) are "
            "searched too.")
    if availability_notice("match"):
        return
    hits = gr.State([])
    query = gr.State(None)  # the file matched, for the aligned view
    with gr.Row(equal_height=True):
        with gr.Column(scale=3):
            upload = gr.File(label="Recording, MIDI or score", type="filepath", height=140,
                             file_types=[*SUFFIXES["audio"], *SUFFIXES["midi"]])
            examples = asset_examples("audio", "midi")
            if examples:
                gr.Examples([[p] for p in examples], inputs=upload, label="Demo files", examples_per_page=6)
        with gr.Column(scale=2):
            microphone = gr.Audio(sources=["microphone"], type="filepath", label="…or record (at least 5 s)")
    mine = preview_outputs()
    go = gr.Button("Find the piece", variant="primary")
    status = gr.Markdown(elem_classes="preview-status")
    table = gr.Dataframe(headers=HEADERS, interactive=False, max_height=360, elem_classes="plain-table",
                         column_widths=["34%", "18%", "14%", "14%", "10%", "10%"])
    span_line = gr.Markdown("Select a result to hear the matching passage and see it beside yours.",
                            elem_classes="preview-status")
    span_audio = gr.Audio(label="The matching passage", type="filepath", interactive=False, visible=False)
    span_plot = gr.Plot(show_label=False, visible=False)

    upload.change(show_preview, upload, mine.as_list(), show_progress="minimal")
    microphone.change(show_preview, microphone, mine.as_list(), show_progress="minimal")
    go.click(find, [upload, microphone], [table, status, hits, query], show_progress="minimal")
    table.select(show_span, [hits, query], [span_audio, span_plot, span_line], show_progress="minimal")


def find(upload: str | None, recorded: str | None, progress=gr.Progress()) -> tuple:  # noqa: B008
    """Match the upload (or the recording, if there is no upload) against the demo collection and
    the user's library."""
    from pianoapp.services.match import match  # torch: loaded by the first match, not at start-up

    path = upload or recorded
    if not path:
        return gr.update(), warning_line("Upload a recording, MIDI or score, or record one, first."), [], None
    try:
        report = match(path, k=K, with_user_index=True, progress=lambda stage: progress(None, desc=stage))
    except Exception as err:  # noqa: BLE001 - every failure becomes one sentence on the page
        return [], warning_line(user_message(err)), [], None
    rows = report["results"]
    best = rows[0]
    if report["no_match"]:
        line = (f"**No match.** No indexed piece stands out: the closest scores {best['score']:.2f}, only "
                f"{report['margin']:.3f} above the next piece (a match needs {report['threshold']:.3f}); "
                "the closest pieces are listed.")
    else:
        line = (f"**{best['title']}**{' · ' + best['composer'] if best['composer'] else ''}, from "
                f"{clock(best['start_s'])} to {clock(best['end_s'])} (score {best['score']:.2f}).")
    table = [[r["title"], r["composer"] or "", r["collection"], f"{clock(r['start_s'])}–{clock(r['end_s'])}",
              f"{r['score']:.2f}", "yes" if r["match"] else "no"] for r in rows]
    return table, line, rows, path


def show_span(rows: list[dict], path: str | None, evt: gr.SelectData) -> tuple:
    from pianoapp.services.match import span_preview

    hidden = gr.update(value=None, visible=False)
    if not rows or path is None or evt.index is None:
        return hidden, hidden, ""
    hit = rows[evt.index[0]]
    try:
        preview = span_preview(hit, path, with_user_index=True)
    except Exception as err:  # noqa: BLE001
        return hidden, hidden, warning_line(user_message(err))
    return (gr.update(value=str(preview.audio_path), visible=True), gr.update(value=preview.figure, visible=True),
            f"**{hit['title']}**, {clock(hit['start_s'])}–{clock(hit['end_s'])}: the passage, and its notes "
            "laid over yours along the alignment.")
