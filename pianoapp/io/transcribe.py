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

OVERLAP_FRAMES = 30  # model frames shared by neighbouring windows, as in basic-pitch's predict
BATCH_WINDOWS = 8  # windows (2 s each) per ONNX call


@functools.lru_cache(maxsize=1)
def _basic_pitch():
    """(basic_pitch package, ONNX model). basic-pitch logs a warning per missing backend on import."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import basic_pitch
            from basic_pitch import inference, note_creation  # noqa: F401  (loads the submodules)
    except ImportError as err:
        raise MissingBackendError(
            "Transcription needs basic-pitch and onnxruntime; run "
            "`pip install --no-deps basic-pitch && pip install onnxruntime mir_eval 'resampy<0.4.3'`."
        ) from err
    finally:
        root.setLevel(level)
    # The ONNX file by path: with TensorFlow also installed (as on a Space), basic-pitch's default is TF.
    model_path = os.path.join(os.path.dirname(basic_pitch.__file__), "saved_models", "icassp_2022", "nmp.onnx")
    if not os.path.isfile(model_path):
        raise MissingBackendError("basic-pitch's ONNX model is missing; install onnxruntime and reinstall basic-pitch.")
    return basic_pitch, basic_pitch.inference.Model(model_path)


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
    onset_threshold: float = 0.5,
    frame_threshold: float = 0.3,
    min_note_ms: float = 58.0,
) -> pretty_midi.PrettyMIDI:
    """Notes from `activations`, as one piano track."""
    bp, _ = _basic_pitch()
    c = bp.constants
    min_frames = int(round(min_note_ms / 1000 * c.AUDIO_SAMPLE_RATE / c.FFT_HOP))
    # basic-pitch edits the arrays in place; copies keep `acts` reusable.
    pm, _ = bp.note_creation.model_output_to_notes(
        {k: v.copy() for k, v in acts.items()},
        onset_thresh=onset_threshold, frame_thresh=frame_threshold, min_note_len=min_frames,
        min_freq=27.5, max_freq=4200.0, include_pitch_bends=False, melodia_trick=True,
    )
    for inst in pm.instruments:
        inst.program, inst.is_drum, inst.name = 0, False, "Piano (transcribed)"
        inst.notes.sort(key=lambda n: (n.start, n.pitch))
    return pm


def transcribe(
    audio: np.ndarray,
    *,
    sr: int = constants.SAMPLE_RATE,
    onset_threshold: float = 0.5,
    frame_threshold: float = 0.3,
    min_note_ms: float = 58.0,
) -> pretty_midi.PrettyMIDI:
    """A piano MIDI transcription of mono audio. Raises SilentAudioError when nothing is audible."""
    if is_silent(audio, sr):
        raise SilentAudioError("The recording is silent, so there is nothing to transcribe.")
    return decode(
        activations(audio, sr=sr),
        onset_threshold=onset_threshold, frame_threshold=frame_threshold, min_note_ms=min_note_ms,
    )
