"""Concurrent users: N clients at once doing search, match and continue through the app's own API.

    python bench/concurrency.py [--clients 8] [--rounds 2] [--seconds 5]

Starts `python app.py` on a free port (the user's library in a temporary folder). In each round every
client, in its own thread with its own gradio_client session, runs the three actions in its own order:
a text search, a match of a 7 s recording (assets/joplin_maple_leaf_rag_opening.flac) against the demo
collection, and a continuation of `--seconds` from a MIDI opening (the tab's upload, then Continue).
An action fails when it raises or when the page would show a warning line instead of a result.
Prints p50/p95 latency per action and round (queueing included), the errors, and the app's resident
memory after each round: models load once per process and are shared, so after the first round the
memory stays about flat.
"""

import argparse
import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
ASSETS = REPO / "assets"
RECORDING = ASSETS / "joplin_maple_leaf_rag_opening.flac"
OPENINGS = sorted(ASSETS.glob("*.mid"))
QUERIES = ("a slow, sad piece in a minor key", "Bach chorale in four voices", "a lively ragtime for piano",
           "Irish dance tune, fast jig", "gentle song by Schubert", "string quartet movement by Haydn")
ACTIONS = ("search", "match", "continue")
WARNING = "⚠"  # how the app's status lines start when an action failed (ui.components.warning_line)


# The app ----------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_app(folder: Path, *, timeout_s: float = 180) -> tuple[subprocess.Popen, str, float]:
    """`python app.py` on a free port, its log, library and temporary files in `folder`:
    (process, url, seconds until the page answered)."""
    port = free_port()
    (folder / "tmp").mkdir(parents=True)
    env = {**os.environ, "GRADIO_SERVER_PORT": str(port), "GRADIO_ANALYTICS_ENABLED": "False",
           "PIANOAPP_HOME": str(folder / "home"), "TMPDIR": str(folder / "tmp")}
    url = f"http://127.0.0.1:{port}/"
    log = folder / "app.log"
    started = time.monotonic()
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "app.py"], cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT)
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5) as page:
                if page.status == 200:
                    return proc, url, time.monotonic() - started
        except OSError:
            pass
        if proc.poll() is not None or time.monotonic() - started > timeout_s:
            proc.kill()
            raise RuntimeError(f"app.py did not answer on {url}:\n{log.read_text()[-2000:]}")
        time.sleep(0.05)


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def endpoints(client) -> dict[str, str]:
    """The API names of the events the actions use, found by their first input's label (Gradio
    numbers repeated function names: find, find_1, …)."""
    api = client.view_api(return_format="dict", print_info=False)["named_endpoints"]
    wanted = {"search": ("find", "Describe the music"), "match": ("find", "Recording, MIDI or score"),
              "select": ("select_source", "Opening: MIDI, score or recording"), "generate": ("generate", None)}
    found = {}
    for key, (name, label) in wanted.items():
        for api_name, spec in api.items():
            params = spec["parameters"]
            if api_name.lstrip("/").rstrip("_0123456789") == name and (label is None or (params and params[0]["label"] == label)):
                found[key] = api_name
                break
        else:
            raise RuntimeError(f"the app has no '{name}' event on '{label}'")
    return found


# The clients ------------------------------------------------------------------------------------


def _search(client, names: dict, rng: random.Random, seconds: float) -> str | None:
    table, status = client.predict(rng.choice(QUERIES), "All", "All", api_name=names["search"])
    return status if WARNING in status or not table["data"] else None


def _match(client, names: dict, rng: random.Random, seconds: float) -> str | None:
    from gradio_client import handle_file

    table, status = client.predict(handle_file(str(RECORDING)), None, api_name=names["match"])
    return status if WARNING in status or not table["data"] else None


def _continue(client, names: dict, rng: random.Random, seconds: float) -> str | None:
    from gradio_client import handle_file

    client.predict(handle_file(str(rng.choice(OPENINGS))), None, api_name=names["select"])
    outputs = client.predict(seconds, 0.98, 1.0, 0.035, rng.randrange(1000), api_name=names["generate"])
    status = next(o for o in outputs if isinstance(o, str) and (WARNING in o or "Continued" in o))
    return None if status.startswith("**Continued**") else status


CALLS = {"search": _search, "match": _match, "continue": _continue}


def one_client(url: str, names: dict, seed: int, seconds: float, out: list) -> None:
    """Run the three actions in an order of the client's own; append (action, seconds, error or None)."""
    from gradio_client import Client

    rng = random.Random(seed)
    client = Client(url, verbose=False)  # a session of its own: the continue tab keeps state per session
    for action in rng.sample(ACTIONS, len(ACTIONS)):
        started = time.monotonic()
        try:
            error = CALLS[action](client, names, rng, seconds)
        except Exception as err:  # noqa: BLE001 - every failure is counted and shown
            error = f"{type(err).__name__}: {err}"
        out.append((action, time.monotonic() - started, error))


def run_round(url: str, names: dict, *, clients: int, seconds: float, seed: int = 0) -> list[tuple]:
    """All clients at once; every (action, seconds, error or None)."""
    results: list[tuple] = []
    threads = [threading.Thread(target=one_client, args=(url, names, seed * 1000 + i, seconds, results))
               for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--clients", type=int, default=8)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--seconds", type=float, default=5.0, help="length of each continuation")
    args = p.parse_args()
    from gradio_client import Client

    folder = Path(tempfile.mkdtemp(prefix="pianoapp-bench-"))
    proc, url, page_s = start_app(folder)
    try:
        print(f"app.py answered after {page_s:.1f} s; resident memory {rss_mb(proc.pid):.0f} MB", flush=True)
        names = endpoints(Client(url, verbose=False))
        errors = []
        for round_ in range(1, args.rounds + 1):
            started = time.monotonic()
            results = run_round(url, names, clients=args.clients, seconds=args.seconds, seed=round_)
            wall = time.monotonic() - started
            print(f"round {round_}: {args.clients} clients × 3 actions in {wall:.1f} s; "
                  f"resident memory {rss_mb(proc.pid):.0f} MB", flush=True)
            for action in ACTIONS:
                times = np.array([s for a, s, _ in results if a == action])
                failed = sum(1 for a, _, e in results if a == action and e)
                print(f"  {action:<9} p50 {np.percentile(times, 50):6.1f} s  p95 {np.percentile(times, 95):6.1f} s  "
                      f"errors {failed}/{len(times)}", flush=True)
            errors += [(round_, a, e) for a, _, e in results if e]
        for round_, action, error in errors:
            print(f"error in round {round_}, {action}: {error}")
        print(f"errors: {len(errors)}")
    finally:
        stop(proc)
        log = (folder / "app.log").read_text()
        shutil.rmtree(folder, ignore_errors=True)
    if "Traceback" in log:
        print(f"the app logged a traceback:\n{log[-3000:]}")


if __name__ == "__main__":
    main()
