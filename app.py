"""Pianoapp in the browser: `python app.py` serves on 0.0.0.0:7860 (GRADIO_SERVER_PORT changes the port)."""

from pianoapp.ui import build_app, launch_options, warm_up

demo = build_app()

if __name__ == "__main__":
    warm_up()
    demo.launch(**launch_options())
