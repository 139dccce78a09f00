"""Aria-style piano tokens: absolute onsets inside fixed segments, exact to one time step.

A note is three tokens: `note:<pitch>:v<velocity bin>`, `onset:<ms since segment start>`,
`dur:<ms>`. Time is cut into segments (5000 ms by default); each segment boundary before a note
is one `<T>` token, so a note's absolute onset is (number of `<T>` so far) * segment + onset.
A piece is `<S>`, its notes sorted by (onset, pitch, duration), then `<E>`.

Ids are laid out as: specials, notes, onsets, durations, then `config.extra_tokens` (conditioning
tokens added later, e.g. by the arranger). Appending extra tokens never moves an existing id; any
other change to the layout must bump `Tokenizer.VERSION`.
"""

import json
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import pretty_midi

from pianoapp import constants
from pianoapp.errors import CorruptFileError
from pianoapp.io.midi import notes_to_midi, piano_notes

PAD, BOS, EOS, TIME, UNK = "<PAD>", "<S>", "<E>", "<T>", "<UNK>"
SPECIAL_TOKENS = (PAD, BOS, EOS, TIME, UNK)
# Kind codes in the id -> kind table; extra tokens report themselves as "special".
_SPECIAL, _TIME, _NOTE, _ONSET, _DUR, _EXTRA = range(6)
_KIND_NAMES = ("special", "time", "note", "onset", "dur", "special")


@dataclass(frozen=True)
class TokenizerConfig:
    time_step_ms: int = 10
    segment_ms: int = 5000
    velocity_bins: int = 12
    # 10 s leaves 99.9% of the notes of pedalled ASAP performances unclamped; the 0.1% beyond are
    # pedal-held decays, near silence by then, too rare for the model to learn 10 ms steps of.
    max_duration_ms: int = 10_000
    pitch_min: int = constants.PIANO_PITCH_MIN
    pitch_max: int = constants.PIANO_PITCH_MAX
    extra_tokens: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.segment_ms % self.time_step_ms or self.max_duration_ms % self.time_step_ms:
            raise ValueError("segment_ms and max_duration_ms must be multiples of time_step_ms")
        if self.pitch_max - self.pitch_min < 11:
            raise ValueError("the pitch range must span at least an octave (pitches are folded by octaves)")
        if not 1 <= self.velocity_bins <= 127:
            raise ValueError("velocity_bins must be between 1 and 127")
        if len(set(self.extra_tokens)) != len(self.extra_tokens):
            raise ValueError("extra_tokens must be unique")


class Tokenizer:
    VERSION = "1"

    def __init__(self, config: TokenizerConfig = TokenizerConfig()):
        self.config = c = config
        self.n_onsets = c.segment_ms // c.time_step_ms
        # Durations run from one step to the maximum: a note that sounds lasts at least a step.
        self.n_durations = c.max_duration_ms // c.time_step_ms
        pitches = range(c.pitch_min, c.pitch_max + 1)
        notes = [f"note:{p}:v{b}" for p in pitches for b in range(c.velocity_bins)]
        onsets = [f"onset:{i * c.time_step_ms}" for i in range(self.n_onsets)]
        durations = [f"dur:{(i + 1) * c.time_step_ms}" for i in range(self.n_durations)]
        self.vocab: list[str] = [*SPECIAL_TOKENS, *notes, *onsets, *durations, *c.extra_tokens]
        self.vocab_size = len(self.vocab)
        self.token_to_id = {tok: i for i, tok in enumerate(self.vocab)}
        if len(self.token_to_id) != self.vocab_size:
            raise ValueError("extra_tokens must not repeat a built-in token")
        self.pad_id, self.bos_id, self.eos_id, self.time_id, self.unk_id = (
            self.token_to_id[t] for t in SPECIAL_TOKENS
        )
        self.note_offset = len(SPECIAL_TOKENS)
        self.onset_offset = self.note_offset + len(notes)
        self.dur_offset = self.onset_offset + len(onsets)
        self.extra_offset = self.dur_offset + len(durations)

        self._kind = np.full(self.vocab_size, _SPECIAL, dtype=np.int8)
        self._kind[self.time_id] = _TIME
        self._kind[self.note_offset : self.onset_offset] = _NOTE
        self._kind[self.onset_offset : self.dur_offset] = _ONSET
        self._kind[self.dur_offset : self.extra_offset] = _DUR
        self._kind[self.extra_offset :] = _EXTRA
        # Grammar masks by what may come next (see allowed_next).
        self._group_start = np.isin(self._kind, (_NOTE, _TIME, _EXTRA))
        self._group_start[self.eos_id] = True
        self._after_note = self._kind == _ONSET
        self._after_onset = self._kind == _DUR
        self._after_start = self._group_start.copy()
        self._after_start[self.bos_id] = True
        self._after_end = np.zeros(self.vocab_size, dtype=bool)
        self._after_end[self.pad_id] = True
        # Equal-width bins over the audible velocities 1..127 (0 joins the quietest bin).
        bins = np.clip((np.arange(128) - 1) * c.velocity_bins // 127, 0, c.velocity_bins - 1)
        self._bin_of_velocity = bins

    # --- velocity ---------------------------------------------------------------------------

    def velocity_bin(self, velocity: int) -> int:
        return int(self._bin_of_velocity[min(max(int(velocity), 0), 127)])

    def bin_velocity(self, bin: int) -> int:
        """The MIDI velocity at the centre of a bin."""
        # Bin b holds velocities v with v - 1 in [b * width, (b + 1) * width).
        width = 127 / self.config.velocity_bins
        return round(0.5 + (bin + 0.5) * width)

    # --- encode -----------------------------------------------------------------------------

    def encode(
        self, notes: list[pretty_midi.Note], *, add_bos: bool = True, add_eos: bool = True
    ) -> list[int]:
        """Notes to ids. Times snap to the step grid; durations are clamped to [one step, max_duration_ms]."""
        c = self.config
        n = len(notes)
        per_second = 1000 / c.time_step_ms
        start = np.fromiter((x.start for x in notes), np.float64, n)
        end = np.fromiter((x.end for x in notes), np.float64, n)
        pitch = np.fromiter((x.pitch for x in notes), np.int64, n)
        velocity = np.fromiter((x.velocity for x in notes), np.int64, n)

        # Snap onset and release to the grid separately, so both land within half a step.
        onset = np.maximum(np.rint(start * per_second).astype(np.int64), 0)
        dur = np.clip(np.rint(end * per_second).astype(np.int64) - onset, 1, self.n_durations)
        # Out-of-range pitches (e.g. after transposition augmentation) move by octaves, as in piano_notes.
        lo, hi = c.pitch_min, c.pitch_max
        pitch = np.where(pitch < lo, pitch + 12 * -((pitch - lo) // 12), pitch)
        pitch = np.where(pitch > hi, pitch - 12 * ((pitch - hi + 11) // 12), pitch)

        order = np.lexsort((dur, pitch, onset))
        onset, dur, pitch, velocity = onset[order], dur[order], pitch[order], velocity[order]
        segment, onset_in_segment = np.divmod(onset, self.n_onsets)

        # Note i starts at 3*i + segment[i]: every slot not taken by a note triple is a <T>.
        n_time = int(segment[-1]) if n else 0
        ids = np.full(3 * n + n_time, self.time_id, dtype=np.int64)
        at = 3 * np.arange(n) + segment
        velocity_bin = self._bin_of_velocity[np.clip(velocity, 0, 127)]
        ids[at] = self.note_offset + (pitch - lo) * c.velocity_bins + velocity_bin
        ids[at + 1] = self.onset_offset + onset_in_segment
        ids[at + 2] = self.dur_offset + dur - 1
        return [self.bos_id] * add_bos + ids.tolist() + [self.eos_id] * add_eos

    def encode_midi(self, pm: pretty_midi.PrettyMIDI) -> list[int]:
        """All non-drum tracks as one piano part, sustain pedal folded into durations."""
        return self.encode(piano_notes(pm))

    # --- decode -----------------------------------------------------------------------------

    def decode(self, ids: Sequence[int]) -> list[pretty_midi.Note]:
        """Ids to notes, tolerant of sampled output.

        Incomplete or out-of-order note groups (an onset earlier than the previous one in the same
        segment) are skipped; unknown ids and extra tokens are ignored; decoding stops at `<E>`.
        Onsets come out non-decreasing and every duration is at least one step.
        """
        c = self.config
        kinds = self._kind.tolist()
        notes: list[pretty_midi.Note] = []
        segment_start = 0  # in steps
        last_onset = 0  # steps within the current segment
        note = onset = None  # the group being read
        for i in (int(x) for x in ids):
            kind = kinds[i] if 0 <= i < self.vocab_size else _SPECIAL
            if kind == _NOTE:
                note, onset = i - self.note_offset, None
            elif (
                kind == _ONSET and note is not None and onset is None and i - self.onset_offset >= last_onset
            ):
                onset = i - self.onset_offset
            elif kind == _DUR and onset is not None:
                pitch, bin = divmod(note, c.velocity_bins)
                begin = segment_start + onset
                notes.append(
                    pretty_midi.Note(
                        velocity=self.bin_velocity(bin),
                        pitch=c.pitch_min + pitch,
                        start=begin * c.time_step_ms / 1000,
                        end=(begin + i - self.dur_offset + 1) * c.time_step_ms / 1000,
                    )
                )
                last_onset, note, onset = onset, None, None
            else:
                note = onset = None
                if kind == _TIME:
                    segment_start += self.n_onsets
                    last_onset = 0
                elif i == self.eos_id:
                    break
        return notes

    def decode_to_midi(self, ids: Sequence[int]) -> pretty_midi.PrettyMIDI:
        return notes_to_midi(self.decode(ids))

    # --- grammar ----------------------------------------------------------------------------

    def token_kind(self, token_id: int) -> str:
        """One of note, onset, dur, time, special (extra tokens count as special)."""
        return _KIND_NAMES[self._kind[token_id]]

    def note_pitch(self, token_id: int) -> int:
        """The MIDI pitch of a note token."""
        return self.config.pitch_min + (token_id - self.note_offset) // self.config.velocity_bins

    def allowed_next(self, prev_ids: Sequence[int]) -> np.ndarray:
        """Boolean mask over the vocabulary of the ids that may follow `prev_ids`.

        Grammar: <S> then groups of note -> onset -> dur, with <T> and extra tokens between groups,
        then <E> and only <PAD> after it. Within a segment onsets never decrease.
        """
        if len(prev_ids) == 0:
            return self._after_start.copy()
        last = int(prev_ids[-1])
        kind = self._kind[last]
        if kind == _NOTE:
            mask = self._after_note.copy()
            mask[self.onset_offset : self.onset_offset + self._last_onset(prev_ids)] = False
            return mask
        if kind == _ONSET:
            return self._after_onset.copy()
        if last in (self.eos_id, self.pad_id):
            return self._after_end.copy()
        return self._group_start.copy()

    def _last_onset(self, prev_ids: Sequence[int]) -> int:
        """The latest onset (in steps) of the current segment, 0 if it has none yet."""
        for j in range(len(prev_ids) - 1, -1, -1):
            kind = self._kind[int(prev_ids[j])]
            if kind == _ONSET:
                return int(prev_ids[j]) - self.onset_offset
            if kind == _TIME or int(prev_ids[j]) == self.bos_id:
                return 0
        return 0

    # --- persistence ------------------------------------------------------------------------

    def with_extra_tokens(self, *tokens: str) -> "Tokenizer":
        """The same tokenizer with `tokens` appended; every existing id keeps its meaning."""
        return Tokenizer(replace(self.config, extra_tokens=self.config.extra_tokens + tuple(tokens)))

    def to_dict(self) -> dict:
        return {"version": self.VERSION, "config": asdict(self.config), "vocab": self.vocab}

    @classmethod
    def from_dict(cls, d: dict) -> "Tokenizer":
        """Rebuild a saved tokenizer, refusing one whose ids would not mean the same tokens."""
        if d.get("version") != cls.VERSION:
            raise CorruptFileError(
                f"The saved tokenizer has version {d.get('version')!r} but this Pianoapp reads version "
                f"{cls.VERSION!r}; retrain the model or use the Pianoapp release that made it."
            )
        try:
            config = TokenizerConfig(
                **{**d["config"], "extra_tokens": tuple(d["config"].get("extra_tokens", ()))}
            )
        except (AttributeError, KeyError, TypeError, ValueError) as err:
            raise CorruptFileError(f"The saved tokenizer's config is invalid ({err}); re-save it.") from err
        tokenizer = cls(config)
        if d.get("vocab") != tokenizer.vocab:
            raise CorruptFileError("The saved tokenizer's vocabulary does not match its config; re-save it.")
        return tokenizer

    def save(self, path: str | os.PathLike) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_dict(), indent=1))
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Tokenizer":
        path = Path(path)
        try:
            d = json.loads(path.read_text())
        except (OSError, ValueError) as err:
            raise CorruptFileError(f"{path.name} is not a readable tokenizer file ({err}).") from err
        if not isinstance(d, dict):
            raise CorruptFileError(f"{path.name} is not a tokenizer file (expected a JSON object).")
        return cls.from_dict(d)
