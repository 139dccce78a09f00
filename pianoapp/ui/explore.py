"""Explore: how the learned encoders lay out the collection.

A map of every indexed piece (the demo collection and the user's own files): click a point, or choose
the piece in the list, to hear it and see its notes; place a recording, a MIDI file or a description
on the map. Below, CKA between the matcher's audio-encoder and MIDI-encoder layers."""

import gradio as gr

from pianoapp.services import library
from pianoapp.services.explore import (
    METHOD_NAMES,
    band_figure,
    cka,
    cka_figure,
    cka_summary,
    file_point,
    text_point,
    umap_map,
)
from pianoapp.ui.components import (
    SUFFIXES,
    availability_notice,
    explain,
    preview_outputs,
    show_preview,
    user_message,
    warning_line,
)

COLOUR_CHOICES = [("Source (corpus folder or collection)", "source"), ("Collection", "collection"),
                  ("Composer", "composer"), ("Key", "key"), ("Tempo", "tempo"), ("Duration", "duration")]
MAP_NOTE = (
    "Each point is a piece, placed by the embedding the search index holds for it: now MiniLM over its "
    "description (title, composer, collection, key, tempo and words computed from its notes), so "
    "neighbours are pieces described alike. The layout is fitted once and saved; new files and your "
    "points are placed on it without refitting."
)
CKA_NOTE = (
    "Linear CKA between each audio-encoder layer and each MIDI-encoder layer of the matcher, on paired "
    "4-second segments of the test split (rendered with FluidR3_GM at the written tempo); 1 means the "
    "two layers hold the same information up to rotation and scale, 0 unrelated. Estimated with the "
    "unbiased minibatch HSIC (Nguyen et al. 2021). Below the heatmaps: what dropping each octave band of "
    "the A4 audio descriptor does to that agreement."
)
# A click on a map point writes its id into the hidden box (gr.Plot reports no clicks itself); the
# time makes a second click on the same point a change too. Plotly keeps listeners across redraws,
# and rebinding drops the old one, so binding after each change is safe.
CLICK_JS = """
() => {
  const bind = (tries) => {
    const plot = document.querySelector('#explore-map .js-plotly-plot');
    if (!plot || !plot.on) { if (tries > 0) setTimeout(() => bind(tries - 1), 200); return; }
    plot.removeAllListeners('plotly_click');
    plot.on('plotly_click', (event) => {
      const id = event.points[0].customdata[0];
      const box = document.querySelector('#explore-clicked textarea');
      if (!id || !box) return;
      box.value = id + ' ' + Date.now();
      box.dispatchEvent(new Event('input', {bubbles: true}));
    });
  };
  setTimeout(() => bind(25), 100);
}
"""


def build() -> None:
    explain("See how the models hear music: a map of every indexed piece, and how closely the audio and "
            "MIDI encoders agree, layer by layer.")
    availability_notice("explore")
    points = gr.State([])  # the map's items as the service returned them: id, path, title, x, y...
    extras = gr.State([])  # the user's placed points (services.explore.Extra)
    gr.Markdown("### Map of the collection")
    gr.Markdown(MAP_NOTE, elem_classes="notice")
    with gr.Row():
        colour = gr.Dropdown(COLOUR_CHOICES, value="source", label="Colour by", scale=2)
        method = gr.Radio([(name, key) for key, name in METHOD_NAMES.items()], value="umap", label="Layout",
                          scale=1)
    status = gr.Markdown("Drawing the map; the first time takes about half a minute.", elem_classes="preview-status")
    plot = gr.Plot(show_label=False, elem_id="explore-map")
    clicked = gr.Textbox(visible="hidden", elem_id="explore-clicked")
    piece = gr.Dropdown([], label="Hear a piece: click its point on the map, or choose it here", value=None)
    preview = preview_outputs("Click a point on the map (or choose a piece) to hear it and see its piano roll.")
    with gr.Accordion("Place your own on the map", open=True), gr.Row(equal_height=True):
        upload = gr.File(label="A recording, MIDI file or score", type="filepath", height=120, scale=2,
                         file_types=[*SUFFIXES["midi"], *SUFFIXES["audio"]])
        with gr.Column(scale=2):
            text = gr.Textbox(label="…or a description", placeholder="e.g. a lively Irish jig", lines=1)
            with gr.Row():
                place = gr.Button("Place on the map", variant="primary")
                clear = gr.Button("Remove mine")

    gr.Markdown("### Audio and MIDI encoders, layer by layer (CKA)")
    gr.Markdown(CKA_NOTE, elem_classes="notice")
    with gr.Row(equal_height=True):
        seed = gr.Number(0, precision=0, minimum=0, label="Seed", info="which test segments are drawn")
        segments = gr.Number(512, precision=0, minimum=8, maximum=4096, label="Test segments",
                             info="512 take about a minute on a CPU")
        compute = gr.Button("Compute CKA", variant="primary")
    cka_status = gr.Markdown(elem_classes="preview-status")
    heatmaps = gr.Plot(show_label=False, visible=False)
    bands = gr.Plot(show_label=False, visible=False)

    # On page load, and whenever the colouring, the layout or the placed points change.
    gr.on(None, draw, [colour, method, extras], [plot, status, piece, points], show_progress="minimal")
    plot.change(None, js=CLICK_JS)
    clicked.change(play_clicked, [clicked, points], [*preview.as_list(), piece], show_progress="minimal")
    piece.input(play, [piece, points], preview.as_list(), show_progress="minimal")
    gr.on([place.click, text.submit], add_point, [upload, text, extras], [extras, upload, text, status],
          show_progress="minimal")
    clear.click(list, None, extras)
    compute.click(compute_cka, [seed, segments], [heatmaps, bands, cka_status])


def draw(colour: str, method: str, extras: list) -> tuple:
    """The map of the demo collection and the user's files, with their placed points."""
    try:
        result = umap_map(colour_by=colour, method=method, with_user_index=True, extras=extras)
    except Exception as err:  # noqa: BLE001 - shown as one sentence, never a traceback
        return gr.update(), warning_line(user_message(err)), gr.update(), gr.update()
    choices = sorted(((_name(p), p["id"]) for p in result.points), key=lambda choice: choice[0].lower())
    return result.figure, "\n\n".join(result.summary()), gr.update(choices=choices), result.points


def _name(point: dict) -> str:
    return f"{point['title']} · {point['composer']}" if point["composer"] else point["title"]


def play(item_id: str | None, points: list[dict]) -> tuple:
    """Hear a piece of the map and see its piano roll."""
    point = next((p for p in points if p["id"] == item_id), None)
    if point is None:
        return show_preview(None)
    try:
        path = str(library.locate(point["path"]))
    except Exception as err:  # noqa: BLE001
        hidden = gr.update(value=None, visible=False)
        return hidden, hidden, warning_line(user_message(err))
    return show_preview(path)


def play_clicked(value: str, points: list[dict]) -> tuple:
    """A clicked point ("<id> <time>"): play it and show it chosen in the list."""
    item_id = value.split(" ")[0] if value else None
    return (*play(item_id, points), gr.update(value=item_id) if item_id else gr.update())


def add_point(path: str | None, text: str, extras: list) -> tuple:
    """Embed an upload and/or a description as the index embeds its items; the map redraws with them."""
    if not path and not text.strip():
        return gr.update(), gr.update(), gr.update(), warning_line("Choose a file or type a description first.")
    try:
        new = ([file_point(path)] if path else []) + ([text_point(text)] if text.strip() else [])
    except Exception as err:  # noqa: BLE001
        return gr.update(), gr.update(), gr.update(), warning_line(user_message(err))
    return [*extras, *new], None, "", gr.update()


def compute_cka(seed: float, segments: float, progress=gr.Progress()) -> tuple:  # noqa: B008 - how Gradio injects it
    """Heatmaps for the model and the baseline, the A4 band effect, and the numbers in words."""
    hidden = gr.update(visible=False)
    try:
        result = cka(seed=int(seed or 0), n_segments=int(segments or 512),
                     progress=lambda done, total: progress((done, total), desc="Embedding test segments"))
    except Exception as err:  # noqa: BLE001
        return hidden, hidden, warning_line(user_message(err))
    effect = band_figure(result)
    lines = cka_summary(result) + [f"Computed in {result['seconds']:.0f} s."]
    return (gr.update(value=cka_figure(result), visible=True),
            gr.update(value=effect, visible=True) if effect else hidden, "\n\n".join(lines))
