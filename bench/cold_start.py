"""Cold start: seconds from `python app.py` until the page answers, and until the first search answers.

    python bench/cold_start.py [--runs 3]

Each run starts a fresh `python app.py` on a free port (the user's library in a temporary folder) and
polls the page every 50 ms; then it times one search through the app's API, which waits for the
text encoder if the background warm-up has not loaded it yet. Prints each run and the medians.
"""

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from concurrency import endpoints, start_app, stop  # the same app start-up as the concurrency bench


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", type=int, default=3)
    args = p.parse_args()
    from gradio_client import Client

    pages, searches = [], []
    for run in range(args.runs):
        with tempfile.TemporaryDirectory(prefix="pianoapp-bench-") as folder:
            proc, url, page_s = start_app(Path(folder))
            answered = time.monotonic()
            try:
                client = Client(url, verbose=False)
                client.predict("a lively ragtime for piano", "All", "All", api_name=endpoints(client)["search"])
                search_s = page_s + time.monotonic() - answered
            finally:
                stop(proc)
        pages.append(page_s)
        searches.append(search_s)
        print(f"run {run + 1}: page answers after {page_s:5.1f} s · first search answered {search_s:5.1f} s after start",
              flush=True)
    print(f"median of {args.runs}: page {statistics.median(pages):.1f} s · first search {statistics.median(searches):.1f} s")


if __name__ == "__main__":
    main()
