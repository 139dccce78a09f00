"""Sampling from the piano LM: the draw, seeded grammatical sampling, and the int8 copy a CPU decodes with."""

from concurrent.futures import ThreadPoolExecutor

import pytest
import torch

from pianoapp import constants
from pianoapp.evaluate.lm import token_nll
from pianoapp.io.midi import piano_notes, read_midi
from pianoapp.models import registry
from pianoapp.models.checkpoint import load_config, load_model
from pianoapp.models.lm import Int8Linear
from pianoapp.sampling import decoding_model, draw, sample
from pianoapp.tokenizer import Tokenizer

TOKENIZER = Tokenizer()
LM_SMALL = constants.MODELS_DIR / "lm-small"


def test_draw_follows_the_probabilities_and_its_seed():
    probs = torch.tensor([1.0, 0.0, 0.6, 0.4])  # need not sum to 1
    draws = [draw(probs, torch.Generator().manual_seed(0)) for _ in range(3)]
    assert len(set(draws)) == 1  # the same seed, the same id

    generator = torch.Generator().manual_seed(1)
    counts = torch.bincount(torch.tensor([draw(probs, generator) for _ in range(20_000)]), minlength=4)
    assert counts[1] == 0
    torch.testing.assert_close(counts / counts.sum(), probs / probs.sum(), atol=0.015, rtol=0)
    assert draw(torch.tensor([0.0, 0.0, 3.0]), generator) == 2


def test_sampling_is_seeded_grammatical_and_runs_the_cpu_copy(assets_dir):
    torch.manual_seed(0)
    model = registry.build_model("lm-tiny").eval()
    prompt = TOKENIZER.encode(piano_notes(read_midi(assets_dir / "pedal_arpeggios.mid"))[:20], add_eos=False)

    def run(seed):
        new = []
        for new in sample(model, TOKENIZER, prompt, end_step=10**9, seed=seed, max_new_tokens=60):
            pass
        return new

    first = run(0)
    assert len(first) == 60 and first == run(0) and first != run(1)
    for i, token in enumerate(first):
        assert TOKENIZER.allowed_next(prompt + first[:i])[token]
    fast = decoding_model(model)
    assert fast is decoding_model(model)  # made once
    assert isinstance(fast.blocks[0].ffn.up_proj, Int8Linear)
    assert isinstance(model.blocks[0].ffn.up_proj, torch.nn.Linear)  # the model itself is left as it was


def test_a_stream_resumed_on_another_thread_gives_the_same_ids(assets_dir):
    """The app resumes a streaming generator on any of its worker threads, where neither inference
    mode nor the one-thread setting of the thread that started it holds."""
    torch.manual_seed(0)
    model = registry.build_model("lm-tiny").eval()
    prompt = TOKENIZER.encode(piano_notes(read_midi(assets_dir / "pedal_arpeggios.mid"))[:20], add_eos=False)

    def drain(stream):
        new = []
        for new in stream:
            pass
        return new

    def stream():
        return sample(model, TOKENIZER, prompt, end_step=10**9, seed=0, max_new_tokens=60)

    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        resumed = stream()
        next(resumed)
        assert torch.get_num_threads() == 2  # decoding's one thread is not held across a yield
        with ThreadPoolExecutor(1) as pool:
            assert pool.submit(drain, resumed).result() == drain(stream())
    finally:
        torch.set_num_threads(threads)


@pytest.mark.skipif(not (LM_SMALL / "model.safetensors").is_file(), reason="models/lm-small is absent")
def test_the_cpu_copy_keeps_the_shipped_models_nll(assets_dir):
    model = load_model(LM_SMALL, device="cpu")
    tokenizer = Tokenizer.from_dict(load_config(LM_SMALL)["tokenizer"])
    names = ("mozart_k545_opening.mid", "joplin_maple_leaf_rag_opening.mid", "bach_chorale_bwv66.6.mid")
    pieces = [tokenizer.encode(piano_notes(read_midi(assets_dir / name)))[:400] for name in names]
    nll = {}
    with torch.inference_mode():
        for name, runs in (("fp32", model), ("int8", decoding_model(model))):
            per_token = [token_nll(runs, torch.tensor([ids]), tokenizer.pad_id)[0] for ids in pieces]
            nll[name] = torch.cat([t.flatten() for t in per_token]).mean().item()
    assert nll["fp32"] < 4  # the model knows this music (a uniform guess is 7.8 nats)
    assert abs(nll["int8"] - nll["fp32"]) < 0.01
