"""Arrange a lead sheet in the style of a reference: the arranger writes the accompaniment bar by
bar, the melody stays as written on its own track.

Sampling feeds each bar's lead sheet (`ArrangementCodec.bar_prompt`) and lets the model write that
bar's `<acc>` section under the codec's grammar until it closes the bar. Like BOSSA's windowed
sampling, the model sees at most SEGMENT_BARS bars after `<S>` (what it was trained on): past
them, the window moves on HOP_BARS bars and starts again from the latest bars it wrote.

The reference is a recording (any format) or a MIDI/score file, rendered first; the arranger reads
its first REFERENCE_SECONDS from where it starts to sound, through its Q-Former, and is told the
style of what it hears (`data.arrangement.Style`: notes a second, register, notes per onset, from
the clip's transcription) after `<S>`, as in training. Without one the model plays its default
style.
"""

import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import plotly.graph_objects as go
import pretty_midi

from pianoapp import constants, pianoroll
from pianoapp.errors import BadInputError, SilentAudioError, TooLongError
from pianoapp.io.files import check_file, file_kind
from pianoapp.io.leadsheet import MAX_BARS, LeadSheet, arrangement_midi, read_leadsheet
from pianoapp.io.midi import write_midi
from pianoapp.io.render import render
from pianoapp.services import availability
from pianoapp.services.preview import Saved, clock, save_result

if TYPE_CHECKING:  # imports torch: at use
    from pianoapp.data.arrangement import Style

DEFAULT_MODEL = "arranger"
DEFAULT_BARS = 16  # the tab's starting value: the demo lead sheet's length
# Sampling (`python bench/arranger_sampling.py`, 24 val segments, own reference). Temperature: of
# 0.5, 0.7 and 0.9 (min-p 0.05), 0.5 followed the chords best at no cost to the melody (session 3,
# chord accuracy 0.54 against 0.46 and less; 0.3 gave 0.51 in session 6). Chord bias, what a note
# outside the chord loses from its logit (`arrange_sheet`): at 0, 2, 4 and no limit the chords were
# followed 0.53, 0.76, 0.84 and 1.00 of the time and the melody kept 0.85, 0.92, 0.93 and 0.89 (true
# PIANO track: 0.90 and 0.91); 4 leaves the model its passing notes. Melody bias, what a note at or
# above the tune loses: at 0, 2 and 4 (chord bias 4) melody 0.93, 0.98, 0.99, chords 0.84, 0.83, 0.82.
TEMPERATURE = 0.5
MIN_P = 0.05
CHORD_BIAS = 4.0
MELODY_BIAS = 2.0
MAX_BAR_TOKENS = 240  # a bar's accompaniment: 80 notes, far more than POP909's busiest
# A recording counts as speech (or noise) when under this share of its spectral peaks hold their
# pitch for HELD_FRAMES frames (`held_peak_share`): a piano's partials stay put, a voice glides.
# Measured: 100 rendered corpus openings 0.11–0.78 (median 0.55), the demo recordings 0.33–0.58;
# white noise 0.06, a synthetic voice (gliding pitch, moving formants, syllables) 0.06.
SPEECH_HELD_SHARE = 0.09
HELD_FRAMES = 4  # about 170 ms at the analysis hop


@dataclass
class Arrangement:
    sheet: LeadSheet  # the bars arranged
    accompaniment: list[pretty_midi.Note]
    seed: int
    reference: str | None  # the reference's file name, None for the default style
    notices: list[str] = field(default_factory=list)  # sentences for the user
    saved: Saved | None = None

    def midi(self) -> pretty_midi.PrettyMIDI:
        """Melody and accompaniment on two tracks."""
        return arrangement_midi(self.sheet, self.accompaniment)

    def figure(self) -> go.Figure:
        """Piano roll, melody and accompaniment in two colours."""
        return pianoroll.piano_roll(self.midi(), by_track=True, end_s=self.sheet.end_s + 0.5)

    def summary(self) -> str:
        style = f"in the style of {self.reference}" if self.reference else "in the model's default style"
        return (f"{self.sheet.n_bars} bars · {clock(self.sheet.end_s)} · "
                f"{len(self.accompaniment):,} accompaniment notes · {style}")


# --- inputs -------------------------------------------------------------------------------------


def load_leadsheet(path: str | Path, *, bars: int | None = None,
                   chords_text: str | None = None) -> tuple[LeadSheet, list[str]]:
    """The first `bars` bars of a lead sheet (all of them when None; at most MAX_BARS) and notices."""
    if bars is not None and not 1 <= bars <= MAX_BARS:
        raise TooLongError(f"Arrange between 1 and {MAX_BARS} bars at a time, not {bars}.")
    sheet = read_leadsheet(path, chords_text or None, max_bars=None)
    total = sheet.n_bars
    if bars is None and total > MAX_BARS:
        raise TooLongError(f"{Path(path).name} has {total} bars; the arranger takes at most {MAX_BARS} at a "
                           "time — choose fewer bars (--bars).")
    notices = []
    if bars is not None and bars < total:
        sheet = sheet.crop(0, bars)
        notices.append(f"Arranged the first {bars} of the lead sheet's {total} bars.")
    if sheet.chords_inferred:
        shown = " ".join(c.symbol for c in sheet.chords[:12]) + (" …" if len(sheet.chords) > 12 else "")
        notices.append(f"The lead sheet has no chords, so they were inferred from the melody: {shown}.")
    return sheet, notices


def load_reference(path: str | Path) -> tuple[np.ndarray, list[str]]:
    """The REFERENCE_SECONDS of a reference the arranger reads (`models.arranger.reference_clip`),
    and notices. Recordings are decoded; MIDI and scores are rendered."""
    from pianoapp.io.audio import load_audio
    from pianoapp.io.midi import read_midi
    from pianoapp.models.arranger import reference_clip

    path = check_file(path)
    notices = []
    if file_kind(path) == "audio":
        try:
            audio = load_audio(path)
        except SilentAudioError:
            raise SilentAudioError(f"The style reference {path.name} is silent; give a recording of the "
                                   "music whose style you want, or none.") from None
    else:
        audio = render(read_midi(path), sr=constants.SAMPLE_RATE)
        notices.append(f"The reference {path.name} was rendered to audio first.")
    clip = reference_clip(audio)
    if held_peak_share(clip) < SPEECH_HELD_SHARE:
        raise BadInputError(f"The style reference {path.name} sounds like speech or noise, not music; give a "
                            "recording of the playing whose style you want, or none.")
    return clip, notices


def reference_style(clip: np.ndarray) -> "Style | None":
    """The style of a reference clip, from its transcription (None when nothing is transcribed)."""
    from pianoapp.data.arrangement import Style
    from pianoapp.io.transcribe import transcribe

    try:
        midi = transcribe(clip)
    except SilentAudioError:
        return None
    return Style.of([n for inst in midi.instruments for n in inst.notes])


def held_peak_share(audio: np.ndarray, sr: int = constants.SAMPLE_RATE) -> float:
    """The share of the spectral peaks (100–2000 Hz, within 40 dB of the loudest) that stay on their
    frequency bin for HELD_FRAMES frames: near 1 for held notes, low for a voice's gliding harmonics
    and for noise."""
    from scipy import signal

    _, _, spec = signal.stft(audio, fs=sr, nperseg=4096, noverlap=4096 - 1024)
    mag = np.abs(spec)
    freqs = np.fft.rfftfreq(4096, 1 / sr)
    band = mag[(freqs >= 100) & (freqs <= 2000)]
    floor = band.max() * 10 ** (-40 / 20)
    peaks = (band[1:-1] > band[:-2]) & (band[1:-1] >= band[2:]) & (band[1:-1] > floor)  # (bins, frames)
    n = peaks.shape[1] - HELD_FRAMES + 1
    if n < 1 or not peaks[:, :n].any():
        return 0.0
    held = np.ones_like(peaks[:, :n])
    for lag in range(HELD_FRAMES):
        held &= peaks[:, lag : lag + n]
    return float(held.sum() / peaks[:, :n].sum())


# --- sampling -----------------------------------------------------------------------------------

_decoders: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def _decoder(arranger):
    """The LM that sampling runs: the arranger's adapters merged in, int8/bf16 on a CPU; made once."""
    from pianoapp.sampling import decoding_model

    if arranger not in _decoders:
        _decoders[arranger] = decoding_model(arranger.merged_lm())
    return _decoders[arranger]


def arrange_sheet(arranger, codec, sheet: LeadSheet, reference: np.ndarray | None, *, style: "Style | None",
                  seed: int = 0, temperature: float = TEMPERATURE, min_p: float = MIN_P,
                  chord_bias: float = CHORD_BIAS, melody_bias: float = MELODY_BIAS) -> list[pretty_midi.Note]:
    """The accompaniment of a lead sheet (see the module docstring) for a reference clip and the
    style read from it (`reference_style`; None for both: the default style); the same seed gives
    the same notes.

    Where a note starts, the lead sheet is followed: notes outside the chord sounding there lose
    `chord_bias` from their logits, notes at or above the melody note sounding there `melody_bias`.
    A note's token comes before its onset's, so a note is chosen for where the note before it
    started; when its onset then lands where it costs more (another chord, a lower melody note), it
    is chosen again for there (the LM's cache rewound one token). With a chord bias, a note held into
    a chord it does not belong to is also released where that chord starts.

    A bar ends when the model closes it, when a note lands on the next downbeat (the codec's grammar
    lets onsets reach the bar's end, but notes there belong to the next bar), or after MAX_BAR_TOKENS.
    A window also starts over early when the next bar might not fit the LM's context."""
    import torch

    from pianoapp.data.arrangement import HOP_BARS, SEGMENT_BARS
    from pianoapp.sampling import draw, filter_probs, one_thread

    lm = _decoder(arranger)
    t = codec.tokenizer
    device = next(lm.parameters()).device
    generator = torch.Generator().manual_seed(seed)
    cost = _note_costs(t, chord_bias, melody_bias)
    is_note = torch.zeros(t.vocab_size, dtype=torch.bool)
    is_note[t.note_offset : t.onset_offset] = True

    def cost_at(bar: int, steps: int) -> torch.Tensor:
        """`cost` of the chord and the melody note sounding `steps` time steps into a bar."""
        at = float(sheet.downbeats[bar]) + steps * t.config.time_step_ms / 1000
        chord = sheet.chord_at(at)
        return cost(chord.pitch_classes if chord else frozenset(), sheet.melody_at(at))

    def pick(logits: torch.Tensor, written: list[int], costs: torch.Tensor, notes_only: bool = False) -> int:
        allowed = torch.from_numpy(codec.allowed_next(written)) & (is_note if notes_only else True)
        scores = (logits[0, -1].float().cpu() - costs) / temperature
        return draw(filter_probs(torch.softmax(scores.masked_fill_(~allowed, -torch.inf), -1), top_p=1.0,
                                 min_p=min_p), generator)

    opening = [t.bos_id, *codec.style_ids(style)]
    room = lm.config.context_len - arranger.n_prefix - MAX_BAR_TOKENS  # for a window's given tokens
    bars: list[list[int]] = []  # each bar's lead sheet and the accompaniment written for it
    used = 0
    with torch.inference_mode(), one_thread():
        frames = None if reference is None else arranger.frames(torch.from_numpy(reference)[None].to(device))
        prefix = arranger.prefix(frames)
        for k in range(sheet.n_bars):
            prompt = codec.bar_prompt(sheet, k)
            moves_on = k >= SEGMENT_BARS and (k - SEGMENT_BARS) % HOP_BARS == 0
            if k == 0 or moves_on or used + len(prompt) > room:
                kept = bars[max(k - (SEGMENT_BARS - HOP_BARS), 0) : k]
                while kept and len(opening) + sum(map(len, kept)) + len(prompt) > room:
                    kept = kept[1:]
                window = [*opening, *(i for bar in kept for i in bar), *prompt]
                logits, cache = lm(torch.tensor([window], device=device), prefix_embeds=prefix)
                used = len(window)
            else:
                logits, cache = lm(torch.tensor([prompt], device=device), cache=cache)
                used += len(prompt)
            written = prompt[:]
            bar_steps = prompt[2] - t.dur_offset + 1  # the header's length token
            segment = onset = 0
            note_logits = logits  # what the last token was drawn from (a rewound note is drawn again)
            for _ in range(MAX_BAR_TOKENS):
                token = pick(logits, written, cost_at(k, onset))
                if token in (codec.bar_id, t.eos_id):  # bar done; the next bar's prompt opens with <bar>
                    break
                kind = t.token_kind(token)
                if kind == "onset" and t.token_kind(written[-1]) == "note":
                    landed = cost_at(k, segment * t.n_onsets + token - t.onset_offset)
                    if landed[written[-1]] > cost_at(k, onset)[written[-1]]:
                        # The note was chosen for where the note before it started: choose it again
                        # for where it lands, and keep the onset where the grammar still allows it.
                        cache.length -= 1
                        written.pop()
                        note = pick(note_logits, written, landed, notes_only=True)
                        written.append(note)
                        logits, cache = lm(torch.tensor([[note]], device=device), cache=cache)
                        if not codec.allowed_next(written)[token]:
                            token = pick(logits, written, landed)
                            kind = t.token_kind(token)
                written.append(token)
                segment += kind == "time"
                onset = segment * t.n_onsets + token - t.onset_offset if kind == "onset" else onset
                if kind == "dur" and onset >= bar_steps:
                    break
                note_logits = logits
                logits, cache = lm(torch.tensor([[token]], device=device), cache=cache)
                used += 1
            bars.append(written)
    decoded = codec.decode([t.bos_id, *(i for bar in bars for i in bar), t.eos_id], sheet.downbeats)
    notes = [pretty_midi.Note(n.velocity, n.pitch, n.start, min(n.end, sheet.end_s))
             for n in decoded.accompaniment if n.start < sheet.end_s]
    return released_at_chord_changes(notes, sheet.chords) if chord_bias else notes


def released_at_chord_changes(notes: list[pretty_midi.Note], chords: list) -> list[pretty_midi.Note]:
    """Each note ended where the first chord it does not belong to starts while it sounds."""
    out = []
    for n in notes:
        clash = next((c.start for c in chords if n.start < c.start < n.end and c.root is not None
                      and n.pitch % 12 not in c.pitch_classes), n.end)
        out.append(pretty_midi.Note(n.velocity, n.pitch, n.start, clash))
    return out


def _note_costs(tokenizer, chord_bias: float, melody_bias: float):
    """(chord pitch classes, melody pitch or None) → a (vocab,) tensor: `chord_bias` at the note
    tokens of other pitch classes (none for no chord), plus `melody_bias` at those at or above the
    melody pitch (none where the tune rests); made once per pair."""
    import torch

    t = tokenizer
    pitch = torch.full((t.vocab_size,), -1)
    pitch[t.note_offset : t.onset_offset] = torch.tensor([t.note_pitch(i) for i in range(t.note_offset, t.onset_offset)])
    note = pitch >= 0
    made: dict[tuple, torch.Tensor] = {}

    def cost(tones: frozenset[int], tune: int | None) -> torch.Tensor:
        if (tones, tune) not in made:
            outside = note & ~torch.isin(pitch % 12, torch.tensor(sorted(tones), dtype=torch.long)) if tones \
                else torch.zeros_like(note)
            above = note & (pitch >= tune) if tune is not None else torch.zeros_like(note)
            made[tones, tune] = (torch.where(outside, chord_bias, 0.0) + torch.where(above, melody_bias, 0.0))
        return made[tones, tune]

    return cost


def load_arranger(model_dir: str | Path | None = None):
    """The arranger (cached) and its codec."""
    from pianoapp.data.arrangement import ArrangementCodec
    from pianoapp.models.checkpoint import load_config, load_model
    from pianoapp.tokenizer import Tokenizer

    if model_dir is None:
        availability.require("arrange")
        model_dir = constants.MODELS_DIR / DEFAULT_MODEL
    arranger = load_model(model_dir)
    return arranger, ArrangementCodec(Tokenizer.from_dict(load_config(model_dir)["tokenizer"]))


# --- the door -----------------------------------------------------------------------------------


def arrange(
    leadsheet: str | Path, reference: str | Path | None = None, *, bars: int | None = None, seed: int = 0,
    chords_text: str | None = None, model_dir: str | Path | None = None, save: bool = True,
) -> Arrangement:
    """Arrange the first `bars` bars of a lead sheet (all, at most MAX_BARS, when None) in the style
    of `reference` (None: the model's default style); with `save`, render it and write the MIDI."""
    arranger, codec = load_arranger(model_dir)
    sheet, notices = load_leadsheet(leadsheet, bars=bars, chords_text=chords_text)
    clip = style = None
    name = None if reference is None else Path(reference).name
    if reference is not None:
        clip, more = load_reference(reference)
        style = reference_style(clip)
        notices += more + [f"Heard in {name}: {style.describe()}; the model is asked to play that way." if style
                           else f"No notes were heard in {name}, so the model plays in its default style."]
    accompaniment = arrange_sheet(arranger, codec, sheet, clip, style=style, seed=seed)
    result = Arrangement(sheet, accompaniment, seed, name, notices)
    if not accompaniment:
        result.notices.append("The model wrote no accompaniment for these bars; try another seed.")
    if save:
        result.saved = save_arrangement(result, name=f"{Path(leadsheet).stem}-arranged")
    return result


def save_arrangement(result: Arrangement, *, name: str = "arrangement") -> Saved:
    """Render the result to `<name>.wav` and write it as a two-track `<name>.mid`."""
    return save_result(result.midi(), "arrangements", name)


def arrange_file(leadsheet: str | Path, out: str | Path, **options) -> tuple[Path, list[str]]:
    """CLI door: arrange and write the two-track MIDI to `out`; returns it and the notices."""
    result = arrange(leadsheet, save=False, **options)
    return write_midi(result.midi(), out), result.notices


# --- evaluation ---------------------------------------------------------------------------------

EVAL_SEGMENTS = 100  # the retrieval pool: the true reference among 100


def evaluate_arranger(model_dir: str | Path, *, data_dir: str | Path | None = None, split: str = "test",
                      seed: int = 0, n_segments: int = EVAL_SEGMENTS, temperature: float = TEMPERATURE,
                      chord_bias: float = CHORD_BIAS, melody_bias: float = MELODY_BIAS) -> dict:
    """`evaluate.arrangement.evaluate_arrangers` on `n_segments` segments for the rule-based baseline,
    the model with the segment's style reference, with none and with another segment's reference
    (the next evaluated segment's), plus style retrieval: for each system, the matcher's audio
    embedding of each rendered accompaniment (mean over its 4 s windows) against those of all the
    references the model read; the rank of the segment's own reference, Acc@5 and mean rank."""
    import sys

    from tqdm import tqdm

    from pianoapp.data.segments import TRAIN_SOUNDFONTS, render_pieces
    from pianoapp.data.sequences import notes_to_array
    from pianoapp.evaluate.arrangement import baseline_arranger, evaluate_arrangers
    from pianoapp.io.midi import notes_to_midi
    from pianoapp.models.arranger import REFERENCE_SECONDS, reference_clip
    from pianoapp.services.match import audio_windows, matcher_model

    arranger, codec = load_arranger(model_dir)
    references: list[np.ndarray] = []  # the clips the model read, in the protocol's segment order
    styles: list = []  # the style read from each
    outputs: dict[str, list[list[pretty_midi.Note]]] = {"baseline": [], "model": [], "model-noref": [],
                                                        "model-shuffled": []}
    bar = tqdm(total=3 * n_segments, desc="arranging test segments", file=sys.stderr, dynamic_ncols=True)

    def clip_of(notes: list[pretty_midi.Note]) -> np.ndarray:
        render_ = render_pieces([notes_to_array(notes)], soundfonts=TRAIN_SOUNDFONTS, per_piece=1,
                                seconds=REFERENCE_SECONDS)[0]
        return reference_clip(render_.audio(0, render_.samples()))

    def system(name: str):
        def fn(sheet: LeadSheet, reference_notes: list[pretty_midi.Note], s: int) -> list[pretty_midi.Note]:
            if name == "baseline":
                notes = baseline_arranger(sheet, reference_notes, s)
            else:
                clip = style = None  # model-noref
                if name == "model":
                    references.append(clip_of(reference_notes))
                    styles.append(reference_style(references[-1]))
                    clip, style = references[-1], styles[-1]
                elif name == "model-shuffled":  # the second pass: every reference is known
                    k = (len(outputs[name]) + 1) % len(references)
                    clip, style = references[k], styles[k]
                notes = arrange_sheet(arranger, codec, sheet, clip, style=style, seed=s, temperature=temperature,
                                      chord_bias=chord_bias, melody_bias=melody_bias)
                bar.update()
            outputs[name].append(notes)
            return notes
        return fn

    options = {"data_dir": data_dir, "split": split, "n_segments": n_segments, "seed": seed}
    first = ("baseline", "model", "model-noref")
    report = evaluate_arrangers({name: system(name) for name in first}, **options)
    # Shuffled references need every reference: a second pass over the same segments.
    report["systems"]["model-shuffled"] = evaluate_arrangers({"model-shuffled": system("model-shuffled")},
                                                             **options)["systems"]["model-shuffled"]
    bar.close()

    matcher = matcher_model()

    def embedding(audio: np.ndarray) -> np.ndarray:
        windows, _ = audio_windows(audio, matcher)
        mean = windows.mean(axis=0) if len(windows) else np.zeros(matcher.config.embed_dim, np.float32)
        return mean / max(float(np.linalg.norm(mean)), 1e-9)

    reference_emb = np.stack([embedding(clip) for clip in references])
    retrieval = {}
    for name, notes in outputs.items():
        out_emb = np.stack([embedding(render(notes_to_midi(n), sr=constants.SAMPLE_RATE)) if n
                            else np.zeros(reference_emb.shape[1], np.float32) for n in notes])
        sims = out_emb @ reference_emb.T
        ranks = 1 + (sims > np.diag(sims)[:, None]).sum(axis=1)
        retrieval[name] = {"acc@5": round(float(np.mean(ranks <= 5)), 4),
                           "mean_rank": round(float(ranks.mean()), 2)}
    n = len(references)
    report["style_retrieval"] = {"pool": n, "chance_acc@5": round(min(5, n) / n, 4),
                                 "chance_mean_rank": (n + 1) / 2, "systems": retrieval}
    report["sampling"] = {"temperature": temperature, "min_p": MIN_P, "chord_bias": chord_bias,
                          "melody_bias": melody_bias}
    return report
