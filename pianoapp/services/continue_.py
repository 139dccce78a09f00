"""Continue a piece: a MIDI/score prompt, or a recording transcribed first, extended by the piano LM.

The model sees the end of the prompt (as much as half its context holds); when the continuation
outgrows the context, the window slides forward and sampling goes on from the latest notes.
"""

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pretty_midi

from pianoapp import constants
from pianoapp.errors import BadInputError, EmptyMidiError
from pianoapp.io.files import file_kind
from pianoapp.io.midi import notes_to_midi, piano_notes, read_midi, write_midi
from pianoapp.services import availability

DEFAULT_MODEL = "lm-small"
MAX_SECONDS = 120.0
NOTES_PER_UPDATE = 4  # streaming granularity for the UI


@dataclass
class Continuation:
    prompt: list[pretty_midi.Note]
    generated: list[pretty_midi.Note] = field(default_factory=list)
    notices: list[str] = field(default_factory=list)  # sentences for the user (e.g. "transcribed first")
    done: bool = False

    def midi(self) -> pretty_midi.PrettyMIDI:
        """Prompt and continuation as two piano tracks, so a player or DAW can tell them apart."""
        return notes_to_midi({"Prompt": self.prompt, "Continuation": self.generated})


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

    result = Continuation(prompt=prompt, notices=list(notices or []))
    end_s = max(n.start for n in prompt) + seconds  # the continuation's clock starts at the last onset
    for round_ in range(1000):  # each round refills the context; far more rounds than any length needs
        before = result.generated
        kept, ids, shift = _window(tokenizer, prompt + before, model.config.context_len // 2, segment_s)
        if round_ == 0 and len(kept) < len(prompt):
            result.notices.append(f"The prompt is long; the model saw its last {len(kept)} notes.")
        new_ids: list[int] = []
        for n_updates, new_ids in enumerate(
            sample(model, tokenizer, ids, end_step=round((end_s - shift) / step_s), config=sampling,
                   seed=seed + round_)
        ):
            if n_updates % NOTES_PER_UPDATE == 0:
                yield _extended(result, before, tokenizer.decode(ids + new_ids)[len(kept):], shift)
        result = _extended(result, before, tokenizer.decode(ids + new_ids)[len(kept):], shift)
        if len(ids) + len(new_ids) < model.config.context_len - 3:  # stopped at the end, not the context
            break
    result.done = True
    yield result


def _extended(result: Continuation, before, decoded, shift: float) -> Continuation:
    return Continuation(prompt=result.prompt, generated=before + _shifted(decoded, shift), notices=result.notices)


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
