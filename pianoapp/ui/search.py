"""Search: browse the built-in demo collection; select a piece to hear it and see its piano roll."""

import gradio as gr

from pianoapp.services.catalog import demo_collection, demo_item
from pianoapp.ui.components import (
    availability_notice,
    explain,
    preview_outputs,
    show_preview,
    user_message,
    warning_line,
)

HEADERS = ["Title", "Composer", "Style", "ID"]  # the ID, last, names the row a click selects


def build(demo: gr.Blocks) -> None:
    explain("Browse the built-in demo collection (from the music21 corpus). "
            "Select a piece to hear it and see its notes.")
    availability_notice("search")
    query = gr.Textbox(
        label="Filter by title, composer or style",
        placeholder="e.g. bach chorale, joplin, irish hornpipe",
        info="Plain word matching on the catalogue text, not yet search by musical content.",
    )
    count = gr.Markdown(elem_classes="preview-status")
    table = gr.Dataframe(headers=HEADERS, interactive=False, max_height=330,
                         column_widths=["38%", "20%", "20%", "22%"], elem_classes="plain-table")
    outputs = preview_outputs("Select a piece in the table to hear it and see its piano roll.")
    demo.load(filter_rows, query, [table, count])
    query.change(filter_rows, query, [table, count], show_progress="hidden")
    table.select(preview_row, None, outputs.as_list())


def filter_rows(query: str) -> tuple[list[list[str]], str]:
    try:
        rows, total = demo_collection(query), len(demo_collection())
    except Exception as err:  # noqa: BLE001 - shown as one sentence, never a traceback
        return [], warning_line(user_message(err))
    shown = f"{len(rows):,} of {total:,} pieces" if query.strip() else f"{total:,} pieces"
    return [[r["title"], r["composer"], r["style"], r["id"]] for r in rows], shown


def preview_row(evt: gr.SelectData) -> tuple:
    row = demo_item(evt.row_value[-1]) if evt.row_value else None
    return show_preview(row["path"] if row else None)
