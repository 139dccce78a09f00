"""Models: the shipped checkpoints with their model-card metrics, and what each capability still needs."""

import gradio as gr

from pianoapp.services import library
from pianoapp.services.availability import CAPABILITIES, folders, missing_reason
from pianoapp.services.catalog import list_models
from pianoapp.ui.components import explain

HEADERS = ["Model", "Family", "Parameters", "Metrics (from its model card)", "Date"]


def build(demo: gr.Blocks) -> None:
    with gr.Row():
        explain("The checkpoints in `models/`, each with the metrics recorded in its model card.")
        refresh = gr.Button("Refresh", size="sm", variant="secondary", scale=0, min_width=100)
    empty = gr.Markdown(visible=False)
    table = gr.Dataframe(headers=HEADERS, datatype=["str", "str", "str", "markdown", "str"],
                         interactive=False, wrap=True, column_widths=["14%", "10%", "11%", "53%", "12%"],
                         elem_classes="plain-table")
    gr.Markdown("### What each capability needs")
    capabilities = gr.Dataframe(headers=["Capability", "Needs", "Status"], interactive=False,
                                column_widths=["30%", "40%", "30%"], elem_classes="plain-table")
    outputs = [table, empty, capabilities]
    demo.load(model_rows, outputs=outputs)
    refresh.click(model_rows, outputs=outputs)


def model_rows() -> tuple:
    models = list_models()
    rows = [
        [m["name"], m["family"], _millions(m["params"]),
         "<br>".join(f"{k}: {v}" for k, v in m["metrics"].items()) or "—", m["date"]]
        for m in models
    ]
    empty = gr.update(
        value="No trained models yet: train one with `pianoapp train lm --config small`.", visible=not models
    )
    status = [
        [c.title, ", ".join(f"models/{m}" for m in folders(name)) or _search_needs(),
         "ready" if missing_reason(name) is None else "not available yet"]
        for name, c in CAPABILITIES.items()
    ]
    return gr.update(value=rows, visible=bool(models)), empty, status


def _search_needs() -> str:
    """Search runs with or without its trained model: say which engine answers."""
    if library.ENGINE == "bind":
        return "models/bind, models/matcher"
    return "no trained model (MiniLM over descriptions)"


def _millions(params: int | None) -> str:
    return "?" if params is None else f"{params / 1e6:.1f} M"
