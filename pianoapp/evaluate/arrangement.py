"""How good an arrangement is, and the held-out protocol that scores arrangers side by side.

Metrics (lead sheet, accompaniment; times in seconds, frames on the lead sheet's own bars):

- Melody preservation: the melody and the accompaniment are played together; at the centre of
  every 16th-note frame of every bar where a melody note sounds, is the pitch class of the highest
  sounding note the melody's? The share of those frames that say yes (chroma accuracy of the top
  line). 1.0 means the melody is always on top (an octave doubling above it counts as on top).
- Chord accuracy: for every span of a given chord (not N.C.) in which the accompaniment sounds,
  weight each pitch class by how long the accompaniment sounds it in the span (a note counts for
  its overlap with the span) and score every triad template, twelve roots × maj, min, dim, aug,
  sus2, sus4, with `io.leadsheet.chord_scores` (weight on template tones minus weight off them,
  minus 0.1 per silent template tone). The span is right when the given chord, reduced to its
  triad (C7 and Cmaj7 → C, Cm7 → Cm, Cm7b5 and Cdim7 → Cdim, C7sus4 → Csus4, C6 → C, Cm6 → Cm), scores
  at least as high as every template; spans count by their length. Spans where the accompaniment
  is silent are left out; a slash chord is judged by its chord, not its bass.
- Pitch-class entropy (Wu & Yang 2020, "The Jazz Transformer on the Front Line", H): the Shannon
  entropy (bits) of the histogram of the accompaniment's note onsets over the 12 pitch classes,
  over windows of 1 bar and of 4 bars (hop 1 bar; a POP909 segment is one 4-bar window), averaged
  over the windows that hold notes: `entropy_1bar`, `entropy_4bar`. Higher is more chromatic.
- Groove consistency (Wu & Yang 2020, GS): each bar's onsets as a binary vector over its 16th-note
  positions (Q of them, onsets rounded to the nearest); the mean over all pairs of bars of
  1 − |XOR| / Q. 1.0 repeats one rhythm every bar.

Style against the reference: entropy and groove are compared with those of the segment's style
reference (another segment of the same song's PIANO track): `entropy_gap`, `groove_gap` are the mean
absolute differences. The true PIANO track scores the gap two segments of one song have anyway.
"""

import itertools
from collections.abc import Callable

import numpy as np
import pretty_midi

from pianoapp.io.leadsheet import Chord, LeadSheet, chord_scores, pitch_class_weights

# Arranger: (lead sheet, style reference's notes, seed) → accompaniment notes.
Arranger = Callable[[LeadSheet, list[pretty_midi.Note], int], list[pretty_midi.Note]]
TRIADS = ("maj", "min", "dim", "aug", "sus2", "sus4")
TRIAD_OF = {
    "maj": "maj", "min": "min", "dim": "dim", "aug": "aug", "sus2": "sus2", "sus4": "sus4", "7": "maj",
    "maj7": "maj", "maj6": "maj", "min7": "min", "min6": "min", "minmaj7": "min", "hdim7": "dim",
    "dim7": "dim", "7sus4": "sus4",
}  # fmt: skip
METRICS = ("melody_preservation", "chord_accuracy", "entropy_1bar", "entropy_4bar", "groove")


def frame_times(sheet: LeadSheet) -> np.ndarray:
    """The centres of the 16th-note frames of every bar."""
    q = sheet.sixteenths_per_bar
    return np.concatenate([t0 + (np.arange(q) + 0.5) * (t1 - t0) / q
                           for t0, t1 in zip(sheet.downbeats, sheet.bar_ends)])


def top_pitch(notes: list[pretty_midi.Note], times: np.ndarray) -> np.ndarray:
    """The highest pitch sounding at each time (-1 where nothing sounds)."""
    top = np.full(len(times), -1)
    for n in notes:
        sounding = (times >= n.start) & (times < n.end)
        top[sounding] = np.maximum(top[sounding], n.pitch)
    return top


def melody_preservation(sheet: LeadSheet, accompaniment: list[pretty_midi.Note]) -> float:
    """Chroma accuracy of the top line against the melody (see the module docstring); nan when the
    melody never sounds."""
    times = frame_times(sheet)
    melody = top_pitch(sheet.melody, times)
    frames = melody >= 0
    if not frames.any():
        return float("nan")
    top = top_pitch(sheet.melody + accompaniment, times)
    return float(np.mean(top[frames] % 12 == melody[frames] % 12))


def chord_accuracy(chords: list[Chord], accompaniment: list[pretty_midi.Note]) -> float:
    """The length-weighted share of chord spans whose chord the accompaniment sounds (see the module
    docstring); nan when no chord span has accompaniment."""
    right = total = 0.0
    for chord in chords:
        length = chord.end - chord.start
        if chord.root is None or length <= 0:
            continue
        w = pitch_class_weights(accompaniment, chord.start, chord.end)
        if w.sum() == 0:
            continue
        scores = chord_scores(w, TRIADS)
        given = scores[TRIADS.index(TRIAD_OF[chord.quality]), chord.root]
        right += length * float(given >= scores.max() - 1e-9)
        total += length
    return right / total if total else float("nan")


def _entropy(pitches: list[int]) -> float:
    p = np.bincount(np.asarray(pitches) % 12, minlength=12) / len(pitches)
    p = p[p > 0]
    return float(-(p * np.log2(p)).sum())


def pitch_class_entropy(sheet: LeadSheet, notes: list[pretty_midi.Note], *, bars: int = 1) -> float:
    """Mean pitch-class entropy over windows of `bars` bars (hop 1) that hold onsets; nan if none."""
    values = []
    for k in range(max(sheet.n_bars - bars + 1, 1)):
        t0, t1 = sheet.downbeats[k], sheet.bar_ends[min(k + bars, sheet.n_bars) - 1]
        pitches = [n.pitch for n in notes if t0 <= n.start < t1]
        if pitches:
            values.append(_entropy(pitches))
    return float(np.mean(values)) if values else float("nan")


def groove_similarity(sheet: LeadSheet, notes: list[pretty_midi.Note]) -> float:
    """Wu & Yang's grooving pattern similarity over the bars (see the module docstring); nan with
    fewer than two bars."""
    q = sheet.sixteenths_per_bar
    grooves = []
    for t0, t1 in zip(sheet.downbeats, sheet.bar_ends):
        onsets = np.array([n.start for n in notes if t0 <= n.start < t1])
        g = np.zeros(q, dtype=bool)
        g[np.clip(np.round((onsets - t0) / (t1 - t0) * q).astype(int), 0, q - 1)] = True
        grooves.append(g)
    pairs = [1 - np.mean(a ^ b) for a, b in itertools.combinations(grooves, 2)]
    return float(np.mean(pairs)) if pairs else float("nan")


def arrangement_metrics(sheet: LeadSheet, accompaniment: list[pretty_midi.Note]) -> dict[str, float]:
    return {
        "melody_preservation": melody_preservation(sheet, accompaniment),
        "chord_accuracy": chord_accuracy(sheet.chords, accompaniment),
        "entropy_1bar": pitch_class_entropy(sheet, accompaniment, bars=1),
        "entropy_4bar": pitch_class_entropy(sheet, accompaniment, bars=4),
        "groove": groove_similarity(sheet, accompaniment),
    }


def baseline_arranger(sheet: LeadSheet, reference: list[pretty_midi.Note], seed: int) -> list[pretty_midi.Note]:
    """The rule-based baseline as an `Arranger` (it ignores the reference and the seed)."""
    from pianoapp.models.rule_arranger import arrange  # the models package imports torch; metrics need not

    return arrange(sheet)


def evaluate_arrangers(
    arrangers: dict[str, Arranger] | None = None, *, data_dir=None, split: str = "test", n_segments: int = 200,
    seed: int = 0,
) -> dict:
    """Score arrangers on `n_segments` POP909 segments of one split, drawn with `seed`, beside the
    true PIANO track ("true", the upper reference); `arrangers` defaults to the rule-based baseline.
    Each gets the segment's lead sheet, its style reference's notes and seed + segment number.

    Returns {"split", "segments", "seed", "systems": {name: {metric: mean, ..., "entropy_gap",
    "groove_gap"}}, "references": {"entropy_4bar", "groove"}}; means skip segments where a metric
    is undefined (no melody, no chords, fewer than two bars)."""
    from pianoapp.data.arrangement import ArrangementPairs, load_songs
    from pianoapp.data.sequences import array_to_notes

    arrangers = {"baseline": baseline_arranger} if arrangers is None else arrangers
    pairs = ArrangementPairs(load_songs(split, data_dir=data_dir))
    rng = np.random.default_rng(seed)
    chosen = rng.choice(len(pairs), size=min(n_segments, len(pairs)), replace=False)
    rows: dict[str, list[dict]] = {name: [] for name in ["true", *arrangers]}
    references = []
    for i, j in enumerate(chosen.tolist()):
        pair = pairs.pair(j)
        r = pairs.reference(j, rng)
        reference = arrangement_metrics(pairs.pair(r).leadsheet, pairs.pair(r).accompaniment)
        references.append(reference)
        reference_notes = array_to_notes(pairs.piano(r))
        for name, table in rows.items():
            notes = pair.accompaniment if name == "true" else arrangers[name](pair.leadsheet, reference_notes, seed + i)
            row = arrangement_metrics(pair.leadsheet, notes)
            row["entropy_gap"] = abs(row["entropy_4bar"] - reference["entropy_4bar"])
            row["groove_gap"] = abs(row["groove"] - reference["groove"])
            table.append(row)

    def means(table: list[dict]) -> dict[str, float]:
        return {key: round(float(np.nanmean([row[key] for row in table])), 4) for key in table[0]}

    return {
        "split": split, "segments": len(chosen), "seed": seed,
        "systems": {name: means(table) for name, table in rows.items()},
        "references": {key: value for key, value in means(references).items() if key in ("entropy_4bar", "groove")},
    }
