"""Audio → MIDI with basic-pitch's bundled ONNX model on onnxruntime (TensorFlow is never needed)."""

import functools
import logging
import os
import tempfile
import warnings

import numpy as np
import pretty_midi

from pianoapp import constants
from pianoapp.errors import MissingBackendError, SilentAudioError
from pianoapp.io.audio import is_silent, write_audio


@functools.lru_cache(maxsize=1)
def _basic_pitch():
    """(inference module, loaded ONNX model). basic-pitch logs a warning per missing backend on import."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import basic_pitch
            from basic_pitch import inference
    except ImportError as err:
        raise MissingBackendError(
            "Transcription needs basic-pitch and onnxruntime; run "
            "`pip install --no-deps basic-pitch && pip install onnxruntime mir_eval 'resampy<0.4.3'`."
        ) from err
    finally:
        root.setLevel(level)
    model_path = basic_pitch.ICASSP_2022_MODEL_PATH
    if not str(model_path).endswith(".onnx") or not os.path.isfile(model_path):
        raise MissingBackendError("basic-pitch's ONNX model is missing; install onnxruntime and reinstall basic-pitch.")
    return inference, inference.Model(model_path)


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
    inference, model = _basic_pitch()
    fd, tmp = tempfile.mkstemp(suffix=".wav")
    os.close(fd)
    try:
        write_audio(tmp, audio, sr)  # basic-pitch reads from a path and resamples to its own 22.05 kHz
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            _, pm, _ = inference.predict(
                tmp, model, onset_threshold=onset_threshold, frame_threshold=frame_threshold,
                minimum_note_length=min_note_ms, minimum_frequency=27.5, maximum_frequency=4200.0,
                melodia_trick=True,
            )
    finally:
        os.unlink(tmp)
    for inst in pm.instruments:
        inst.program, inst.is_drum, inst.name = 0, False, "Piano (transcribed)"
        inst.pitch_bends = []
    return pm
