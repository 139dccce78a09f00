"""Audio → MIDI with basic-pitch's bundled ONNX model on onnxruntime (TensorFlow is never needed).

We call basic-pitch's building blocks rather than `inference.predict`: that reads from a file and
prints to stdout, and the CLI's `--json` needs stdout clean. `activations` runs the network once;
`decode` turns its output into notes, so thresholds can be tried without running it again.
"""

import functools
import logging
import os
import warnings

import numpy as np
import pretty_midi

from pianoapp import constants
from pianoapp.errors import MissingBackendError, SilentAudioError
from pianoapp.io.audio import is_silent
from pianoapp.io.midi import notes_to_midi

OVERLAP_FRAMES = 30  # model frames shared by neighbouring windows, as in basic-pitch's predict
BATCH_WINDOWS = 8  # windows (2 s each) per ONNX call
# Tuned on rendered validation pieces (bench/transcription_f1.py); basic-pitch's own are 0.5 / 0.3 / 127.7.
ONSET_THRESHOLD = 0.65
FRAME_THRESHOLD = 0.4
MIN_NOTE_MS = 58.0


@functools.lru_cache(maxsize=1)
def _basic_pitch():
    """(basic_pitch package, ONNX model). basic-pitch logs a warning per missing backend on import."""
    missing = MissingBackendError(
        "Transcription needs basic-pitch with onnxruntime; run "
        "`pip install --no-deps basic-pitch && pip install onnxruntime mir_eval 'resampy<0.4.3'`."
    )
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import basic_pitch
            from basic_pitch import inference, note_creation  # noqa: F401  (loads the submodules)
    except (ImportError, NameError) as err:  # with no backend at all, basic-pitch's __init__ fails by NameError
        raise missing from err
    finally:
        root.setLevel(level)
    model_path = basic_pitch.ICASSP_2022_MODEL_PATH
    if not str(model_path).endswith(".onnx") or not os.path.isfile(model_path):
        raise missing
    try:
        return basic_pitch, basic_pitch.inference.Model(model_path)
    except ValueError as err:  # basic-pitch's word for "no backend could load this model"
        raise missing from err


def activations(audio: np.ndarray, *, sr: int = constants.SAMPLE_RATE) -> dict[str, np.ndarray]:
    """basic-pitch's frame-wise outputs: 'note' and 'onset' (frames × 88 keys), 'contour' (frames × 264)."""
    import librosa

    bp, model = _basic_pitch()
    c = bp.constants
    x = librosa.resample(np.asarray(audio, dtype=np.float32), orig_sr=sr, target_sr=c.AUDIO_SAMPLE_RATE)
    overlap = OVERLAP_FRAMES * c.FFT_HOP
    hop = c.AUDIO_N_SAMPLES - overlap
    padded = np.concatenate([np.zeros(overlap // 2, np.float32), x])
    windows = np.stack([w for w, _ in bp.inference.window_audio_file(padded, hop)]).astype(np.float32)
    outputs: dict[str, list[np.ndarray]] = {"note": [], "onset": [], "contour": []}
    for i in range(0, len(windows), BATCH_WINDOWS):
        for k, v in model.predict(windows[i : i + BATCH_WINDOWS]).items():
            outputs[k].append(v)
    return {k: bp.inference.unwrap_output(np.concatenate(v), len(x), OVERLAP_FRAMES) for k, v in outputs.items()}


def decode(
    acts: dict[str, np.ndarray],
    *,
    onset_threshold: float = ONSET_THRESHOLD,
    frame_threshold: float = FRAME_THRESHOLD,
    min_note_ms: float = MIN_NOTE_MS,
    melodia_trick: bool = False,
) -> pretty_midi.PrettyMIDI:
    """Notes from `activations`, as one piano track.

    basic-pitch's "melodia trick" (on in basic-pitch) also turns leftover frame energy without an
    onset into notes; on piano that energy is mostly the decay of notes already found and their
    overtones, so it adds wrong notes (bench/transcription_f1.py measures it).
    """
    bp, _ = _basic_pitch()
    c = bp.constants
    min_frames = round(min_note_ms / 1000 * c.AUDIO_SAMPLE_RATE / c.FFT_HOP)
    events = []
    if len(acts["note"]) > min_frames:  # shorter audio cannot hold a note (and trips basic-pitch up)
        # basic-pitch edits the arrays in place; copies keep `acts` reusable. When no frame ever
        # rises (no note anywhere) its onset inference divides 0 by 0; quiet that warning.
        with np.errstate(divide="ignore", invalid="ignore"):
            _, events = bp.note_creation.model_output_to_notes(
                {k: v.copy() for k, v in acts.items()},
                onset_thresh=onset_threshold, frame_thresh=frame_threshold, min_note_len=min_frames,
                include_pitch_bends=False, melodia_trick=melodia_trick,  # no pitch limits: its 88 keys are the piano's
            )
    notes = [
        pretty_midi.Note(max(1, round(127 * amplitude)), int(pitch), float(start), float(end))
        for start, end, pitch, amplitude, _ in events
    ]
    notes.sort(key=lambda n: (n.start, n.pitch))
    return notes_to_midi({"Piano (transcribed)": notes})


def transcribe(
    audio: np.ndarray,
    *,
    sr: int = constants.SAMPLE_RATE,
    onset_threshold: float = ONSET_THRESHOLD,
    frame_threshold: float = FRAME_THRESHOLD,
    min_note_ms: float = MIN_NOTE_MS,
) -> pretty_midi.PrettyMIDI:
    """A piano MIDI transcription of mono audio. Raises SilentAudioError when nothing is audible."""
    if is_silent(audio, sr):
        raise SilentAudioError("The recording is silent, so there is nothing to transcribe.")
    return decode(
        activations(audio, sr=sr),
        onset_threshold=onset_threshold, frame_threshold=frame_threshold, min_note_ms=min_note_ms,
    )
