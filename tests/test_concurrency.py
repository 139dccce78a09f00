"""Several people at once: the real app on a free port, three clients searching, matching and
continuing at the same time through its API (bench/concurrency.py's clients, one short round).
Every action must give a result; no speed is asserted. The bench runs eight clients and reports latency."""

import importlib.util
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
BENCH = REPO / "bench" / "concurrency.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("concurrency_bench", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_three_clients_at_once_all_get_results(bench, tmp_path):
    from gradio_client import Client

    proc, url, _ = bench.start_app(tmp_path)
    try:
        results = bench.run_round(url, bench.endpoints(Client(url, verbose=False)), clients=3, seconds=5)
    finally:
        bench.stop(proc)
    assert sorted(action for action, _, _ in results) == sorted(bench.ACTIONS * 3)
    assert [(action, error) for action, _, error in results if error] == []
    log = (tmp_path / "app.log").read_text()
    assert "Traceback" not in log, log[-3000:]


@pytest.mark.skipif(not (REPO / "models" / "lm-small" / "model.safetensors").is_file(),
                    reason="models/lm-small is not shipped in this checkout")
def test_a_continuation_resumed_on_other_threads_runs_to_the_end():
    """The app resumes a streaming generator on whichever worker thread is free; torch's inference
    mode is per thread, so each step must bring its own (without, bench/concurrency.py saw 6 of 16
    continuations fail)."""
    from pianoapp.services.continue_ import continue_notes, load_prompt

    def next_on_a_new_thread(steps):
        with ThreadPoolExecutor(1) as pool:
            return pool.submit(next, steps, None).result()

    prompt, _ = load_prompt(REPO / "assets" / "pedal_arpeggios.mid")
    steps, hopping = continue_notes(prompt, seconds=3, seed=0), []
    while (step := next_on_a_new_thread(steps)) is not None:
        hopping.append(step)
    *_, same_thread = continue_notes(prompt, seconds=3, seed=0)
    assert hopping[-1].done and hopping[-1].generated
    assert [(n.pitch, n.start) for n in hopping[-1].generated] == [(n.pitch, n.start) for n in same_thread.generated]
