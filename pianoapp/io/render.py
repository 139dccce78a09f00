"""MIDI → audio with FluidSynth. Every track plays as acoustic piano; the sustain pedal is sent as CC64.

Soundfonts are discovered among those installed; `PIANOAPP_SOUNDFONT` names one explicitly.
One synthesizer per (soundfont, rate) is kept, because loading a 140 MB soundfont costs more than
rendering a minute of music.
"""

import ctypes
import functools
import os
import threading
from pathlib import Path

import numpy as np
import pretty_midi

from pianoapp import constants
from pianoapp.errors import MissingBackendError

SOUNDFONT_CANDIDATES = {
    "FluidR3_GM": [Path("/usr/share/sounds/sf2/FluidR3_GM.sf2")],
    "MuseScore_General": [Path("/usr/share/sounds/sf3/MuseScore_General.sf3"),
                          Path("/usr/share/sounds/sf2/MuseScore_General.sf2")],
    "TimGM6mb": [Path(pretty_midi.__file__).parent / "TimGM6mb.sf2"],
}
RELEASE_TAIL_S = 1.0  # rendered after the last note-off so the final chord can ring out
PIANO_CHANNELS = [c for c in range(16) if c != 9]  # channel 10 is drums in General MIDI
BLOCK = 64  # FluidSynth synthesises in blocks of this many frames (FLUID_BUFSIZE)


def list_soundfonts() -> dict[str, Path]:
    """Installed soundfonts by name, preferred first."""
    found = {}
    env = os.environ.get("PIANOAPP_SOUNDFONT")
    if env:
        found[Path(env).stem] = Path(env)
    for name, paths in SOUNDFONT_CANDIDATES.items():
        for p in paths:
            if p.is_file():
                found.setdefault(name, p)
                break
    return found


def find_soundfont(name: str | None = None) -> Path:
    fonts = list_soundfonts()
    env = os.environ.get("PIANOAPP_SOUNDFONT")
    if env and not Path(env).is_file():
        raise MissingBackendError(f"PIANOAPP_SOUNDFONT points at {env}, which does not exist.")
    if name is None:
        if not fonts:
            raise MissingBackendError(
                "No soundfont is installed to render audio; run `apt-get install -y fluid-soundfont-gm`."
            )
        return next(iter(fonts.values()))
    if Path(name).suffix.lower() in (".sf2", ".sf3"):
        if not Path(name).is_file():
            raise MissingBackendError(f"Soundfont {name} does not exist.")
        return Path(name)
    if name not in fonts:
        raise MissingBackendError(
            f"Soundfont '{name}' is not installed; installed: {', '.join(fonts) or 'none'}."
        )
    return fonts[name]


def _fluidsynth():
    try:
        import fluidsynth
    except (ImportError, OSError) as err:
        raise MissingBackendError(
            "FluidSynth is not available to render audio; run `apt-get install -y libfluidsynth3` "
            "and `pip install pyfluidsynth`."
        ) from err
    return fluidsynth


class _Synth:
    """One loaded soundfont; renders one piece at a time, the same way every time.

    Two things would make renders differ: pyfluidsynth's 16-bit output is dithered from a running
    noise table, so we read floats instead; and FluidSynth keeps its place inside a 64-frame block
    across calls, so each render starts on a block boundary.
    """

    def __init__(self, soundfont: Path, sr: int):
        fluidsynth = _fluidsynth()
        self.sr = sr
        self.lock = threading.Lock()
        self.synth = fluidsynth.Synth(samplerate=float(sr), gain=0.5)
        self.sfid = self.synth.sfload(str(soundfont))
        if self.sfid < 0:
            raise MissingBackendError(f"FluidSynth could not load the soundfont {soundfont}.")
        p = ctypes.c_void_p
        self._write_float = fluidsynth.cfunc(
            "fluid_synth_write_float", ctypes.c_int, ("synth", p, 1), ("len", ctypes.c_int, 1),
            ("lout", p, 1), ("loff", ctypes.c_int, 1), ("lincr", ctypes.c_int, 1),
            ("rout", p, 1), ("roff", ctypes.c_int, 1), ("rincr", ctypes.c_int, 1),
        )
        self.frames = 0  # frames synthesised so far, to find the block boundary

    def _samples(self, n: int) -> np.ndarray:
        """The next n frames, mixed to mono."""
        stereo = np.zeros(2 * n, np.float32)
        ptr = stereo.ctypes.data
        self._write_float(self.synth.synth, n, ptr, 0, 2, ptr, 1, 2)
        self.frames += n
        return stereo.reshape(-1, 2).mean(axis=1)

    def render(self, events: list[tuple[float, int, int, int, int]], end_s: float) -> np.ndarray:
        with self.lock:
            s = self.synth
            s.system_reset()
            if self.frames % BLOCK:
                self._samples(BLOCK - self.frames % BLOCK)
            for ch in PIANO_CHANNELS:
                s.program_select(ch, self.sfid, 0, 0)
            chunks, cursor = [], 0
            for t, kind, ch, a, b in events:
                frame = int(round(t * self.sr))
                if frame > cursor:
                    chunks.append(self._samples(frame - cursor))
                    cursor = frame
                if kind == 0:
                    s.noteoff(ch, a)
                elif kind == 1:
                    s.cc(ch, a, b)
                else:
                    s.noteon(ch, a, b)
            total = int(round(end_s * self.sr))
            if total > cursor:
                chunks.append(self._samples(total - cursor))
        return np.concatenate(chunks) if chunks else np.zeros(1, np.float32)


@functools.lru_cache(maxsize=4)
def _synth(soundfont: Path, sr: int) -> _Synth:
    return _Synth(soundfont, sr)


def midi_events(pm: pretty_midi.PrettyMIDI) -> list[tuple[float, int, int, int, int]]:
    """(time, kind, channel, a, b) with kind 0 note-off, 1 CC, 2 note-on; at equal times offs come
    first, so a re-struck key sounds again."""
    events = []
    tracks = [inst for inst in pm.instruments if not inst.is_drum]
    for i, inst in enumerate(tracks):
        ch = PIANO_CHANNELS[i % len(PIANO_CHANNELS)]
        for n in inst.notes:
            if n.end <= n.start:
                continue
            events.append((n.start, 2, ch, n.pitch, n.velocity))
            events.append((n.end, 0, ch, n.pitch, 0))
        for cc in inst.control_changes:
            if cc.number == constants.SUSTAIN_CC:
                events.append((cc.time, 1, ch, cc.number, cc.value))
    events.sort(key=lambda e: (e[0], e[1]))
    return events


def render(
    pm: pretty_midi.PrettyMIDI, *, sr: int = constants.SAMPLE_RATE, soundfont: str | None = None
) -> np.ndarray:
    """Mono float32 audio of the piece played on a piano, at `sr`."""
    events = midi_events(pm)
    end = (events[-1][0] if events else 0.0) + RELEASE_TAIL_S
    return _synth(find_soundfont(soundfont), sr).render(events, end)
