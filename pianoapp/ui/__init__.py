"""The Gradio app: one tab per capability plus Models. Tabs call services only and import no torch;
models load on first use, so the page is up in seconds."""

import os
import threading

import gradio as gr

from pianoapp import constants
from pianoapp.services import explore as explore_service
from pianoapp.services import search as search_service
from pianoapp.ui import arrange, continue_, explore, match, models, search

CONCURRENCY = 2  # rendering and models are CPU-bound; more parallel jobs only slow each other on small hosts
THEME = gr.themes.Soft(
    primary_hue="indigo",
    neutral_hue="slate",
    font=["ui-sans-serif", "system-ui", "-apple-system", "Segoe UI", "sans-serif"],  # no web-font download
)
CSS = """
.gradio-container { max-width: 1200px !important; width: 100% !important; margin: 0 auto; }
.app-header h1 { margin-bottom: 0.1em; }
.app-header p { margin-top: 0; color: var(--body-text-color-subdued); font-size: 1.05em; }
.tab-intro p { font-size: 1.02em; margin: 0.2em 0 0.4em; }
.block.notice { padding: 0.6em 1em; border-radius: 8px; background: var(--color-accent-soft);
                border-left: 4px solid var(--color-accent); }
.notice p { margin: 0; }
.plain-table * { font-family: var(--font) !important; }  /* Gradio draws cells in monospace */
.preview-status p { margin: 0.3em 0; color: var(--body-text-color-subdued); }
.preview-status blockquote { margin: 0.3em 0; padding: 0.5em 0.9em; border-radius: 8px;
                             border-left: 4px solid var(--error-border-color);
                             background: var(--error-background-fill); }
.preview-status blockquote p { color: var(--error-text-color); }
"""


def build_app() -> gr.Blocks:
    # Uploads and rendered previews pile up in Gradio's cache on a long-running host: hourly, drop
    # files older than six hours.
    with gr.Blocks(title="Pianoapp", delete_cache=(3600, 6 * 3600)) as demo:
        gr.Markdown(
            "# Pianoapp\n"
            "Find, match, continue and arrange piano music, from recordings, MIDI files and scores.",
            elem_classes="app-header",
        )
        with gr.Tabs():
            with gr.Tab("Search"):
                search.build(demo)
            with gr.Tab("Match"):
                match.build()
            with gr.Tab("Continue"):
                continue_.build()
            with gr.Tab("Arrange"):
                arrange.build()
            with gr.Tab("Explore"):
                explore.build()
            with gr.Tab("Models"):
                models.build(demo)
    demo.queue(default_concurrency_limit=CONCURRENCY)
    return demo


def warm_up() -> None:
    """In the background: load the demo index and the text encoder, so the first search answers at
    full speed, then draw the demo map once (the first UMAP fit in a process compiles for a minute)."""
    def run() -> None:
        search_service.warm_up()
        explore_service.umap_map(with_user_index=True)

    threading.Thread(target=run, name="warm-up", daemon=True).start()


def launch_options() -> dict:
    """Keyword arguments for `demo.launch`: all interfaces (Spaces, containers), port from
    GRADIO_SERVER_PORT (Gradio reads it) or 7860, demo files in assets/ servable."""
    return dict(
        server_name=os.environ.get("GRADIO_SERVER_NAME", "0.0.0.0"),
        allowed_paths=[str(constants.ASSETS_DIR)],
        theme=THEME,
        css=CSS,
        ssr_mode=False,
    )
