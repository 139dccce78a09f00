"""Lead sheets in: a melody, chord symbols, bars, metre, tempo and key, from any of the files the
arranger takes.

- MIDI with a melody and a chord track (Nottingham style): the melody is the track named like one
  (melody, lead, vocal, voice), else the highest mostly-monophonic track; the other tracks' notes
  are read as chords, beat by beat, by template matching (`chords_from_notes`).
- MIDI of one polyphonic part (a piano piece): its top line is the tune, its chords are read from
  all its notes, and they count as inferred.
- MusicXML or ABC with harmony symbols (music21 `ChordSymbol`s).
- A melody file plus chord text such as `C G Am F | F G C C` (`parse_chord_text`).
- Chord annotation files (start, end, Harte label such as `C:maj7/3`, `N`), POP909's
  chord_midi.txt (`read_chord_lab`).

With no chords anywhere they are inferred from the melody, a bar or half a bar at a time, and the
lead sheet says so (`chords_inferred`). Times are seconds from the first bar's downbeat; a pickup
sits at the end of bar 0, as Nottingham's MIDI files write it.
"""

import itertools
import os
import re
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pretty_midi

from pianoapp.data.attributes import CHORD_TOLERANCE_S, MAJOR_TONICS, MINOR_TONICS, estimate_key
from pianoapp.errors import BadInputError, TooLongError
from pianoapp.io.files import check_file, file_kind
from pianoapp.io.midi import notes_to_midi, parse_score, read_midi

MAX_BARS = 32  # the most bars one arrangement takes (`read_leadsheet(max_bars=...)` overrides it)

# Chord qualities (Harte's shorthands, as POP909 writes them) and their tones above the root. The
# order breaks ties in template matching: simpler chords first.
QUALITIES: dict[str, tuple[int, ...]] = {
    "maj": (0, 4, 7), "min": (0, 3, 7), "7": (0, 4, 7, 10), "min7": (0, 3, 7, 10),
    "maj7": (0, 4, 7, 11), "sus4": (0, 5, 7), "sus2": (0, 2, 7), "dim": (0, 3, 6), "aug": (0, 4, 8),
    "maj6": (0, 4, 7, 9), "min6": (0, 3, 7, 9), "hdim7": (0, 3, 6, 10), "dim7": (0, 3, 6, 9),
    "minmaj7": (0, 3, 7, 11), "7sus4": (0, 5, 7, 10),
}  # fmt: skip
# How each quality is written after its root in a chord symbol ("Am7", "Bm7b5").
QUALITY_SUFFIX = {
    "maj": "", "min": "m", "7": "7", "min7": "m7", "maj7": "maj7", "sus4": "sus4", "sus2": "sus2",
    "dim": "dim", "aug": "aug", "maj6": "6", "min6": "m6", "hdim7": "m7b5", "dim7": "dim7",
    "minmaj7": "mMaj7", "7sus4": "7sus4",
}  # fmt: skip
# Chord-text spellings of each quality. Extensions reduce to their seventh chord (C9 → C7, Cm11 →
# Cm7), added tones to their triad (Cadd9 → C): the arranger voices triads and sevenths.
_SUFFIXES = {
    "maj": ("", "M", "maj", "major", "add9"),
    "min": ("m", "min", "-", "minor", "madd9", "m(add9)"),
    "7": ("7", "9", "11", "13", "dom7", "7b9", "7#9", "7b5", "7#5", "7#11", "7b13"),
    "min7": ("m7", "min7", "-7", "m9", "min9", "m11", "min11", "m13", "-9"),
    "maj7": ("maj7", "M7", "Maj7", "Δ", "Δ7", "ma7", "maj9", "M9", "maj13", "Δ9"),
    "sus4": ("sus4", "sus"), "sus2": ("sus2",),
    "dim": ("dim", "o", "°", "mb5", "m(b5)"),
    "aug": ("aug", "+", "#5", "(#5)"),
    "maj6": ("6", "maj6", "M6", "6/9", "69"),
    "min6": ("m6", "min6", "-6"),
    "hdim7": ("m7b5", "min7b5", "-7b5", "ø", "ø7", "hdim7", "m7(b5)"),
    "dim7": ("dim7", "o7", "°7"),
    "minmaj7": ("mMaj7", "mmaj7", "mM7", "minmaj7", "m(maj7)", "-maj7", "-Δ7"),
    "7sus4": ("7sus4", "7sus", "9sus4", "9sus"),
}  # fmt: skip
SUFFIX_QUALITY = {suffix: quality for quality, suffixes in _SUFFIXES.items() for suffix in suffixes}
NO_CHORD = frozenset({"N", "NC", "N.C.", "n.c."})
_LETTER_PC = {"C": 0, "D": 2, "E": 4, "F": 5, "G": 7, "A": 9, "B": 11}
# Harte interval degrees (POP909's inversions "/3", "/b7") in semitones above the root.
_DEGREE = {"1": 0, "2": 2, "3": 4, "4": 5, "5": 7, "6": 9, "7": 11, "9": 2, "11": 5, "13": 9}
_HARTE_EXTRA = {"sus4(b7)": "7sus4", "9": "7", "maj9": "maj7", "min9": "min7", "11": "7", "13": "7"}
_SYMBOL = re.compile(r"([A-G])([#b♯♭]*)(.*)")

MELODY_NAMES = ("melody", "lead", "vocal", "voice", "tune")
MISSING_TONE_PENALTY = 0.1  # per chord tone that does not sound: C-E-G alone is C, not C7
BASS_BONUS = 0.05  # a root in the bass breaks ties such as Am7 / C6
# Inferring chords from a melody (tuned on 96 Nottingham tunes against their own chords, see infer_chords)
KEY_BONUS = 0.15  # the key's primary triads first
ON_BEAT_WEIGHT = 2.0  # a note struck on a beat says more about the harmony than a passing one
HOLD_MARGIN = 0.2  # keep the chord before unless another scores this much better
SPLIT_GAIN = 0.25  # split a bar in two when that explains this much more of it


@dataclass(frozen=True)
class Chord:
    start: float  # seconds
    end: float
    root: int | None  # pitch class 0-11; None for no chord ("N")
    quality: str = ""  # a QUALITIES key; "" when root is None
    bass: int | None = None  # pitch class of a bass other than the root (slash chords), else None

    @property
    def pitch_classes(self) -> frozenset[int]:
        if self.root is None:
            return frozenset()
        tones = {(self.root + i) % 12 for i in QUALITIES[self.quality]}
        return frozenset(tones | ({self.bass} if self.bass is not None else set()))

    @property
    def symbol(self) -> str:
        """As a lead sheet writes it: "Am7", "C/E", "N.C."."""
        if self.root is None:
            return "N.C."
        bass = f"/{MAJOR_TONICS[self.bass]}" if self.bass is not None else ""
        return f"{MAJOR_TONICS[self.root]}{QUALITY_SUFFIX[self.quality]}{bass}"

    def same_harmony(self, other: "Chord") -> bool:
        return (self.root, self.quality, self.bass) == (other.root, other.quality, other.bass)


@dataclass(frozen=True)
class LeadSheet:
    melody: list[pretty_midi.Note]  # one line (no two notes at once), sorted by start
    chords: list[Chord]  # sorted, not overlapping
    downbeats: np.ndarray  # bar start times (s); downbeats[0] == 0
    end_s: float  # end of the last bar
    tempo_bpm: float  # quarter notes per minute
    metre: str  # "4/4", "6/8", ...
    key: str  # "D major"
    chords_inferred: bool = False  # True when the chords were guessed from the melody
    name: str = ""

    @property
    def n_bars(self) -> int:
        return len(self.downbeats)

    @property
    def bar_ends(self) -> np.ndarray:
        return np.append(self.downbeats[1:], self.end_s)

    def chord_at(self, t: float) -> Chord | None:
        """The chord sounding at time t (s), None between chords."""
        return next((c for c in self.chords if c.start <= t < c.end), None)

    def melody_at(self, t: float) -> int | None:
        """The pitch of the melody note sounding at time t (s), None where the tune rests."""
        return next((n.pitch for n in self.melody if n.start <= t < n.end), None)

    @property
    def beats_per_bar(self) -> int:
        """Counted beats: compound metres count dotted beats (6/8 → 2, 12/8 → 4)."""
        numerator, denominator = (int(x) for x in self.metre.split("/"))
        return numerator // 3 if denominator >= 8 and numerator % 3 == 0 and numerator > 3 else numerator

    @property
    def sixteenths_per_bar(self) -> int:
        numerator, denominator = (int(x) for x in self.metre.split("/"))
        return max(1, numerator * 16 // denominator)

    def crop(self, first_bar: int, n_bars: int) -> "LeadSheet":
        """Bars first_bar .. first_bar + n_bars - 1, times from the first kept downbeat. Notes keep
        their length unless they run past the last kept bar; chords are clipped to the kept bars."""
        last = min(first_bar + n_bars, self.n_bars)
        t0, t1 = float(self.downbeats[first_bar]), float(self.bar_ends[last - 1])
        melody = [pretty_midi.Note(n.velocity, n.pitch, n.start - t0, min(n.end, t1) - t0)
                  for n in self.melody if t0 <= n.start < t1]
        chords = [replace(c, start=max(c.start, t0) - t0, end=min(c.end, t1) - t0)
                  for c in self.chords if c.end > t0 and c.start < t1]
        return replace(self, melody=melody, chords=chords, downbeats=self.downbeats[first_bar:last] - t0,
                       end_s=t1 - t0)

    def transpose(self, semitones: int) -> "LeadSheet":
        melody = [pretty_midi.Note(n.velocity, n.pitch + semitones, n.start, n.end) for n in self.melody]
        chords = [replace(c, root=None if c.root is None else (c.root + semitones) % 12,
                          bass=None if c.bass is None else (c.bass + semitones) % 12) for c in self.chords]
        tonic, mode = self.key.split(" ")
        names = MAJOR_TONICS if mode == "major" else MINOR_TONICS
        key = f"{names[(pitch_class(tonic) + semitones) % 12]} {mode}"
        return replace(self, melody=melody, chords=chords, key=key)


# --- chord symbols ------------------------------------------------------------------------------


def pitch_class(name: str) -> int:
    """'C' → 0, 'F#' → 6, 'Bb' → 10, 'Cb' → 11."""
    return (_LETTER_PC[name[0]] + sum({"#": 1, "♯": 1, "b": -1, "♭": -1}[c] for c in name[1:])) % 12


def _note_name(text: str) -> int | None:
    """The pitch class of a bare note name ('Bb'), None for anything else."""
    match = _SYMBOL.fullmatch(text)
    return pitch_class(text) if match and not match[3] else None


def parse_chord_symbol(symbol: str) -> tuple[int | None, str, int | None] | None:
    """'Am7' → (9, 'min7', None), 'C/E' → (0, 'maj', 4), 'N.C.' → (None, '', None); None if unknown."""
    if symbol in NO_CHORD:
        return None, "", None
    head, _, bass_name = symbol.partition("/")
    if bass_name == "9":  # "C6/9" is a chord, not a slash chord
        head, bass_name = symbol, ""
    match = _SYMBOL.fullmatch(head)
    bass = _note_name(bass_name) if bass_name else None
    if not match or match[3] not in SUFFIX_QUALITY or (bass_name and bass is None):
        return None
    root = pitch_class(match[1] + match[2])
    return root, SUFFIX_QUALITY[match[3]], None if bass == root else bass


def parse_chord_label(label: str) -> tuple[int | None, str, int | None] | None:
    """A Harte label as in POP909 ('C:maj7', 'A:min/b3', 'B:sus4(b7)', 'N') → (root, quality, bass);
    None if unknown. An inversion's bass is given as an interval above the root."""
    if label in ("N", "X"):
        return None, "", None
    root_name, _, rest = label.partition(":")
    quality, _, degree = (rest or "maj").partition("/")
    quality = _HARTE_EXTRA.get(quality, quality)
    root = _note_name(root_name)
    if root is None or quality not in QUALITIES:
        return None
    bass = None
    if degree:
        step = degree.lstrip("b#")
        if step not in _DEGREE:
            return None
        bass = (root + _DEGREE[step] + degree.count("#") - degree.count("b")) % 12
    return root, quality, None if bass == root else bass


def read_chord_lab(path: str | os.PathLike) -> list[Chord]:
    """Chords from an annotation file of 'start<TAB>end<TAB>label' lines (POP909's chord_midi.txt);
    consecutive lines with the same chord are merged."""
    chords, unknown = [], []
    for line in Path(path).read_text().splitlines():
        fields = line.split()
        if len(fields) < 3:
            continue
        parsed = parse_chord_label(fields[2])
        if parsed is None:
            unknown.append(fields[2])
            continue
        chords.append(Chord(float(fields[0]), float(fields[1]), *parsed))
    if unknown:
        raise BadInputError(f"{Path(path).name} has chord labels we cannot read: {', '.join(sorted(set(unknown)))}.")
    return merge_chords(chords)


def merge_chords(chords: list[Chord]) -> list[Chord]:
    """Consecutive equal chords (touching, or with a gap under 10 ms) become one."""
    merged: list[Chord] = []
    for chord in chords:
        if merged and merged[-1].same_harmony(chord) and chord.start - merged[-1].end < 0.01:
            merged[-1] = replace(merged[-1], end=chord.end)
        else:
            merged.append(chord)
    return merged


def parse_chord_text(text: str, downbeats: np.ndarray, end_s: float) -> list[Chord]:
    """`C G Am F | F G C C`: bars separated by `|`, each bar's chords splitting it evenly, laid on the
    lead sheet's bars. Fewer bars than the melody repeat in a cycle (a 4-bar progression under a
    16-bar tune); more is an error, as is any symbol we cannot read (all of them are named)."""
    bars = [bar.split() for bar in text.replace("\n", "|").split("|") if bar.strip()]
    if not bars:
        raise BadInputError("The chord text is empty; write chords like `C G Am F | F G C C`.")
    unknown = [s for bar in bars for s in bar if parse_chord_symbol(s) is None]
    if unknown:
        raise BadInputError(
            f"Unknown chord symbols: {', '.join(dict.fromkeys(unknown))}; write chords like C, Am, G7, "
            "Fmaj7, Bm7b5, Bdim, Caug, Dsus4, C6 or C/E, bars separated by |."
        )
    if len(bars) > len(downbeats):
        raise BadInputError(
            f"The chord text has {len(bars)} bars but the melody only {len(downbeats)}; give one group of "
            "chords per bar, bars separated by |."
        )
    ends = np.append(downbeats[1:], end_s)
    chords = []
    for k, (start, end) in enumerate(zip(downbeats, ends)):
        symbols = bars[k % len(bars)]
        step = (end - start) / len(symbols)
        for j, symbol in enumerate(symbols):
            chords.append(Chord(float(start + j * step), float(start + (j + 1) * step), *parse_chord_symbol(symbol)))
    return merge_chords(chords)


# --- template matching --------------------------------------------------------------------------


def _templates(qualities: tuple[str, ...]) -> np.ndarray:
    """(len(qualities), 12 roots, 12 pitch classes) binary chord-tone templates."""
    out = np.zeros((len(qualities), 12, 12))
    for q, quality in enumerate(qualities):
        for root in range(12):
            out[q, root, [(root + i) % 12 for i in QUALITIES[quality]]] = 1
    return out


def chord_scores(weights: np.ndarray, qualities: tuple[str, ...] = tuple(QUALITIES)) -> np.ndarray:
    """(len(qualities), 12) scores of every chord for a pitch-class weight vector (12,): the share
    of the weight on chord tones minus the share off them, minus MISSING_TONE_PENALTY per chord tone
    with no weight."""
    w = np.asarray(weights, dtype=np.float64)
    w = w / w.sum() if w.sum() > 0 else w
    t = _templates(qualities)
    return (t @ w) - ((1 - t) @ w) - MISSING_TONE_PENALTY * (t * (w == 0)).sum(-1)


def match_chord(weights: np.ndarray, *, bass: int | None = None,
                qualities: tuple[str, ...] = tuple(QUALITIES), bonus: np.ndarray | None = None) -> tuple[int, str, float]:
    """The best (root, quality, score) for pitch-class weights; a root in the bass and `bonus`
    ((len(qualities), 12), added to the scores) break ties; earlier qualities win exact ties."""
    scores = chord_scores(weights, qualities)
    if bass is not None:
        scores[:, bass] += BASS_BONUS
    if bonus is not None:
        scores = scores + bonus
    q, root = np.unravel_index(int(np.argmax(scores)), scores.shape)
    return int(root), qualities[q], float(scores[q, root])


def pitch_class_weights(notes: list[pretty_midi.Note], start: float, end: float) -> np.ndarray:
    """How long each pitch class sounds between start and end (s)."""
    w = np.zeros(12)
    for n in notes:
        overlap = min(n.end, end) - max(n.start, start)
        if overlap > 0:
            w[n.pitch % 12] += overlap
    return w


def chords_from_notes(notes: list[pretty_midi.Note], downbeats: np.ndarray, end_s: float,
                      beats_per_bar: int) -> list[Chord]:
    """Chords of a harmony part (block chords, or any accompaniment), one per beat where it sounds,
    equal neighbours merged; silent beats have no chord."""
    chords = []
    for start, end in zip(downbeats, np.append(downbeats[1:], end_s)):
        edges = np.linspace(start, end, beats_per_bar + 1)
        for a, b in itertools.pairwise(edges):
            w = pitch_class_weights(notes, a, b)
            if w.sum() <= 0.05 * (b - a):
                chords.append(Chord(float(a), float(b), None))
                continue
            sounding = [n.pitch for n in notes if n.start < b and n.end > a]
            root, quality, _ = match_chord(w, bass=min(sounding) % 12)
            chords.append(Chord(float(a), float(b), root, quality))
    return merge_chords(chords)


def _key_bonus(key: str) -> np.ndarray:
    """Over (maj, min) × 12 roots: KEY_BONUS for the primary triads of a key (I IV V / i iv V), 0 for
    its other triads (ii iii vi / III v VI VII), and out of reach for the rest."""
    tonic, mode = key.split(" ")
    t = pitch_class(tonic)
    bonus = np.full((2, 12), -np.inf)
    if mode == "major":
        primary, secondary = ((0, 0), (5, 0), (7, 0)), ((2, 1), (4, 1), (9, 1))
    else:
        primary, secondary = ((0, 1), (5, 1), (7, 0)), ((3, 0), (7, 1), (8, 0), (10, 0))
    for interval, q in secondary:
        bonus[q, (t + interval) % 12] = 0.0
    for interval, q in primary:
        bonus[q, (t + interval) % 12] = KEY_BONUS
    return bonus


def infer_chords(melody: list[pretty_midi.Note], downbeats: np.ndarray, end_s: float, key: str,
                 beats_per_bar: int) -> list[Chord]:
    """The key's triads guessed from the melody, one per bar, or one per half bar where that explains
    the notes much better (bars with an even number of beats). Notes struck on a beat count double;
    the chord before is kept unless another fits clearly better; a bar without notes keeps it too.
    On every 8th Nottingham tune (96; 16 bars of the melody alone) the roots agree with the tune's
    own chord track 67% of the time (62% with no beat weighting, holding or key restriction)."""
    qualities, bonus = ("maj", "min"), _key_bonus(key)

    def weights(a: float, b: float, bar_start: float, beat: float) -> np.ndarray:
        w = np.zeros(12)
        for n in melody:
            overlap = min(n.end, b) - max(n.start, a)
            if overlap > 0:
                position = (n.start - bar_start) / beat
                w[n.pitch % 12] += overlap * (ON_BEAT_WEIGHT if abs(position - round(position)) < 0.05 else 1.0)
        return w

    def best(w: np.ndarray, a: float, b: float, before: Chord | None) -> tuple[Chord, float]:
        scores = chord_scores(w, qualities) + bonus
        q, root = np.unravel_index(int(np.argmax(scores)), scores.shape)
        if before is not None and before.quality in qualities:
            kept = qualities.index(before.quality), before.root
            if scores[kept] >= scores[q, root] - HOLD_MARGIN:
                q, root = kept
        return Chord(float(a), float(b), int(root), qualities[q]), float(scores[q, root]) * w.sum()

    chords: list[Chord] = []
    for start, end in zip(downbeats, np.append(downbeats[1:], end_s)):
        beat = (end - start) / beats_per_bar
        before = chords[-1] if chords else None
        w = weights(start, end, start, beat)
        if w.sum() == 0:
            if chords:
                chords[-1] = replace(chords[-1], end=float(end))
            continue
        whole, whole_score = best(w, start, end, before)
        parts = [whole]
        middle = (start + end) / 2
        w1, w2 = weights(start, middle, start, beat), weights(middle, end, start, beat)
        if beats_per_bar % 2 == 0 and w1.sum() and w2.sum():
            first, s1 = best(w1, start, middle, before)
            second, s2 = best(w2, middle, end, first)
            if not first.same_harmony(second) and s1 + s2 - whole_score > SPLIT_GAIN * w.sum():
                parts = [first, second]
        if chords and chords[-1].end < parts[0].start:  # a silent bar before: hold the last chord
            chords[-1] = replace(chords[-1], end=parts[0].start)
        chords.extend(parts)
    return merge_chords(chords)


# --- reading ------------------------------------------------------------------------------------


def top_line(notes: list[pretty_midi.Note]) -> list[pretty_midi.Note]:
    """The highest voice: the top note of each attack, inner notes struck under a held higher note
    dropped, each note cut where the next begins."""
    line: list[pretty_midi.Note] = []
    for n in sorted(notes, key=lambda n: (n.start, -n.pitch)):
        if line and n.start - line[-1].start < CHORD_TOLERANCE_S:
            continue  # a lower note of the same attack
        if line and line[-1].end > n.start + CHORD_TOLERANCE_S and line[-1].pitch > n.pitch:
            continue  # an inner voice under a held melody note
        if line:
            line[-1].end = min(line[-1].end, n.start)
        line.append(pretty_midi.Note(n.velocity, n.pitch, n.start, n.end))
    return line


def _mostly_monophonic(notes: list[pretty_midi.Note]) -> bool:
    starts = np.array(sorted(n.start for n in notes))
    return len(starts) < 2 or float(np.mean(np.diff(starts) > CHORD_TOLERANCE_S)) >= 0.8


def _split_tracks(tracks: list[pretty_midi.Instrument]) -> tuple[list[pretty_midi.Note], list[pretty_midi.Note]]:
    """(melody track's notes, every other track's notes)."""
    named = [t for t in tracks if any(word in t.name.lower() for word in MELODY_NAMES)]
    if named:
        melody = named[0]
    else:
        mono = [t for t in tracks if _mostly_monophonic(t.notes)] or tracks
        melody = max(mono, key=lambda t: np.mean([n.pitch for n in t.notes]))
    return list(melody.notes), [n for t in tracks if t is not melody for n in t.notes]


def _bars(downbeats: np.ndarray, last_sound: float) -> tuple[np.ndarray, float]:
    """The downbeats of the bars that hold music, and the end of the last one."""
    downbeats = np.asarray(downbeats, dtype=np.float64)
    keep = downbeats[downbeats < last_sound - 1e-6]
    if len(keep) == 0:
        keep = downbeats[:1]
    bar = float(np.median(np.diff(downbeats))) if len(downbeats) > 1 else 2.0
    end = float(downbeats[len(keep)]) if len(downbeats) > len(keep) else float(keep[-1]) + bar
    return keep, end


def _from_midi(path: Path) -> tuple[list, list | None, bool, np.ndarray, float, float, str]:
    """(melody, harmony notes or None, whether the harmony is a written chord part, downbeats, end,
    tempo, metre) of a MIDI file."""
    pm = read_midi(path)
    tracks = [t for t in pm.instruments if not t.is_drum and t.notes]
    written = len(tracks) > 1
    if written:
        melody, harmony = _split_tracks(tracks)
    elif _mostly_monophonic(tracks[0].notes):
        melody, harmony = list(tracks[0].notes), None
    else:  # one polyphonic part (a piano piece): its top line is the tune, its notes imply the chords
        melody, harmony = list(tracks[0].notes), list(tracks[0].notes)
    last = max(n.end for t in tracks for n in t.notes)
    downbeats, end = _bars(pm.get_downbeats(), last)
    signature = pm.time_signature_changes[0] if pm.time_signature_changes else None
    metre = f"{signature.numerator}/{signature.denominator}" if signature else "4/4"
    return melody, harmony, written, downbeats, end, float(pm.get_tempo_changes()[1][0]), metre


_MUSIC21_KINDS = {
    "major": "maj", "minor": "min", "augmented": "aug", "diminished": "dim", "dominant-seventh": "7",
    "major-seventh": "maj7", "minor-seventh": "min7", "half-diminished-seventh": "hdim7",
    "diminished-seventh": "dim7", "major-sixth": "maj6", "minor-sixth": "min6",
    "minor-major-seventh": "minmaj7", "suspended-second": "sus2", "suspended-fourth": "sus4",
    "suspended-fourth-seventh": "7sus4", "dominant-ninth": "7", "dominant-11th": "7", "dominant-13th": "7",
    "major-ninth": "maj7", "major-11th": "maj7", "major-13th": "maj7", "minor-ninth": "min7",
    "minor-11th": "min7", "minor-13th": "min7",
}  # fmt: skip


def _from_score(path: Path) -> tuple[list, list[Chord], np.ndarray, float, float, str]:
    """(melody, chords, downbeats, end, tempo, metre) of a MusicXML/ABC file; tempo changes and
    repeats are not followed (the score is read as written, at its first tempo)."""
    import music21  # slow import, only when a score arrives
    from music21 import harmony, stream

    score = parse_score(path)
    marks = list(score.flatten().getElementsByClass(music21.tempo.MetronomeMark))
    qpm = float(marks[0].getQuarterBPM()) if marks else 120.0
    seconds = 60.0 / qpm
    parts = list(score.parts) or [score]
    lines = []
    for part in parts:
        notes = []
        for el in part.stripTies().flatten().notes:
            if isinstance(el, harmony.ChordSymbol) or el.quarterLength < 0:  # a damaged score's negative lengths
                continue
            pitch = max(p.midi for p in el.pitches)
            start = float(el.offset) * seconds
            notes.append(pretty_midi.Note(90, pitch, start, start + float(el.quarterLength) * seconds))
        lines.append(notes)
    candidates = [notes for notes in lines if notes] or [[]]
    melody = max(candidates, key=lambda ns: np.mean([n.pitch for n in ns]) if ns else 0)
    measures = list(parts[0].getElementsByClass(stream.Measure))
    # A pickup measure is short at its start: its downbeat lies before the score's first offset.
    downbeats = np.array([(float(m.offset) - float(m.paddingLeft)) * seconds for m in measures] or [0.0])
    symbols = sorted(score.flatten().getElementsByClass(harmony.ChordSymbol), key=lambda cs: cs.offset)
    piece_end = float(score.highestTime) * seconds
    chords = []
    for cs, following in zip(symbols, [*symbols[1:], None]):
        start = float(cs.offset) * seconds
        end = float(following.offset) * seconds if following is not None else piece_end
        if isinstance(cs, harmony.NoChord) or not cs.pitches:
            chords.append(Chord(start, end, None))
            continue
        root, bass = cs.root().pitchClass, cs.bass().pitchClass
        quality = _MUSIC21_KINDS.get(cs.chordKind)
        if quality is None:  # a kind we have no name for: the closest chord to its pitches
            w = np.bincount([p.pitchClass for p in cs.pitches], minlength=12).astype(float)
            root, quality, _ = match_chord(w, bass=bass)
        chords.append(Chord(start, end, root, quality, None if bass == root else bass))
    signatures = list(score.flatten().getElementsByClass(music21.meter.TimeSignature))
    metre = signatures[0].ratioString if signatures else "4/4"
    shift = -float(downbeats[0])
    melody = [pretty_midi.Note(n.velocity, n.pitch, n.start + shift, n.end + shift) for n in melody]
    chords = [replace(c, start=c.start + shift, end=c.end + shift) for c in chords]
    last = max([n.end for n in melody] + [c.end for c in chords if c.root is not None] + [piece_end + shift])
    downbeats, end = _bars(downbeats + shift, last)
    return melody, merge_chords(chords), downbeats, end, qpm, metre


def read_leadsheet(
    path: str | os.PathLike, chords_text: str | None = None, *, first_bar: int = 0, bars: int | None = None,
    max_bars: int | None = MAX_BARS,
) -> LeadSheet:
    """A lead sheet from a MIDI, MusicXML or ABC file (see the module docstring); `chords_text`
    replaces any chords the file has. `first_bar` and `bars` pick the bars to keep (bar 0 holds
    a pickup, if any); more than `max_bars` kept bars is refused (None: no cap)."""
    path = check_file(path)
    kind = file_kind(path)
    if kind == "audio":
        raise BadInputError(f"{path.name} is a recording; a lead sheet is a MIDI or score file with a melody.")
    harmony, written, chords = None, True, None
    if kind == "midi":
        melody, harmony, written, downbeats, end, tempo, metre = _from_midi(path)
    else:
        melody, chords, downbeats, end, tempo, metre = _from_score(path)
    melody = top_line(melody)
    if not melody:
        raise BadInputError(f"{path.name} has no melody notes; a lead sheet needs a tune to arrange.")
    # Bars of silence before the music are not part of the tune: bar 0 is the first that sounds.
    first_sound = min(n.start for n in melody + (harmony or []))
    silent = int(np.searchsorted(np.append(downbeats[1:], end), first_sound + 1e-6, side="right"))
    n_bars = len(downbeats) - silent
    if not 0 <= first_bar < n_bars or (bars is not None and bars < 1):
        raise BadInputError(f"{path.name} has {n_bars} bars; bars {first_bar + 1} to "
                            f"{first_bar + (bars or 1)} are not there to arrange.")
    count = n_bars - first_bar if bars is None else min(bars, n_bars - first_bar)
    if max_bars is not None and count > max_bars:
        where = f" from bar {first_bar + 1} on" if first_bar else ""
        raise TooLongError(f"{path.name} has {count} bars{where}; arrangement takes at most {max_bars} — cut it "
                           "first, or choose fewer bars.")
    key_notes = melody + (harmony or [])
    tonic, mode, _ = estimate_key(np.array([n.pitch for n in key_notes]),
                                  np.array([n.end - n.start for n in key_notes]))
    sheet = LeadSheet(melody=melody, chords=[], downbeats=downbeats, end_s=end, tempo_bpm=tempo, metre=metre,
                      key=f"{tonic} {mode}", name=path.stem)
    if chords_text is not None:
        chords, inferred = parse_chord_text(chords_text, downbeats, end), False
    elif harmony:
        chords, inferred = chords_from_notes(harmony, downbeats, end, sheet.beats_per_bar), not written
    elif chords and any(c.root is not None for c in chords):
        inferred = False
    else:
        chords, inferred = infer_chords(melody, downbeats, end, sheet.key, sheet.beats_per_bar), True
    sheet = replace(sheet, chords=chords, chords_inferred=inferred)
    return sheet if (silent, count) == (0, n_bars) else sheet.crop(silent + first_bar, count)


def arrangement_midi(sheet: LeadSheet, accompaniment: list[pretty_midi.Note]) -> pretty_midi.PrettyMIDI:
    """The arranged piece: the melody on one track, the accompaniment on another, in the lead
    sheet's tempo and metre."""
    pm = notes_to_midi({"melody": sheet.melody, "accompaniment": accompaniment}, tempo=sheet.tempo_bpm)
    numerator, denominator = (int(x) for x in sheet.metre.split("/"))
    pm.time_signature_changes = [pretty_midi.TimeSignature(numerator, denominator, 0.0)]
    return pm
