"""The piano LM, the model registry and checkpoints, the token-window dataset and the n-gram baseline."""

import math

import numpy as np
import pretty_midi
import pytest
import torch
from safetensors import safe_open

from pianoapp.data.sequences import Augment, TokenWindows, load_pieces, notes_to_array
from pianoapp.errors import BadInputError, CorruptFileError, NotAvailableError
from pianoapp.evaluate.lm import KneserNey
from pianoapp.models import FAMILIES, registry
from pianoapp.models.checkpoint import load_config, load_model, save_model
from pianoapp.models.lm import Int8Linear, LMConfig, PianoLM, cpu_inference_copy
from pianoapp.tokenizer import Tokenizer
from pianoapp.train import recipe_classes

TOKENIZER = Tokenizer()
# Sizes the issue asks for: tiny < 1M parameters, small about 20M, base about 100M.
PARAMS = {"lm-tiny": (0.1e6, 1e6), "lm-small": (15e6, 25e6), "lm-base": (80e6, 120e6)}


def tiny_model(seed: int = 0) -> PianoLM:
    torch.manual_seed(seed)
    return registry.build_model("lm-tiny").eval()


@pytest.mark.parametrize("name", registry.list_configs())
def test_every_config_builds_with_its_family(name):
    family = registry.family_of(name)
    config_cls, module_cls = FAMILIES[family]
    config = registry.get_config(name)
    assert type(config) is config_cls
    with torch.device("meta"):  # no memory for base's 100M parameters
        model = registry.build(config)
    assert isinstance(model, module_cls)
    n_params = sum(p.numel() for p in model.parameters())
    if name in PARAMS:
        low, high = PARAMS[name]
        assert low < n_params < high, f"{name} has {n_params:,} parameters"
    _, train_config_cls = recipe_classes(family)
    train_config_cls(**registry.train_defaults(name))  # every training default is a real setting


def test_lm_configs_match_the_tokenizer_and_context():
    assert registry.list_configs("lm") == ["lm-base", "lm-small", "lm-tiny"]
    for name in registry.list_configs("lm"):
        config = registry.get_config(name)
        assert config.vocab_size == TOKENIZER.vocab_size  # the JSONs' parameter counts stay true
        assert config.context_len == (256 if name == "lm-tiny" else 1024)


def test_unknown_config_is_bad_input():
    with pytest.raises(BadInputError, match="lm-tiny"):
        registry.get_config("lm-huge")


def test_cached_forward_matches_full_forward():
    model = tiny_model()
    ids = torch.randint(0, TOKENIZER.vocab_size, (2, 40))
    with torch.no_grad():
        full, _ = model(ids)
        pieces, cache = [], None
        for a, b in [(0, 17), (17, 20)] + [(t, t + 1) for t in range(20, 40)]:  # prefill, a chunk, then one by one
            logits, cache = model(ids[:, a:b], cache=cache)
            pieces.append(logits)
    assert cache.length == 40 and cache.keys[0].shape == (2, 4, model.config.context_len, 32)
    torch.testing.assert_close(torch.cat(pieces, dim=1), full, atol=1e-5, rtol=1e-5)


def test_decoding_writes_into_the_cache_in_place():
    model = tiny_model()
    ids = torch.randint(0, TOKENIZER.vocab_size, (1, 30))
    with torch.no_grad():
        _, cache = model(ids[:, :10])
        assert cache.keys[0].shape[2] == 10  # a forward without a cache keeps its own keys: no copy
        _, cache = model(ids[:, 10:11], cache=cache)
        buffers = [t.data_ptr() for t in cache.keys + cache.values]
        for t in range(11, 30):
            _, extended = model(ids[:, t : t + 1], cache=cache)
            assert extended is cache
    assert cache.length == 30
    assert [t.data_ptr() for t in cache.keys + cache.values] == buffers  # no step copied the cache


def test_prefix_embeds_are_prepended():
    model = tiny_model()
    ids = torch.randint(0, TOKENIZER.vocab_size, (3, 10))
    prefix = torch.randn(3, 5, model.config.d_model)
    with torch.no_grad():
        logits, cache = model(ids, prefix_embeds=prefix)
        plain, _ = model(ids)
        head, head_cache = model(ids[:, :4], prefix_embeds=prefix)
        tail, _ = model(ids[:, 4:], cache=head_cache)
    assert logits.shape == (3, 15, TOKENIZER.vocab_size)
    assert cache.length == 15
    assert not torch.allclose(logits[:, 5:], plain, atol=1e-3)  # the prefix conditions the tokens
    torch.testing.assert_close(torch.cat([head, tail], dim=1), logits, atol=1e-5, rtol=1e-5)


def test_cpu_inference_copy_is_close_to_the_model_and_leaves_it_alone():
    model = tiny_model()
    fast = cpu_inference_copy(model)
    ids = torch.randint(0, TOKENIZER.vocab_size, (1, 100))
    with torch.inference_mode():
        exact = model(ids)[0]
        whole = fast(ids)[0]  # more than MAX_INT8_ROWS tokens: fp32 matmuls on the dequantised weights
        first, cache = fast(ids[:, :40])  # fewer: the int8 kernel
        pieces = [first]
        for t in range(40, 100):  # one token at a time
            logits, cache = fast(ids[:, t : t + 1], cache=cache)
            pieces.append(logits)
    q_proj = fast.blocks[0].attn.q_proj
    assert isinstance(q_proj, Int8Linear) and q_proj.weight.dtype == torch.int8
    assert isinstance(fast.head, Int8Linear)
    assert fast.tok_emb.weight is model.tok_emb.weight  # shared, not copied
    assert cache.keys[0].dtype == torch.bfloat16 and logits.dtype == torch.float32
    assert isinstance(model.blocks[0].attn.q_proj, torch.nn.Linear) and model.head is None
    scale = exact.std()
    for approx in (whole, torch.cat(pieces, dim=1)):
        error = (approx - exact).abs()
        assert error.max() < 0.1 * scale and error.mean() < 0.02 * scale


def test_int8_linear_one_token_and_many_agree():
    torch.manual_seed(0)
    linear = torch.nn.Linear(64, 96, bias=False)
    fast = Int8Linear(linear.weight)
    x = torch.randn(3, 40, 64)  # 120 rows: over MAX_INT8_ROWS
    with torch.inference_mode():
        many = fast(x)
        few = torch.stack([fast(x[i]) for i in range(3)])  # 40 rows each: the int8 kernel
        exact = linear(x)
    assert many.shape == few.shape == (3, 40, 96) and many.dtype == few.dtype == torch.float32
    torch.testing.assert_close(few, many, atol=0.02, rtol=0.02)
    assert (many - exact).abs().max() < 0.02 * exact.abs().max()


def test_forward_refuses_more_than_the_context():
    model = tiny_model()
    with pytest.raises(ValueError, match="context"):
        model(torch.zeros(1, model.config.context_len + 1, dtype=torch.long))


def test_lora_targets_the_attention_projections():
    from peft import LoraConfig, get_peft_model

    model = tiny_model()
    assert not any(m.bias is not None for m in model.modules() if isinstance(m, torch.nn.Linear))
    ids = torch.randint(0, TOKENIZER.vocab_size, (1, 12))
    with torch.no_grad():
        before = model(ids)[0]
    lora = get_peft_model(model, LoraConfig(r=4, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"]))
    adapted = [n for n, p in lora.named_parameters() if p.requires_grad]
    assert len(adapted) == 2 * 4 * model.config.n_layers  # A and B for each projection of each block
    with torch.no_grad():
        torch.testing.assert_close(lora(ids)[0], before)  # LoRA starts as the identity (B = 0)


def test_checkpoint_round_trip(tmp_path):
    model = tiny_model(seed=1)
    out = save_model(model, tmp_path / "lm", config=model.config, extra={"tokenizer": TOKENIZER.to_dict()})
    with safe_open(out / "model.safetensors", "pt") as f:
        assert {f.get_tensor(k).dtype for k in f.keys()}  # noqa: SIM118 (safe_open is not iterable) == {torch.float16}
    doc = load_config(out)
    assert doc["family"] == "lm" and LMConfig(**doc["model"]) == model.config
    assert Tokenizer.from_dict(doc["tokenizer"]).vocab == TOKENIZER.vocab

    loaded = load_model(out, device="cpu")
    assert loaded is load_model(out, device="cpu")  # cached
    assert not loaded.training
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(p.half().float())  # what was shipped
        ids = torch.randint(0, TOKENIZER.vocab_size, (2, 30))
        torch.testing.assert_close(loaded(ids)[0], model(ids)[0], atol=1e-6, rtol=1e-6)


def test_missing_and_damaged_checkpoints_say_so(tmp_path):
    with pytest.raises(NotAvailableError):
        load_model(tmp_path / "nothing")
    model = tiny_model()
    out = save_model(model, tmp_path / "lm", config=model.config, extra={})
    (out / "model.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(CorruptFileError):
        load_model(out, device="cpu")


# --- data -------------------------------------------------------------------------------------


def scale_notes(n_notes: int, seconds_per_note: float = 0.25) -> list[pretty_midi.Note]:
    return [
        pretty_midi.Note(velocity=40 + i % 60, pitch=48 + (i * 7) % 36, start=i * seconds_per_note,
                         end=i * seconds_per_note + 0.4)
        for i in range(n_notes)
    ]


def test_windows_are_deterministic_padded_and_decodable():
    piece = notes_to_array(scale_notes(300))
    windows = TokenWindows([piece], TOKENIZER, context_len=128, seed=3)
    a, b = windows[5], windows[5]
    assert a.shape == (129,) and torch.equal(a, b)
    assert int(a[0]) == TOKENIZER.bos_id
    assert not torch.equal(windows[5], windows[6])
    assert TokenWindows([piece], TOKENIZER, context_len=128, seed=4)[5].tolist() != a.tolist()
    assert len(TOKENIZER.decode(a.tolist())) >= 128 // 3 - 2


def test_unaugmented_window_is_the_piece_shifted_to_zero():
    notes = scale_notes(20, seconds_per_note=0.5)
    windows = TokenWindows([notes_to_array(notes)], TOKENIZER, context_len=256, augment=None)
    ids = windows[0].tolist()
    assert ids.count(TOKENIZER.eos_id) == 1 and ids[-1] == TOKENIZER.pad_id  # the whole piece fits
    decoded = TOKENIZER.decode(ids)
    assert [n.pitch for n in decoded] == [n.pitch for n in notes]
    np.testing.assert_allclose([n.start for n in decoded], [n.start for n in notes], atol=0.006)


def test_augmentation_stays_within_its_bounds():
    notes = scale_notes(40)
    windows = TokenWindows([notes_to_array(notes)], TOKENIZER, context_len=256, augment=Augment())
    seen_shifts, seen_tempi = set(), set()
    for i in range(30):
        decoded = TOKENIZER.decode(windows[i].tolist())
        assert len(decoded) == len(notes)
        shift = decoded[0].pitch - notes[0].pitch
        assert all(d.pitch - n.pitch == shift for d, n in zip(decoded, notes))
        tempo = decoded[-1].start / notes[-1].start
        assert abs(shift) <= 5 and 0.8 - 0.01 <= tempo <= 1.2 + 0.01
        seen_shifts.add(shift)
        seen_tempi.add(round(tempo, 2))
    assert len(seen_shifts) > 3 and len(seen_tempi) > 3


def test_notes_are_read_once_and_cached(data_dir, tmp_path):
    paths = sorted((data_dir / "pop909").glob("00[1-2]/00[1-2].mid"))
    assert len(paths) == 2
    first = load_pieces(paths, cache_dir=tmp_path)
    assert len(list(tmp_path.glob("*.npy"))) == 2
    again = load_pieces(paths, cache_dir=tmp_path)
    for a, b in zip(first, again):
        assert a.dtype == np.int32 and a.shape[1] == 4 and len(a) > 500
        np.testing.assert_array_equal(a, b)
        assert np.all(np.diff(a[:, 0]) >= 0)  # sorted by start


# --- n-gram baseline --------------------------------------------------------------------------


def test_kneser_ney_matches_a_hand_computed_bigram():
    # Bigrams (0,1) (1,2) (2,1) (1,2): D2 = n1/(n1+2 n2) = 2/4. Unigram continuation counts:
    # 1 follows {0, 2}, 2 follows {1}, so D1 = 1/3 and P1 = (2/27, 17/27, 8/27).
    model = KneserNey(order=2).fit([[0, 1, 2, 1, 2]], vocab_size=3)
    p = np.exp(-model.nll([[1, 0], [1, 1], [1, 2]]))
    np.testing.assert_allclose(p, [0.25 * 2 / 27, 0.25 * 17 / 27, 0.75 + 0.25 * 8 / 27], atol=1e-12)


@pytest.mark.parametrize("history", [[0, 1, 2, 3], [0, 4, 4, 4], [0, 2, 5], [0]])
def test_kneser_ney_is_a_distribution(history):
    vocab = 6
    model = KneserNey(order=4).fit([[0] + [1, 2, 3, 4] * 20, [0, 5, 1, 5]], vocab_size=vocab)
    p = np.exp(-np.array([model.nll([history + [w]])[-1] for w in range(vocab)]))
    assert math.isclose(p.sum(), 1.0, abs_tol=1e-9)
    assert p.min() > 0


@pytest.mark.parametrize("history", [[0, 1, 3], [0, 1, 3, 2], [0, 2, 4, 2, 4, 1], [0]])
def test_grammar_aware_kneser_ney_is_a_distribution_within_the_next_class(history):
    # Tokens 1, 2 (class 1) and 3, 4 (class 2) alternate, as note and onset tokens do.
    classes = np.array([0, 1, 1, 2, 2, 0])
    rng = np.random.default_rng(0)
    seqs = [[0] + [int(rng.choice([1, 2]) if i % 2 == 0 else rng.choice([3, 4])) for i in range(30)] for _ in range(5)]
    model = KneserNey(order=3, classes=classes).fit(seqs, vocab_size=6)
    next_class = 2 if classes[history[-1]] == 1 else 1
    members = np.flatnonzero(classes == next_class)
    p = np.exp(-np.array([model.nll([history + [int(w)]])[-1] for w in members]))
    assert math.isclose(p.sum(), 1.0, abs_tol=1e-9)
    plain = KneserNey(order=3).fit(seqs, vocab_size=6)
    assert p.sum() > np.exp(-np.array([plain.nll([history + [int(w)]])[-1] for w in members])).sum()


def test_kneser_ney_learns_a_pattern():
    model = KneserNey(order=4).fit([[0] + [1, 2, 3, 4] * 20], vocab_size=6)
    nll = model.nll([[0, 1, 2, 3, 4, 1, 2, 3]])
    assert nll[3:].max() < 0.1  # in the pattern: near certain
    assert model.nll([[0, 1, 2, 5]])[-1] > 3  # never seen
