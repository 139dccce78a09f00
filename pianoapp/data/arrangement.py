"""Arrangement pairs from POP909 (lead sheet → piano accompaniment) and the arranger's token layout.

Pairs. A song's lead sheet is its MELODY track, its chord annotations (chord_midi.txt) and its bars
(beat_midi.txt); the accompaniment is its PIANO track (sustain pedal folded in; BRIDGE, a second
melody, is left out). Bars follow the beat annotations: four beats for the duple songs (third
column, every other 2/4 measure of the index, which is how these songs are written: 4/4 or 12/8),
three for the triple ones (second column: 3/4 or 9/8). Songs are cut into SEGMENT_BARS-bar
segments with a HOP_BARS-bar hop from the first downbeat, as BOSSA cuts POP909; segments in which
the piano is silent are left out. A segment's style reference is another segment of the same song's
PIANO track, apart from it where the song allows (same player, same style, other notes), which the
arranger's trainer renders to audio. Splits are those of every other model (`data.splits`, by song).
Each song is read once and cached as arrays under ~/.cache/pianoapp/arrangement-v<FORMAT>/.

Style. `Style.of` sums a piano part up in three numbers a musician hears at once: how many notes a
second, how high (median pitch), how many notes struck together. Training states the target
accompaniment's own style after `<S>`; the app states the reference's, read from its transcription,
so the model learns to write in whatever style it is told and is told the reference's.

Tokens. An arrangement is one sequence in which each bar's lead sheet comes just before that bar's
accompaniment, so a model writing bar k has read the melody and chords of bars 0..k and its own
accompaniment of bars 0..k-1 (BOSSA puts the whole lead sheet before the whole arrangement; bar by
bar, the bar the model is writing is never hundreds of tokens back, and a sampler can hand the
lead sheet over one bar at a time, with no limit on the number of bars)::

    <S> density:D register:R poly:P                         the style (none: the default style)
    <bar> beats:N dur:<bar length>                          bar header
          root:R qual:Q [bass:B] onset:<t>  ...             the chords sounding in the bar
          <mel> note:<p>:v<b> onset:<t> dur:<d>  ...        melody notes starting in the bar
          <acc> note:<p>:v<b> onset:<t> dur:<d>  ...        accompaniment notes starting in the bar
    <bar> ...
    <E>

Time is the tokenizer's own: `onset:<ms>` counts from the bar's downbeat (a bar longer than the
tokenizer's 5 s segment continues after a `<T>` like any piece), `dur:<ms>` is a note's length, and
the header's `dur:` is the bar's length, so the frozen LM's time tokens keep their meaning and bars
need no grid. A chord held over the barline is restated at onset 0, so every bar says its harmony;
no chord is `root:N`. Onsets restart at each section (`<mel>`, `<acc>`), which the base
tokenizer's grammar does not know: `ArrangementCodec.allowed_next` is the grammar for sampling an
`<acc>` section. The model is trained on the tokens after each `<acc>` up to and including the
`<bar>` or `<E>` that ends the section (`target`): it writes accompaniment and says when the bar is
done; everything else is given.
"""

import hashlib
import os
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pretty_midi
import torch
from torch.utils.data import Dataset

from pianoapp.constants import DEFAULT_DATA_DIR, PIANO_PITCH_MAX, PIANO_PITCH_MIN
from pianoapp.data.attributes import MAJOR_TONICS
from pianoapp.data.corpora import Item, load_items
from pianoapp.data.sequences import END, START, array_to_notes, notes_to_array
from pianoapp.errors import BadInputError
from pianoapp.io.leadsheet import QUALITIES, Chord, LeadSheet, merge_chords, read_chord_lab
from pianoapp.io.midi import piano_notes, read_midi
from pianoapp.tokenizer import Tokenizer

FORMAT = 1  # bump when what a cached song holds changes
SEGMENT_BARS = 4
HOP_BARS = 2
TRANSPOSE = (-5, 6)  # semitones, both ends included: every key once
# POP909 index metre → (the bar this module uses, the beat_midi.txt column marking its downbeats)
POP909_BARS = {"2/4": ("4/4", 2), "6/8": ("12/8", 2), "3/4": ("3/4", 1), "9/8": ("9/8", 1)}
MIN_CHORD_S = 0.05  # a chord overlapping a bar by less is annotation jitter, not the bar's harmony

BAR, MEL, ACC = "<bar>", "<mel>", "<acc>"
QUALITY_NAMES = tuple(QUALITIES)
ARRANGEMENT_TOKENS = (
    BAR, MEL, ACC,
    *(f"root:{name}" for name in MAJOR_TONICS), "root:N",
    *(f"qual:{q}" for q in QUALITY_NAMES),
    *(f"bass:{name}" for name in MAJOR_TONICS),
    *(f"beats:{n}" for n in range(1, 13)),
)  # fmt: skip
# Style attributes of a piano part, each cut into bins at these edges (chosen from the spread of
# 4-bar POP909 PIANO segments: most fall in the middle bins, the ends hold the sparse and the busy).
STYLE_EDGES = {
    "density": (2.5, 3.5, 4.5, 5.5, 7.0, 9.0),  # notes per second
    "register": (50, 54, 57, 60, 63, 67),  # median MIDI pitch
    "poly": (1.15, 1.4, 1.7, 2.1, 2.7),  # notes per onset (1: one note at a time; 3: triads)
}
STYLE_TOKENS = tuple(f"{name}:{b}" for name, edges in STYLE_EDGES.items() for b in range(len(edges) + 1))
ARRANGEMENT_TOKENS += STYLE_TOKENS  # appended last: the tokens before keep their ids
ONSET_GROUP_S = 0.035  # notes starting this close together are struck as one


# --- songs --------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class Song:
    """A POP909 song as arrays; times in ms from the song's first downbeat."""

    song_id: str  # "pop909/001"
    melody: np.ndarray  # (n, 4) int32 [start_ms, end_ms, pitch, velocity], sorted by start
    piano: np.ndarray  # (n, 4) the same, PIANO track, pedal folded in
    chords: np.ndarray  # (m, 5) int32 [start_ms, end_ms, root (-1: none), quality index (-1), bass (-1)]
    downbeats: np.ndarray  # (bars + 1,) int64 ms: each bar's start, then the end of the last bar
    metre: str
    tempo_bpm: float  # quarter notes per minute
    key: str

    @property
    def n_bars(self) -> int:
        return len(self.downbeats) - 1


def cache_root() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "pianoapp" / f"arrangement-v{FORMAT}"


def read_song(item: Item) -> Song:
    """A POP909 song from its folder (the MIDI, chord_midi.txt and beat_midi.txt beside it)."""
    folder = item.path.parent
    pm = read_midi(item.path, max_seconds=float("inf"))
    tracks = {inst.name.strip().upper(): inst for inst in pm.instruments}
    if "MELODY" not in tracks or "PIANO" not in tracks:
        raise BadInputError(f"{item.path.name} has no MELODY and PIANO tracks; it is not a POP909 song.")
    melody = notes_to_array(sorted(tracks["MELODY"].notes, key=lambda n: (n.start, n.pitch)))
    pm.instruments = [tracks["PIANO"]]
    piano = notes_to_array(piano_notes(pm))
    metre, column = POP909_BARS[item.meta["metre"]]
    beats = np.loadtxt(folder / "beat_midi.txt", ndmin=2)
    downbeats = beats[beats[:, column] == 1, 0]
    bar = float(np.median(np.diff(downbeats)))
    beat = float(np.median(np.diff(beats[:, 0])))
    qpm = 60.0 / beat * (1.5 if metre.endswith("/8") else 1.0)  # compound beats are dotted quarters
    t0 = downbeats[0]
    downbeats_ms = np.round((np.append(downbeats, downbeats[-1] + bar) - t0) * 1000).astype(np.int64)
    rows = [(round((c.start - t0) * 1000), round((c.end - t0) * 1000), -1 if c.root is None else c.root,
             -1 if c.root is None else QUALITY_NAMES.index(c.quality), -1 if c.bass is None else c.bass)
            for c in read_chord_lab(folder / "chord_midi.txt")]
    shift = np.array([round(t0 * 1000), round(t0 * 1000), 0, 0], dtype=np.int32)
    return Song(item.item_id, melody - shift, piano - shift, np.array(rows, np.int32).reshape(-1, 5),
                downbeats_ms, metre, round(qpm, 2), item.meta.get("key") or "C major")


def _song_key(item: Item) -> str:
    digest = hashlib.sha1(item.meta["metre"].encode())
    for name in (item.path.name, "chord_midi.txt", "beat_midi.txt"):
        digest.update((item.path.parent / name).read_bytes())
    return digest.hexdigest()


def load_songs(split: str, *, data_dir: Path | None = None, max_songs: int = 0) -> list[Song]:
    """The POP909 songs of one split, read once and then from the cache; `max_songs` > 0 keeps that
    many, spread evenly over the list."""
    items = load_items("pop909", data_dir=data_dir, split=split)
    if max_songs and len(items) > max_songs:
        items = [items[i] for i in np.linspace(0, len(items) - 1, max_songs).round().astype(int)]
    folder = cache_root()
    folder.mkdir(parents=True, exist_ok=True)
    songs = []
    for item in items:
        path = folder / f"{_song_key(item)}.npz"
        if path.is_file():
            with np.load(path) as z:
                songs.append(Song(item.item_id, z["melody"], z["piano"], z["chords"], z["downbeats"],
                                  str(z["metre"]), float(z["tempo_bpm"]), str(z["key"])))
            continue
        song = read_song(item)
        tmp = path.with_name(f"{path.stem}.{os.getpid()}.tmp.npz")
        np.savez(tmp, melody=song.melody, piano=song.piano, chords=song.chords, downbeats=song.downbeats,
                 metre=song.metre, tempo_bpm=song.tempo_bpm, key=song.key)
        os.replace(tmp, path)  # atomic: parallel ranks may write the same key
        songs.append(song)
    if not songs:
        raise BadInputError(f"No POP909 songs in the {split} split of {data_dir or DEFAULT_DATA_DIR}; pass --data "
                            "with the folder that holds pop909/.")
    return songs


# --- pairs --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Pair:
    """A training pair: the lead sheet of some bars and the piano's accompaniment of them."""

    leadsheet: LeadSheet
    accompaniment: list[pretty_midi.Note]

    def transpose(self, semitones: int) -> "Pair":
        """Melody, chords and accompaniment moved together (the key name too)."""
        notes = [pretty_midi.Note(n.velocity, n.pitch + semitones, n.start, n.end) for n in self.accompaniment]
        return Pair(self.leadsheet.transpose(semitones), notes)


def _notes_in(notes: np.ndarray, t0: int, t1: int) -> np.ndarray:
    """Notes starting in [t0, t1) ms, shifted to start from t0 and cut at t1."""
    inside = notes[(notes[:, START] >= t0) & (notes[:, START] < t1)].copy()
    inside[:, END] = np.minimum(inside[:, END], t1)
    inside[:, [START, END]] -= t0
    return inside


def song_pair(song: Song, first_bar: int, n_bars: int = SEGMENT_BARS) -> Pair:
    """Bars first_bar .. first_bar + n_bars - 1 of a song, times from the first of them."""
    t0, t1 = int(song.downbeats[first_bar]), int(song.downbeats[first_bar + n_bars])
    chords = [Chord((max(s, t0) - t0) / 1000, (min(e, t1) - t0) / 1000, None if r < 0 else int(r),
                    "" if r < 0 else QUALITY_NAMES[q], None if b < 0 else int(b))
              for s, e, r, q, b in song.chords.tolist() if e > t0 and s < t1]
    sheet = LeadSheet(
        melody=array_to_notes(_notes_in(song.melody, t0, t1)), chords=merge_chords(chords),
        downbeats=(song.downbeats[first_bar : first_bar + n_bars] - t0) / 1000, end_s=(t1 - t0) / 1000,
        tempo_bpm=song.tempo_bpm, metre=song.metre, key=song.key,
        name=f"{song.song_id} bars {first_bar + 1}-{first_bar + n_bars}",
    )
    return Pair(sheet, array_to_notes(_notes_in(song.piano, t0, t1)))


class ArrangementPairs:
    """Every SEGMENT_BARS-bar segment (HOP_BARS hop) of some songs in which the piano plays;
    segment j is (song index, first bar) = `segments[j]`."""

    def __init__(self, songs: list[Song], *, bars: int = SEGMENT_BARS, hop: int = HOP_BARS):
        self.songs, self.bars = songs, bars
        rows = []
        for s, song in enumerate(songs):
            starts = song.piano[:, START]
            for first in range(0, song.n_bars - bars + 1, hop):
                t0, t1 = song.downbeats[first], song.downbeats[first + bars]
                if np.any((starts >= t0) & (starts < t1)):
                    rows.append((s, first))
        self.segments = np.array(rows, dtype=np.int64).reshape(-1, 2)

    def __len__(self) -> int:
        return len(self.segments)

    def pair(self, j: int) -> Pair:
        s, first = self.segments[j]
        return song_pair(self.songs[s], int(first), self.bars)

    def reference(self, j: int, rng: np.random.Generator) -> int:
        """Another segment of the same song, one that does not overlap segment j where there is one
        (j itself only for a song of a single segment)."""
        s, first = self.segments[j]
        same = np.flatnonzero(self.segments[:, 0] == s)
        apart = same[np.abs(self.segments[same, 1] - first) >= self.bars]
        choices = apart if len(apart) else same[same != j] if len(same) > 1 else same
        return int(rng.choice(choices))

    def first_segments(self) -> list[int]:
        """Each song's first segment, in song order: one reference per song."""
        firsts: dict[int, int] = {}
        for j, song in enumerate(self.segments[:, 0].tolist()):
            firsts.setdefault(song, j)
        return list(firsts.values())

    def piano(self, j: int) -> np.ndarray:
        """Segment j's PIANO notes (n, 4) [start_ms, end_ms, pitch, velocity] from 0: what a
        reference rendering plays."""
        s, first = self.segments[j]
        song = self.songs[s]
        return _notes_in(song.piano, int(song.downbeats[first]), int(song.downbeats[first + self.bars]))


# --- style --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Style:
    """How a piano part plays (see the module docstring)."""

    density: float  # notes per second over the part's span (first onset to last release, 1 s at least)
    register: float  # median MIDI pitch
    poly: float  # notes per onset (notes starting within ONSET_GROUP_S of a group's first are one onset)

    @classmethod
    def of(cls, notes: list[pretty_midi.Note]) -> "Style | None":
        """The style of some notes; None for none."""
        if not notes:
            return None
        starts = np.sort([n.start for n in notes])
        span = max(max(n.end for n in notes) - starts[0], 1.0)
        onsets, first = 0, -np.inf
        for start in starts:
            if start - first > ONSET_GROUP_S:
                onsets, first = onsets + 1, start
        return cls(len(notes) / float(span), float(np.median([n.pitch for n in notes])), len(notes) / onsets)

    def tokens(self) -> list[str]:
        return [f"{name}:{int(np.searchsorted(edges, getattr(self, name), side='right'))}"
                for name, edges in STYLE_EDGES.items()]

    def describe(self) -> str:
        return (f"{self.density:.1f} notes a second around {pretty_midi.note_number_to_name(round(self.register))}, "
                f"{self.poly:.1f} notes per onset")


# --- tokens -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Decoded:
    melody: list[pretty_midi.Note]
    accompaniment: list[pretty_midi.Note]
    chords: list[Chord]


class ArrangementCodec:
    """The arranger's token sequences (see the module docstring) over a piano tokenizer; `tokenizer`
    is the base one with ARRANGEMENT_TOKENS appended (every base id keeps its meaning)."""

    def __init__(self, tokenizer: Tokenizer | None = None):
        tokenizer = tokenizer or Tokenizer()
        extra = tokenizer.config.extra_tokens
        if extra == ARRANGEMENT_TOKENS:
            self.tokenizer = tokenizer
        elif not extra:
            self.tokenizer = tokenizer.with_extra_tokens(*ARRANGEMENT_TOKENS)
        else:
            raise ValueError("the tokenizer already has other extra tokens")
        t = self.tokenizer
        self.bar_id, self.mel_id, self.acc_id = (t.token_to_id[x] for x in (BAR, MEL, ACC))
        self._markers = {self.bar_id, self.mel_id, self.acc_id}
        self._style = {t.token_to_id[x] for x in STYLE_TOKENS}
        self._root = {t.token_to_id[f"root:{name}"]: pc for pc, name in enumerate(MAJOR_TONICS)}
        self._no_chord = t.token_to_id["root:N"]
        self._quality = {t.token_to_id[f"qual:{q}"]: q for q in QUALITY_NAMES}
        self._bass = {t.token_to_id[f"bass:{name}"]: pc for pc, name in enumerate(MAJOR_TONICS)}
        self._step_s = t.config.time_step_ms / 1000

    # --- encode -----------------------------------------------------------------------------

    def _steps(self, seconds: float) -> int:
        return max(round(seconds / self._step_s), 0)

    def _notes(self, notes: list[pretty_midi.Note], t0: float, t1: float) -> list[int]:
        """Note groups of the notes starting in [t0, t1), onsets from t0."""
        inside = [pretty_midi.Note(n.velocity, n.pitch, n.start - t0, n.end - t0) for n in notes if t0 <= n.start < t1]
        return self.tokenizer.encode(inside, add_bos=False, add_eos=False)

    def bar_prompt(self, sheet: LeadSheet, k: int) -> list[int]:
        """Bar k's lead sheet, from its `<bar>` to its `<acc>`: what a sampler feeds before letting
        the model write the bar."""
        t = self.tokenizer
        t0, t1 = float(sheet.downbeats[k]), float(sheet.bar_ends[k])
        length = min(max(self._steps(t1 - t0), 1), t.n_durations)
        ids = [self.bar_id, t.token_to_id[f"beats:{min(max(sheet.beats_per_bar, 1), 12)}"], t.dur_offset + length - 1]
        segment = 0
        for chord in sheet.chords:
            if min(chord.end, t1) - max(chord.start, t0) < MIN_CHORD_S:  # also every chord outside the bar
                continue
            seg, onset = divmod(self._steps(max(chord.start, t0) - t0), t.n_onsets)
            ids += [t.time_id] * (seg - segment)
            segment = seg
            if chord.root is None:
                ids.append(self._no_chord)
            else:
                ids += [t.token_to_id[f"root:{MAJOR_TONICS[chord.root]}"], t.token_to_id[f"qual:{chord.quality}"]]
                if chord.bass is not None:
                    ids.append(t.token_to_id[f"bass:{MAJOR_TONICS[chord.bass]}"])
            ids.append(t.onset_offset + onset)
        return ids + [self.mel_id] + self._notes(sheet.melody, t0, t1) + [self.acc_id]

    def style_ids(self, style: Style | None) -> list[int]:
        """What follows `<S>`: the style's tokens, none for the default style."""
        return [] if style is None else [self.tokenizer.token_to_id[x] for x in style.tokens()]

    def restyle(self, ids: torch.Tensor, target: torch.Tensor,
                style: Style | None) -> tuple[torch.Tensor, torch.Tensor]:
        """A padded example (`ArrangementExamples`) stating another style (None: the default style,
        no style stated): its style ids replaced, the rest shifted, padded or cut to its length."""
        n = int(sum(int(i) in self._style for i in ids[1 : 1 + len(STYLE_EDGES)]))
        new = torch.tensor(self.style_ids(style), dtype=ids.dtype)
        length = len(ids)
        ids = torch.cat([ids[:1], new, ids[1 + n :], ids.new_full((n,), self.tokenizer.pad_id)])[:length]
        target = torch.cat([target[:1], target.new_zeros(len(new)), target[1 + n :], target.new_zeros(n)])[:length]
        return ids, target

    def encode(self, sheet: LeadSheet, accompaniment: list[pretty_midi.Note],
               style: Style | None = None) -> tuple[list[int], list[bool]]:
        """(ids, target): the whole sequence, and which ids the model learns to write (each `<acc>`
        section and the `<bar>`/`<E>` that closes it)."""
        style_ids = self.style_ids(style)
        ids, target = [self.tokenizer.bos_id, *style_ids], [False] * (1 + len(style_ids))
        for k in range(sheet.n_bars):
            prompt = self.bar_prompt(sheet, k)
            ids += prompt
            target += [k > 0] + [False] * (len(prompt) - 1)
            section = self._notes(accompaniment, float(sheet.downbeats[k]), float(sheet.bar_ends[k]))
            ids += section
            target += [True] * len(section)
        return ids + [self.tokenizer.eos_id], target + [True]

    # --- decode -----------------------------------------------------------------------------

    def decode(self, ids: list[int], downbeats: np.ndarray | None = None) -> Decoded:
        """Melody, accompaniment and chords back from a sequence (tolerant of sampled output, like
        `Tokenizer.decode`). Bars start at `downbeats` (s) when given, else one after another at the
        lengths their headers say."""
        t = self.tokenizer
        melody: list[pretty_midi.Note] = []
        accompaniment: list[pretty_midi.Note] = []
        chords: list[Chord] = []
        bar, start, length = -1, 0.0, 0.0
        section: list[int] = []
        kind = None  # what `section` holds: "head", "mel" or "acc"
        chord: dict = {}
        segment = 0

        def flush() -> None:
            out = {"mel": melody, "acc": accompaniment}.get(kind)
            if out is not None:
                out += [pretty_midi.Note(n.velocity, n.pitch, n.start + start, n.end + start) for n in t.decode(section)]
            section.clear()

        for i in (int(x) for x in ids):
            if i == t.eos_id:
                break
            if i == self.bar_id:
                flush()
                bar += 1
                start = float(downbeats[bar]) if downbeats is not None and bar < len(downbeats) else start + length
                kind, length, segment, chord = "head", 0.0, 0, {}
            elif i in (self.mel_id, self.acc_id):
                flush()
                kind = "mel" if i == self.mel_id else "acc"
            elif kind in ("mel", "acc"):
                section.append(i)
            elif kind == "head":
                token_kind = t.token_kind(i) if 0 <= i < t.vocab_size else "special"
                if token_kind == "dur" and not length:
                    length = (i - t.dur_offset + 1) * self._step_s
                elif i == t.time_id:
                    segment += 1
                elif i in self._root or i == self._no_chord:
                    chord = {"root": self._root.get(i), "quality": "" if i == self._no_chord else "maj", "bass": None}
                elif i in self._quality and chord:
                    chord["quality"] = self._quality[i]
                elif i in self._bass and chord:
                    chord["bass"] = self._bass[i]
                elif token_kind == "onset" and chord:
                    at = start + (segment * t.n_onsets + i - t.onset_offset) * self._step_s
                    chords.append(Chord(at, at, chord["root"], chord["quality"], chord["bass"]))
                    chord = {}
        flush()
        bar_end = start + length
        ends = [c.start for c in chords[1:]] + [bar_end]
        closed = [replace(c, end=max(end, c.start)) for c, end in zip(chords, ends)]
        return Decoded(melody, accompaniment, merge_chords(closed))

    # --- grammar ----------------------------------------------------------------------------

    def allowed_next(self, prev_ids: list[int]) -> np.ndarray:
        """The ids that may follow inside an `<acc>` section: note groups whose onsets rise from the
        section's start and stay inside the bar's length, `<T>` while the bar goes on, and `<bar>`
        or `<E>` between groups to close the section."""
        t = self.tokenizer
        last = max((j for j, i in enumerate(prev_ids) if int(i) in self._markers), default=-1)
        if last < 0 or int(prev_ids[last]) != self.acc_id:
            raise ValueError("allowed_next is the grammar of an <acc> section; feed the lead sheet with bar_prompt")
        header = max(j for j, i in enumerate(prev_ids[: last + 1]) if int(i) == self.bar_id)
        bar_steps = int(prev_ids[header + 2]) - t.dur_offset + 1
        section = [int(i) for i in prev_ids[last + 1 :]]
        mask = t.allowed_next([t.bos_id, *section])
        mask[[t.bos_id, t.pad_id, t.unk_id]] = False
        mask[t.extra_offset :] = False
        mask[self.bar_id] = mask[t.eos_id]  # a bar may end wherever a piece could
        # Onsets reach the bar's length itself: a note a few ms before the next downbeat rounds onto it.
        first = section.count(t.time_id) * t.n_onsets  # steps before this segment's onset 0
        mask[t.onset_offset + max(bar_steps + 1 - first, 0) : t.dur_offset] = False
        if first + t.n_onsets > bar_steps:
            mask[t.time_id] = False
        return mask


# --- training examples --------------------------------------------------------------------------


def fit_context(ids: list[int], target: list[bool], length: int, bar_id: int) -> tuple[list[int], list[bool]]:
    """Whole bars from the start, as many as fit in `length` ids, ending on the `<bar>` that closes
    the last of them (cut mid-bar only when the first bar alone is longer)."""
    if len(ids) <= length:
        return ids, target
    bars = [j for j, i in enumerate(ids) if i == bar_id and 0 < j < length]
    cut = bars[-1] + 1 if len(bars) > 1 else length
    return ids[:cut], target[:cut]


class ArrangementExamples(Dataset):
    """Item i, a pure function of (seed, i): a segment drawn uniformly from `pairs`, transposed by a
    random TRANSPOSE semitones (none when `transpose` is False), encoded, cut to whole bars that fit
    `context_len + 1` ids and right-padded with <PAD>:
    {"ids": long (context_len + 1,), "target": bool (context_len + 1,), "segment": j, "semitones": the
    transposition, "reference": j'},
    the ids stating the accompaniment's own style (`Style.of`) after `<S>`,
    `reference` being the segment whose PIANO notes (`pairs.piano(j')`, untransposed) are rendered as
    the style reference."""

    def __init__(self, pairs: ArrangementPairs, codec: ArrangementCodec, *, context_len: int, seed: int = 0,
                 transpose: bool = True):
        if not len(pairs):
            raise ValueError("no segments to make examples from")  # callers check their data first
        self.pairs, self.codec, self.context_len, self.seed, self.transpose = pairs, codec, context_len, seed, transpose

    def __getitem__(self, i: int) -> dict:
        rng = np.random.default_rng([self.seed, i])
        j = int(rng.integers(len(self.pairs)))
        pair = self.pairs.pair(j)
        semitones = fitting_transposition(pair, rng) if self.transpose else 0
        pair = pair.transpose(semitones)
        ids, target = self.codec.encode(pair.leadsheet, pair.accompaniment, Style.of(pair.accompaniment))
        ids, target = fit_context(ids, target, self.context_len + 1, self.codec.bar_id)
        pad = self.context_len + 1 - len(ids)
        return {
            "ids": torch.tensor(ids + [self.codec.tokenizer.pad_id] * pad, dtype=torch.long),
            "target": torch.tensor(target + [False] * pad, dtype=torch.bool),
            "segment": j,
            "semitones": semitones,
            "reference": self.pairs.reference(j, rng),
        }


def fitting_transposition(pair: Pair, rng: np.random.Generator) -> int:
    """A random shift in TRANSPOSE that keeps every note on the piano."""
    pitches = [n.pitch for n in pair.leadsheet.melody + pair.accompaniment] or [60]
    lo = max(TRANSPOSE[0], PIANO_PITCH_MIN - min(pitches))
    hi = min(TRANSPOSE[1], PIANO_PITCH_MAX - max(pitches))
    return int(rng.integers(lo, hi + 1)) if lo <= hi else 0
