"""MIDI → audio with FluidSynth. Every track plays as acoustic piano; the sustain pedal is sent as CC64.

Soundfonts are discovered among those installed; `PIANOAPP_SOUNDFONT` names one explicitly.
Each soundfont is loaded once per process, because loading a 140 MB soundfont costs more than
rendering a minute of music. The same piece always renders to the same samples.
"""

import ctypes
import functools
import os
import threading
from pathlib import Path
from types import SimpleNamespace

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
GAIN = 0.5  # FluidSynth's master gain: loud enough to hear, with headroom for dense pedalled chords
FLUID_WARN = 2  # FluidSynth's log level for warnings


def list_soundfonts() -> dict[str, Path]:
    """Installed soundfonts by name, preferred first (`PIANOAPP_SOUNDFONT` first of all)."""
    found = {}
    env = os.environ.get("PIANOAPP_SOUNDFONT")
    if env and Path(env).is_file():
        found[Path(env).stem] = Path(env)
    for name, paths in SOUNDFONT_CANDIDATES.items():
        for p in paths:
            if p.is_file():
                found.setdefault(name, p)
                break
    return found


def find_soundfont(name: str | None = None) -> Path:
    """The soundfont to use: `name` (installed name or .sf2/.sf3 path), else the preferred one."""
    env = os.environ.get("PIANOAPP_SOUNDFONT")
    if env and not Path(env).is_file():
        raise MissingBackendError(
            f"PIANOAPP_SOUNDFONT points at {env}, which does not exist; point it at an .sf2/.sf3 file or unset it."
        )
    fonts = list_soundfonts()
    if name is None:
        if not fonts:
            raise MissingBackendError(
                "No soundfont is installed to render audio; run `apt-get install -y fluid-soundfont-gm`."
            )
        return next(iter(fonts.values()))
    if Path(name).suffix.lower() in (".sf2", ".sf3"):
        if not Path(name).is_file():
            raise MissingBackendError(f"Soundfont {name} does not exist; give the path of an .sf2/.sf3 file.")
        return Path(name)
    if name not in fonts:
        raise MissingBackendError(
            f"Soundfont '{name}' is not installed; choose one of: {', '.join(fonts) or 'none'}."
        )
    return fonts[name]


@functools.lru_cache(maxsize=1)
def _fluid() -> SimpleNamespace:
    """pyfluidsynth plus the C calls it does not wrap, bound once."""
    try:
        import fluidsynth
    except (ImportError, OSError) as err:
        raise MissingBackendError(
            "FluidSynth is not available to render audio; run `apt-get install -y libfluidsynth3` "
            "and `pip install pyfluidsynth`."
        ) from err
    p, i = ctypes.c_void_p, ctypes.c_int
    fl = SimpleNamespace(
        Synth=fluidsynth.Synth,
        get_sfont=fluidsynth.cfunc("fluid_synth_get_sfont_by_id", p, ("synth", p, 1), ("id", i, 1)),
        add_sfont=fluidsynth.cfunc("fluid_synth_add_sfont", i, ("synth", p, 1), ("sfont", p, 1)),
        remove_sfont=fluidsynth.cfunc("fluid_synth_remove_sfont", i, ("synth", p, 1), ("sfont", p, 1)),
        write_float=fluidsynth.cfunc(
            "fluid_synth_write_float", i, ("synth", p, 1), ("len", i, 1),
            ("lout", p, 1), ("loff", i, 1), ("lincr", i, 1), ("rout", p, 1), ("roff", i, 1), ("rincr", i, 1),
        ),
    )
    # Lending a soundfont makes FluidSynth warn "No preset found" for every channel; errors still print.
    fluidsynth.cfunc("fluid_set_log_function", p, ("level", i, 1), ("fun", p, 1), ("data", p, 1))(
        FLUID_WARN, None, None
    )
    return fl


class _Soundfont:
    """A soundfont loaded once and lent to a fresh synthesizer for each render.

    A fresh synthesizer is what makes renders repeatable: a reused one carries state from piece to
    piece (the reverb's modulation phase, the position inside its 64-frame block). Creating one
    costs about 2 ms; loading the soundfont into it would cost up to seconds.
    """

    def __init__(self, path: Path):
        fl = _fluid()
        # The owner holds the soundfont and never plays. Dynamic loading reads only the samples of
        # presets in use, and selecting the piano keeps those loaded (MuseScore_General: 1 s, not 12).
        self.owner = fl.Synth(channels=16, **{"synth.dynamic-sample-loading": 1})
        sfid = self.owner.sfload(str(path))
        if sfid < 0:
            self.owner.delete()
            raise MissingBackendError(f"FluidSynth could not load the soundfont {path}; it may be damaged.")
        self.owner.program_select(0, sfid, 0, 0)
        self.sfont = fl.get_sfont(self.owner.synth, sfid)
        self.lock = threading.Lock()  # FluidSynth does not promise that synthesizers may share it at once

    def render(self, events: list[tuple[float, int, int, int, int]], end_s: float, sr: int) -> np.ndarray:
        fl = _fluid()
        with self.lock:
            synth = fl.Synth(samplerate=float(sr), gain=GAIN, channels=16)
            sfid = fl.add_sfont(synth.synth, self.sfont)
            try:
                for ch in PIANO_CHANNELS:
                    synth.program_select(ch, sfid, 0, 0)
                chunks, cursor = [], 0
                for t, kind, ch, a, b in events:
                    frame = round(t * sr)
                    if frame > cursor:
                        chunks.append(_samples(fl, synth, frame - cursor))
                        cursor = frame
                    if kind == 0:
                        synth.noteoff(ch, a)
                    elif kind == 1:
                        synth.cc(ch, a, b)
                    else:
                        synth.noteon(ch, a, b)
                total = round(end_s * sr)
                if total > cursor:
                    chunks.append(_samples(fl, synth, total - cursor))
            finally:
                fl.remove_sfont(synth.synth, self.sfont)  # the synth must not free what it borrowed
                synth.delete()
        return np.concatenate(chunks) if chunks else np.zeros(1, np.float32)


def _samples(fl: SimpleNamespace, synth, n: int) -> np.ndarray:
    """The next n frames, mixed to mono. Floats, because pyfluidsynth's 16-bit output is dithered
    with a running noise table and so differs from render to render."""
    stereo = np.zeros(2 * n, np.float32)
    ptr = stereo.ctypes.data
    fl.write_float(synth.synth, n, ptr, 0, 2, ptr, 1, 2)
    return stereo.reshape(-1, 2).mean(axis=1)


@functools.lru_cache(maxsize=4)
def _soundfont(path: Path) -> _Soundfont:
    return _Soundfont(path)


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
    return _soundfont(find_soundfont(soundfont)).render(events, end, sr)
