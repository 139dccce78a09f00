"""Continue a piece: a MIDI/score prompt, or a recording transcribed first, extended by the piano LM.

The model sees the end of the prompt (as much as half its context holds); when the continuation
outgrows the context, the window slides forward and sampling goes on from the latest notes.
A result can be played on (its notes become the next prompt) or sampled again from any point.
"""

from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

import plotly.graph_objects as go
import pretty_midi

from pianoapp import constants, pianoroll
from pianoapp.errors import BadInputError, EmptyMidiError
from pianoapp.io.files import file_kind
from pianoapp.io.midi import notes_to_midi, piano_notes, read_midi, write_midi
from pianoapp.services import availability
from pianoapp.services.preview import Saved, clock, save_result

DEFAULT_MODEL = "lm-small"
MAX_SECONDS = 120.0
NOTES_PER_UPDATE = 4  # streaming granularity for the UI
# At most this many notes per second of continuation (3 tokens each). A model imitating an absurdly
# dense prompt (hundreds of notes a second) would otherwise decode for minutes to cover one second.
MAX_NOTES_PER_S = 40
TOKENS_PER_NOTE = 3


@dataclass
class Continuation:
    prompt: list[pretty_midi.Note]
    generated: list[pretty_midi.Note] = field(default_factory=list)
    notices: list[str] = field(default_factory=list)  # sentences for the user (e.g. "transcribed first")
    done: bool = False
    end_s: float | None = None  # where the continuation is to stop, in seconds from the prompt's start

    def midi(self) -> pretty_midi.PrettyMIDI:
        """Prompt and continuation as two piano tracks, so a player or DAW can tell them apart."""
        return notes_to_midi({"Prompt": self.prompt, "Continuation": self.generated})

    def notes(self) -> list[pretty_midi.Note]:
        """Prompt and continuation as one part in time order: the prompt for playing on from here."""
        return sorted(self.prompt + self.generated, key=lambda n: (n.start, n.pitch, n.end))

    def figure(self, *, cut_s: float | None = None) -> go.Figure:
        """Piano roll, prompt and continuation in two colours, framed to the planned end; `cut_s`
        marks the point a regeneration would start from."""
        last_end = max(n.end for n in self.prompt + self.generated)
        fig = pianoroll.piano_roll(self.midi(), by_track=True, end_s=max(last_end, self.end_s or 0) + 0.5)
        return fig if cut_s is None else pianoroll.mark_time(fig, cut_s, f"regenerate from {cut_s:.1f} s")

    def summary(self) -> str:
        """One line: how long the prompt and the continuation are, and how far generation has got."""
        line = f"prompt {clock(max(n.end for n in self.prompt))} · {len(self.prompt):,} notes"
        if not self.generated and self.done:
            return line + " · the model added nothing; try another seed"
        if not self.generated:
            return line
        prompt_end = _last_onset(self.prompt)
        written = max(n.start for n in self.generated) - prompt_end
        planned = "" if self.done or self.end_s is None else f" of {self.end_s - prompt_end:.0f}"
        return line + f" · continuation {written:.1f}{planned} s · {len(self.generated):,} notes"


def load_prompt(path: str | Path) -> tuple[list[pretty_midi.Note], list[str]]:
    """The prompt's notes (pedal folded) and notices. Recordings are transcribed with basic-pitch."""
    notices = []
    if file_kind(path) == "audio":
        from pianoapp.io.audio import load_audio
        from pianoapp.io.transcribe import transcribe

        pm = transcribe(load_audio(path))
        notices.append("The recording was transcribed to MIDI first (basic-pitch).")
    else:
        pm = read_midi(path, max_seconds=float("inf"))  # long prompts are fine: only the end is used
    notes = piano_notes(pm)
    if not notes:
        raise EmptyMidiError(f"{Path(path).name} has no piano notes to continue.")
    return notes, notices


def continue_notes(
    prompt: list[pretty_midi.Note],
    *,
    seconds: float = 15.0,
    seed: int = 0,
    temperature: float = 0.98,
    top_p: float = 1.0,
    min_p: float = 0.035,
    model_dir: str | Path | None = None,
    notices: list[str] | None = None,
) -> Iterator[Continuation]:
    """Yield the growing continuation every few notes; the last one has `done=True`."""
    if not 0 < seconds <= MAX_SECONDS:
        raise BadInputError(f"Continuation length must be between 1 and {MAX_SECONDS:.0f} seconds.")
    from pianoapp.models.checkpoint import load_config, load_model
    from pianoapp.sampling import SamplingConfig, sample
    from pianoapp.tokenizer import Tokenizer

    try:
        sampling = SamplingConfig(temperature=temperature, top_p=top_p, min_p=min_p)
    except ValueError as err:
        raise BadInputError(f"{err}.") from err
    if model_dir is None:
        availability.require("continue")
        model_dir = constants.MODELS_DIR / DEFAULT_MODEL
    model = load_model(model_dir)
    tokenizer = Tokenizer.from_dict(load_config(model_dir)["tokenizer"])
    step_s = tokenizer.config.time_step_ms / 1000
    segment_s = tokenizer.config.segment_ms / 1000

    end_s = _last_onset(prompt) + seconds  # the continuation's clock starts at the last onset
    result = Continuation(prompt=prompt, notices=list(notices or []), end_s=end_s)
    tokens_left = round(MAX_NOTES_PER_S * TOKENS_PER_NOTE * max(seconds, 1.0))
    for round_ in range(1000):  # each round refills the context; far more rounds than any length needs
        before = result.generated
        kept, ids, shift = _window(tokenizer, prompt + before, model.config.context_len // 2, segment_s)
        if round_ == 0 and len(kept) < len(prompt):
            result.notices.append(f"The prompt is long; the model saw its last {len(kept)} notes.")
        new_ids: list[int] = []
        for n_updates, new_ids in enumerate(
            sample(model, tokenizer, ids, end_step=round((end_s - shift) / step_s), config=sampling,
                   seed=seed + round_, max_new_tokens=tokens_left)
        ):
            if n_updates % NOTES_PER_UPDATE == 0:
                yield _extended(result, before, tokenizer.decode(ids + new_ids)[len(kept):], shift)
        result = _extended(result, before, tokenizer.decode(ids + new_ids)[len(kept):], shift)
        tokens_left -= len(new_ids)
        if tokens_left > 0 and len(ids) + len(new_ids) < model.config.context_len - 3:  # stopped at the end
            break
        if tokens_left < TOKENS_PER_NOTE:
            result.notices.append(f"The music grew denser than a pianist could play ({MAX_NOTES_PER_S} notes "
                                  "a second), so the continuation stops early; try a sparser prompt or another seed.")
            break
    result.done = True
    yield result


def regenerate(
    result: Continuation, *, from_s: float, seconds: float = 15.0, seed: int = 0, **options
) -> Iterator[Continuation]:
    """Keep the continuation before `from_s` (seconds from the prompt's start) and sample the rest
    again, to `seconds` after the prompt's last onset; yields like `continue_notes`.

    Points inside the prompt regenerate the whole continuation.
    """
    end_s = _last_onset(result.prompt) + seconds
    if from_s >= end_s:
        raise BadInputError(
            f"Regenerate from a point before the end of the continuation ({end_s:.1f} s), "
            f"or lengthen it to more than {from_s - _last_onset(result.prompt):.0f} seconds."
        )
    kept = [n for n in result.generated if n.start < from_s]
    context = replace(result, generated=kept).notes()
    for new in continue_notes(context, seconds=end_s - _last_onset(context), seed=seed, **options):
        # The model may place a note between the last kept onset and `from_s`; dropping it keeps
        # everything before `from_s` as it was.
        after = [n for n in new.generated if n.start >= from_s]
        yield replace(new, prompt=result.prompt, generated=kept + after, notices=result.notices, end_s=end_s)


def save_continuation(result: Continuation, *, name: str = "continuation") -> Saved:
    """Render the result to `<name>.wav` and write it as a two-track `<name>.mid`."""
    return save_result(result.midi(), "continuations", name)


def _last_onset(notes: list[pretty_midi.Note]) -> float:
    return float(max(n.start for n in notes))


def _extended(result: Continuation, before, decoded, shift: float) -> Continuation:
    return replace(result, generated=before + _shifted(decoded, shift))


def _window(tokenizer, notes, max_tokens: int, segment_s: float):
    """The longest tail of `notes` whose tokens fit in `max_tokens`, shifted back by whole segments
    (so every note keeps its place inside its segment): (kept notes, ids, shift in seconds)."""
    n = min(len(notes), max(1, max_tokens // 3))
    while True:
        kept = notes[-n:]
        shift = int(kept[0].start // segment_s) * segment_s
        ids = tokenizer.encode(_shifted(kept, -shift), add_eos=False)
        if len(ids) <= max_tokens or n == 1:
            return kept, ids, shift
        n = max(1, n * 3 // 4)


def _shifted(notes: list[pretty_midi.Note], by: float) -> list[pretty_midi.Note]:
    return [pretty_midi.Note(n.velocity, n.pitch, n.start + by, n.end + by) for n in notes]


def continue_file(prompt_path: str | Path, out: str | Path, **options) -> Path:
    """CLI door: continue the prompt file and write prompt + continuation as a two-track MIDI."""
    prompt, notices = load_prompt(prompt_path)
    result = None
    for result in continue_notes(prompt, notices=notices, **options):
        pass
    return write_midi(result.midi(), out)
