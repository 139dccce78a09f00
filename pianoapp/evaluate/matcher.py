"""The matcher's seed protocol (descriptor-injected audio–MIDI paper, section 5.1): seeded queries on
the piece-disjoint test split, each ranked against a pool of segments (its true partner and random
others) in both directions; R@1/5/10 and MRR, S = min(R@10 audio→MIDI, R@10 MIDI→audio), mean and
std over several seeds.

Every segment is embedded once; seeds only change which queries and pools are drawn.
"""

import hashlib
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset, default_collate

from pianoapp.errors import BadInputError

KS = (1, 5, 10)
WAYS = ("audio_to_midi", "midi_to_audio")


@torch.inference_mode()
def embed_segments(model: nn.Module, segments: Sequence[dict], *, batch_size: int = 64,
                   towers: tuple[str, ...] = ("audio", "midi")) -> tuple[np.ndarray, ...]:
    """Embeddings (n, embed_dim) of segments ({"audio", "midi"} items), one array per tower in
    `towers` ("audio" and "midi" by default, in that order); model in eval mode."""
    from pianoapp.train.trainer import to_device

    device = next(model.parameters()).device
    embed = {"audio": model.embed_audio, "midi": model.embed_midi}
    out: dict[str, list[torch.Tensor]] = {tower: [] for tower in towers}
    for i in range(0, len(segments), batch_size):
        batch = default_collate([segments[j] for j in range(i, min(i + batch_size, len(segments)))])
        for tower in towers:
            out[tower].append(embed[tower](to_device(batch[tower], device)).embedding.float().cpu())
    return tuple(torch.cat(out[tower]).numpy() for tower in towers)


def retrieval(audio: np.ndarray, midi: np.ndarray, *, seed: int, n_queries: int, pool: int) -> dict:
    """Recall@k and MRR both ways for matched rows of `audio` and `midi` (cosine similarity).

    `n_queries` distinct rows (at most all) are drawn with `seed`; each is ranked against a pool of
    its partner and `pool - 1` other rows drawn at random. Ties count against the query, so a
    collapsed embedding scores zero, not one.
    """
    a, m = _unit(audio), _unit(midi)
    n = len(a)
    if n < 2:
        raise ValueError("retrieval needs at least two segments")
    pool = min(pool, n)
    rng = np.random.default_rng(seed)
    queries = rng.choice(n, size=min(n_queries, n), replace=False)
    ranks = {way: np.zeros(len(queries), np.int64) for way in WAYS}
    for i, q in enumerate(queries):
        others = rng.choice(n - 1, size=pool - 1, replace=False)
        members = np.concatenate([[q], others + (others >= q)])  # skip q itself
        for way, (query, keys) in zip(WAYS, ((a[q], m[members]), (m[q], a[members]))):
            sims = keys @ query
            ranks[way][i] = np.sum(sims[1:] >= sims[0])
    result: dict = {way: {**{f"R@{k}": float(np.mean(r < k)) for k in KS}, "MRR": float(np.mean(1 / (r + 1)))}
                    for way, r in ranks.items()}
    result["S"] = min(result[way]["R@10"] for way in WAYS)
    return result


def _unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def evaluate_matcher(
    model_dir: str | os.PathLike,
    *,
    data_dir: str | os.PathLike | None = None,
    split: str = "test",
    seeds: int = 5,
    n_queries: int = 500,
    pool: int = 256,
    seed: int = 0,
    soundfont: str | None = None,
    max_items: int = 0,
    batch_size: int = 64,
) -> dict:
    """The seed protocol for the matcher in model_dir on one split, rendered with `soundfont`
    (default: the first it was trained with) at the written tempo, unaugmented.

    Returns {"split", "soundfont", "pieces", "segments", "queries", "pool", "seeds",
    "audio_to_midi" and "midi_to_audio": {"R@1", "R@5", "R@10", "MRR": {"mean", "std"}},
    "S": {"mean", "std"}, "chance": {"R@1", "R@5", "R@10"}, "per_seed": [one `retrieval` per seed]}.
    Seeds are seed, seed + 1, ...; the same arguments give the same numbers.
    """
    from pianoapp.data.segments import Segments, render_pieces
    from pianoapp.models.checkpoint import load_model

    pieces, soundfont, seconds = _test_material(model_dir, data_dir, split, soundfont, max_items, seeds, n_queries, pool)
    segments = Segments(render_pieces(pieces, soundfonts=(soundfont,), per_piece=1, seconds=seconds))
    report = seed_protocol(load_model(model_dir), segments, seeds=seeds, n_queries=n_queries, pool=pool, seed=seed,
                           batch_size=batch_size)
    report = {"split": split, "soundfont": soundfont, "pieces": len(pieces), **report}
    log_part("protocol", report)
    return report


def _test_material(model_dir, data_dir, split, soundfont, max_items, seeds, n_queries, pool):
    from pianoapp.data.segments import TRAIN_SOUNDFONTS, matcher_pieces
    from pianoapp.models.checkpoint import load_config

    if seeds < 1 or n_queries < 1 or pool < 2:
        raise BadInputError("The matcher evaluation needs at least 1 seed, 1 query and a pool of 2.")
    data = load_config(model_dir).get("data", {})
    soundfont = soundfont or data.get("soundfonts", TRAIN_SOUNDFONTS)[0]
    pieces = matcher_pieces(split, data_dir=Path(data_dir) if data_dir else None, max_items=max_items)
    return pieces, soundfont, data.get("render_seconds", 60.0)


class NoisySegments(Dataset):
    """Segments with white noise at `snr_db` added to each one's audio, seeded per segment."""

    def __init__(self, segments, *, snr_db: float, seed: int):
        from pianoapp.data.augment import AudioAugment

        self.segments, self.seed = segments, seed
        self.noise = AudioAugment(gain_db=0, eq_prob=0, reverb_prob=0, noise_prob=1, snr_db=(snr_db, snr_db))

    def __len__(self) -> int:
        return len(self.segments)

    def __getitem__(self, j: int) -> dict:
        return self.segments.example(j, self.noise, np.random.default_rng([self.seed, j]))


def seed_protocol(model: nn.Module, segments, *, seeds: int = 5, n_queries: int = 500, pool: int = 256,
                  seed: int = 0, batch_size: int = 64, snr_db: float | None = None) -> dict:
    """The seed protocol's numbers for these segments (see `evaluate_matcher`); with `snr_db`, white
    noise at that SNR is added to each segment's audio (seeded per segment)."""
    _need_two(segments)
    if snr_db is not None:
        segments = NoisySegments(segments, snr_db=snr_db, seed=seed)
    audio, midi = embed_segments(model, segments, batch_size=batch_size)
    return protocol_numbers(audio, midi, seeds=seeds, n_queries=n_queries, pool=pool, seed=seed)


def _need_two(segments) -> None:
    if len(segments) < 2:
        raise BadInputError("There are fewer than two segments to match; use more pieces.")


def protocol_numbers(audio: np.ndarray, midi: np.ndarray, *, seeds: int, n_queries: int, pool: int,
                     seed: int) -> dict:
    """`seed_protocol`'s report from the segments' audio and MIDI embeddings."""
    per_seed = [{"seed": s, **retrieval(audio, midi, seed=s, n_queries=n_queries, pool=pool)}
                for s in range(seed, seed + seeds)]

    def spread(values: list[float]) -> dict:
        return {"mean": float(np.mean(values)), "std": float(np.std(values))}

    pool = min(pool, len(audio))
    return {
        "segments": len(audio),
        "queries": min(n_queries, len(audio)),
        "pool": pool,
        "seeds": [run["seed"] for run in per_seed],
        **{way: {key: spread([run[way][key] for run in per_seed]) for key in per_seed[0][way]} for way in WAYS},
        "S": spread([run["S"] for run in per_seed]),
        "chance": {f"R@{k}": min(1.0, k / pool) for k in KS},
        "per_seed": per_seed,
    }


def _transcribed(audio: np.ndarray) -> np.ndarray:
    """basic-pitch's notes for a render (`note_rows`); none for a silent one (a piece that opens in rests)."""
    from pianoapp.data.segments import note_rows
    from pianoapp.errors import PianoappError
    from pianoapp.io.midi import piano_notes
    from pianoapp.io.transcribe import transcribe

    try:
        return note_rows(piano_notes(transcribe(audio)))
    except PianoappError:
        return note_rows([])


def robustness(model_dir: str | os.PathLike, *, data_dir: str | os.PathLike | None = None, split: str = "test",
               seeds: int = 5, n_queries: int = 500, pool: int = 256, seed: int = 0, max_items: int = 0) -> dict:
    """The seed protocol under changes the matcher never trained on, one row per condition:
    both sides transposed ±2 semitones; the recording played at half or 1.5× the velocities its
    MIDI says; white noise at 30/20/10 dB SNR; the held-out soundfont; and the MIDI side replaced
    by basic-pitch's transcription of the recording. Returns {condition: {"S", "R@1 a→m", "segments"}}."""
    import dataclasses

    from pianoapp.data.segments import HELD_OUT_SOUNDFONT, Segments, render_pieces
    from pianoapp.data.sequences import PITCH, VELOCITY
    from pianoapp.models.checkpoint import load_model

    pieces, soundfont, seconds = _test_material(model_dir, data_dir, split, None, max_items, seeds, n_queries, pool)
    model = load_model(model_dir)

    def renders(of: list[np.ndarray], font: str = soundfont):
        return render_pieces(of, soundfonts=(font,), per_piece=1, seconds=seconds)

    def changed(column: int, change) -> list[np.ndarray]:
        out = []
        for piece in pieces:
            piece = piece.copy()
            piece[:, column] = change(piece[:, column])
            out.append(piece)
        return out

    written = renders(pieces)
    conditions = {"as written": (Segments(written), None)}
    for shift in (2, -2):
        moved = changed(PITCH, lambda p, s=shift: np.clip(p + s, 21, 108))
        conditions[f"transposed {shift:+d}"] = (Segments(renders(moved)), None)
    for factor in (0.5, 1.5):
        louder = renders(changed(VELOCITY, lambda v, f=factor: np.clip(np.round(v * f), 1, 127)))
        played = [dataclasses.replace(r, notes=w.notes) for r, w in zip(louder, written, strict=True)]
        conditions[f"velocity x{factor:g}"] = (Segments(played), None)
    for snr in (30, 20, 10):
        conditions[f"noise {snr} dB SNR"] = (Segments(written), snr)
    conditions[f"soundfont {HELD_OUT_SOUNDFONT}"] = (Segments(renders(pieces, HELD_OUT_SOUNDFONT)), None)
    heard = [dataclasses.replace(r, notes=_transcribed(r.audio(0, r.samples()))) for r in written]
    conditions["transcribed MIDI side"] = (Segments(heard), None)
    out, embedded = {}, {}
    for name, (segments, snr) in conditions.items():
        _need_two(segments)
        sides = []
        # Most conditions change one side only: each distinct side (same windows of the same
        # renders' audio, or of the same notes) is embedded once and shared.
        for tower in ("audio", "midi"):
            key = _side_key(segments, tower, snr)
            if key not in embedded:
                inputs = NoisySegments(segments, snr_db=snr, seed=seed) if snr is not None else segments
                embedded[key], = embed_segments(model, inputs, towers=(tower,))
            sides.append(embedded[key])
        report = protocol_numbers(*sides, seeds=seeds, n_queries=n_queries, pool=pool, seed=seed)
        out[name] = {"S": report["S"], "R@1 a→m": report["audio_to_midi"]["R@1"], "segments": report["segments"]}
        log_part("robustness", {name: out[name]})
    return out


def _side_key(segments, tower: str, snr_db: float | None) -> tuple:
    """What one tower sees of some segments: the windows, and the renders' audio (named by their
    cache files, and the noise) or their notes."""
    if tower == "audio":
        content = [str(r.path) for r in segments.renders] + [repr(snr_db)]
    else:
        content = [hashlib.sha1(r.notes.tobytes()).hexdigest() for r in segments.renders]
    return tower, segments.windows.tobytes(), *content


def log_part(name: str, report: dict) -> None:
    """A finished part of a long evaluation as one JSON line on stderr, so a later crash keeps it."""
    print(json.dumps({name: report}), file=sys.stderr, flush=True)
