"""Search: describe the music in words and get the closest pieces of the demo collection and of your
own files; select one to hear it, see its piano roll and download its MIDI."""

import gradio as gr

from pianoapp.services import library
from pianoapp.services.search import ENGINE_NOTE, EXAMPLE_QUERIES, Filters, browse, facets, search
from pianoapp.ui.components import (
    SUFFIXES,
    explain,
    preview_outputs,
    show_preview,
    user_message,
    warning_line,
)

HEADERS = ["Title", "Composer", "Collection", "Score", "ID"]  # the ID, last, names the row a click selects
ALL = "All"
K = 20


def build(demo: gr.Blocks) -> None:
    explain("Describe the music you are after, in your own words: a style, a mood, a composer, a tempo. "
            "Select a result to hear it, see its notes and download its MIDI.")
    gr.Markdown(ENGINE_NOTE, elem_classes="notice")
    hits = gr.State([])  # the rows on show, as the service returned them
    selected = gr.State(None)  # the row being previewed
    with gr.Row(equal_height=True):
        query = gr.Textbox(label="Describe the music", placeholder="e.g. a slow, sad piece in a minor key",
                           scale=5, lines=1)
        go = gr.Button("Search", variant="primary", scale=1, min_width=120)
    with gr.Row(elem_classes="example-queries"):
        examples = [gr.Button(q, size="sm", variant="secondary", min_width=60) for q in EXAMPLE_QUERIES]
    with gr.Row():
        collection = gr.Dropdown([ALL], value=ALL, label="Collection", allow_custom_value=False)
        composer = gr.Dropdown([ALL], value=ALL, label="Composer", allow_custom_value=False)
    count = gr.Markdown(elem_classes="preview-status")
    table = gr.Dataframe(headers=HEADERS, interactive=False, max_height=360,
                         column_widths=["40%", "22%", "18%", "8%", "12%"], elem_classes="plain-table")
    preview = preview_outputs("Select a piece in the table to hear it and see its piano roll.")
    download = gr.DownloadButton("Download MIDI", visible=False, size="sm")
    with gr.Accordion("Add your own files", open=False):
        gr.Markdown("MIDI, MusicXML or recordings (transcribed to notes first). They become searchable at "
                    "once, under the collection “your files”, and stay in your library after a restart.")
        uploads = gr.File(label="Your files", file_count="multiple", type="filepath", height=120,
                          file_types=[*SUFFIXES["midi"], *SUFFIXES["audio"]])
        add = gr.Button("Add to my library")
        added = gr.Markdown(elem_classes="preview-status")

    listing = [table, count, hits]
    demo.load(refresh, [query, collection, composer], [*listing, collection, composer])
    go.click(find, [query, collection, composer], listing, show_progress="minimal")
    for button in examples:  # one click: the example becomes the query and runs
        button.click(lambda text: text, button, query).then(find, [query, collection, composer], listing,
                                                             show_progress="minimal")
    query.submit(find, [query, collection, composer], listing, show_progress="minimal")
    for box in (collection, composer):
        box.input(show, [query, collection, composer], listing, show_progress="hidden")
    table.select(preview_row, hits, [*preview.as_list(), download, selected]).then(
        offer_midi, selected, download, show_progress="hidden")  # after the preview: scores convert slowly
    add.click(add_files, uploads, [added, uploads, collection, composer], show_progress="minimal").then(
        show, [query, collection, composer], listing, show_progress="hidden")


def find(query: str, collection: str, composer: str) -> tuple:
    """The hits for a query (an empty one is a sentence, and the table stays)."""
    try:
        rows = search(query, k=K, filters=_filters(collection, composer), with_user_index=True)
    except Exception as err:  # noqa: BLE001 - shown as one sentence, never a traceback
        return gr.update(), warning_line(user_message(err)), gr.update()
    found = f"{len(rows)} closest piece{'s' if len(rows) != 1 else ''}" if rows else "No pieces match these filters."
    return _table(rows), found, rows


def show(query: str, collection: str, composer: str) -> tuple:
    """The query's hits if there is a query, else the whole library, under the filters."""
    if query.strip():
        return find(query, collection, composer)
    try:
        rows = browse(filters=_filters(collection, composer), with_user_index=True)
    except Exception as err:  # noqa: BLE001
        return [], warning_line(user_message(err)), []
    return _table(rows), f"{len(rows):,} pieces; describe what you want to hear to rank them.", rows


def refresh(query: str, collection: str, composer: str) -> tuple:
    """The listing and the filter choices (the user's library may have grown)."""
    return (*show(query, collection, composer), *_filter_choices(collection, composer))


def preview_row(rows: list[dict], evt: gr.SelectData) -> tuple:
    hidden = gr.update(value=None, visible=False)
    row = next((r for r in rows if evt.row_value and r["id"].startswith(str(evt.row_value[-1]))), None)
    if row is None:
        return (*show_preview(None), hidden, None)
    try:
        path = str(library.locate(row["path"]))
    except Exception as err:  # noqa: BLE001
        return hidden, hidden, warning_line(user_message(err)), hidden, None
    return (*show_preview(path), hidden, row)


def offer_midi(row: dict | None) -> dict:
    """The selected piece as a MIDI file to download (scores are converted, recordings transcribed)."""
    if row is None:
        return gr.update(visible=False)
    try:
        return gr.update(value=str(library.midi_download(row)), visible=True)
    except Exception as err:  # noqa: BLE001 - the preview line already says what is wrong with the file
        user_message(err)
        return gr.update(value=None, visible=False)


def add_files(paths: list[str] | None, progress=gr.Progress()) -> tuple:  # noqa: B008 - how Gradio injects it
    """Index the uploads into the user's library; show what happened, file by file."""
    if not paths:
        return warning_line("Choose MIDI, MusicXML or audio files first."), gr.update(), gr.update(), gr.update()
    try:
        report = library.add_uploads(paths, progress=lambda done, total: progress((done, total), desc="Indexing"))
    except Exception as err:  # noqa: BLE001
        return warning_line(user_message(err)), gr.update(), gr.update(), gr.update()
    lines = [f"**Your library:** {report.summary()}"]
    lines += [f"{name} was there already." for name in report.duplicates]
    lines += [warning_line(why) for _, why in report.skipped]
    collection, composer = _filter_choices(library.UPLOADS_COLLECTION, ALL)
    return "\n\n".join(lines), None, collection, composer


def _filter_choices(collection: str, composer: str) -> tuple:
    try:
        choices = facets(with_user_index=True)
    except Exception:  # noqa: BLE001 - the listing already says what is wrong
        return gr.update(), gr.update()
    return (gr.update(choices=[ALL, *choices["collection"]], value=collection),
            gr.update(choices=[ALL, *choices["composer"]], value=composer))


def _filters(collection: str, composer: str) -> Filters | None:
    collection, composer = (None if v in (ALL, None) else v for v in (collection, composer))
    return Filters(collection=collection, composer=composer) if collection or composer else None


def _table(rows: list[dict]) -> list[list]:
    return [[r["title"], r["composer"] or "", r["collection"], f"{r['score']:.2f}" if "score" in r else "",
             r["id"][:10]] for r in rows]
