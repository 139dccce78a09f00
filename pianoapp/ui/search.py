"""Search: browse the built-in demo collection; select a piece to hear it and see its piano roll."""

import gradio as gr

from pianoapp.services.catalog import demo_collection, demo_item
from pianoapp.ui.components import availability_notice, explain, preview_outputs, show_preview, user_message

HEADERS = ["Title", "Composer", "ID"]


def build(demo: gr.Blocks) -> None:
    explain("Browse the built-in demo collection (the music21 corpus). Select a piece to hear it and see its notes.")
    availability_notice("search")
    with gr.Row(equal_height=False):
        with gr.Column(scale=5):
            query = gr.Textbox(
                label="Filter by title or composer",
                placeholder="e.g. bach chorale, joplin, mozart",
                info="Plain word matching on titles and composers, not yet search by musical content.",
            )
            count = gr.Markdown(elem_classes="preview-status")
            table = gr.Dataframe(headers=HEADERS, interactive=False, max_height=560,
                                 column_widths=["50%", "20%", "30%"])
        with gr.Column(scale=6):
            outputs = preview_outputs("Select a piece in the table to hear it and see its piano roll.")
    demo.load(filter_rows, query, [table, count])
    query.change(filter_rows, query, [table, count], show_progress="hidden")
    table.select(preview_row, None, outputs.as_list())


def filter_rows(query: str) -> tuple[list[list[str]], str]:
    try:
        rows, total = demo_collection(query), len(demo_collection())
    except Exception as err:  # noqa: BLE001 - shown as one sentence, never a traceback
        return [], f"⚠ {user_message(err)}"
    shown = f"{len(rows):,} of {total:,} pieces" if query.strip() else f"{total:,} pieces"
    return [[r["title"], r["composer"], r["id"]] for r in rows], shown


def preview_row(evt: gr.SelectData) -> tuple:
    row = demo_item(evt.row_value[-1]) if evt.row_value else None
    return show_preview(row["path"] if row else None)
