"""The app's two pictures of music: a piano roll for notes and a spectrogram for recordings.

Both share one vertical axis, the piano keyboard (MIDI pitch, octaves labelled at each C), so a
transcription or a generated continuation can be compared with a recording at a glance.
"""

import numpy as np
import plotly.graph_objects as go
import pretty_midi

from pianoapp import constants
from pianoapp.io.midi import piano_notes, sustain_intervals

HEIGHT = 380
SPECTROGRAM_MAX_FRAMES = 1200  # columns sent to the browser, so a 10-minute recording stays light
SPECTROGRAM_FLOOR_DB = -80.0
BLACK_KEYS = {1, 3, 6, 8, 10}  # pitch classes
VELOCITY_COLORS = "Plasma"
TRACK_COLORS = ["#0f766e", "#ea580c", "#6366f1", "#be185d"]  # teal, orange, indigo, pink: apart in hue
SPECTROGRAM_COLORS = "Magma"


def note_name(pitch: int) -> str:
    return pretty_midi.note_number_to_name(int(pitch))


def piano_roll(
    pm: pretty_midi.PrettyMIDI, *, by_track: bool = False, end_s: float | None = None
) -> go.Figure:
    """One horizontal bar per key press, coloured by velocity; sustain-pedal regions shaded.

    Bars show the keys as played (pedal not folded in), so the shading explains why notes ring on.
    With `by_track`, each track gets its own colour and legend entry (velocity becomes opacity), so a
    prompt and its continuation, or a melody and its accompaniment, read apart. `end_s` fixes the
    time axis, so a piece that grows while it is generated fills a steady frame.
    """
    if by_track:
        parts = [(inst.name or f"track {i + 1}", _track_notes(pm, inst))
                 for i, inst in enumerate(inst for inst in pm.instruments if not inst.is_drum)]
    else:
        parts = [("notes", piano_notes(pm, fold_pedal=False))]
    pitches = [n.pitch for _, notes in parts for n in notes]
    low, high = min(pitches), max(pitches)
    fig = go.Figure()
    _shade_pedal(fig, pm, low - 2, high + 2)
    for i, (name, notes) in enumerate(parts):
        if not notes:
            continue
        velocity = np.array([n.velocity for n in notes])
        if by_track:
            marker = dict(color=TRACK_COLORS[i % len(TRACK_COLORS)], opacity=0.4 + 0.6 * velocity / 127)
        else:
            marker = dict(color=velocity, colorscale=VELOCITY_COLORS, cmin=0, cmax=127,
                          colorbar=dict(title="velocity", thickness=12, len=0.8))
        fig.add_trace(_bars(notes, name, marker, in_legend=by_track))
    _layout(fig, low, high)
    fig.update_layout(barmode="overlay", bargap=0)
    if end_s is not None:
        fig.update_xaxes(range=[0, end_s])
    return fig


def mark_time(fig: go.Figure, seconds: float, label: str) -> go.Figure:
    """A dashed vertical line across the keyboard at `seconds`, labelled at the top (e.g. a cut point)."""
    fig.add_vline(x=seconds, line=dict(color="rgba(30, 41, 59, 0.7)", width=1.5, dash="dash"),
                  annotation=dict(text=label, font_size=11, bgcolor="rgba(255, 255, 255, 0.8)"),
                  annotation_position="top right")
    return fig


def _track_notes(pm: pretty_midi.PrettyMIDI, inst: pretty_midi.Instrument) -> list[pretty_midi.Note]:
    solo = pretty_midi.PrettyMIDI(resolution=pm.resolution)
    solo.instruments = [inst]
    return piano_notes(solo, fold_pedal=False)


def _bars(notes: list[pretty_midi.Note], name: str, marker: dict, *, in_legend: bool) -> go.Bar:
    pitch = np.array([n.pitch for n in notes])
    start = np.array([n.start for n in notes])
    end = np.array([n.end for n in notes])
    velocity = np.array([n.velocity for n in notes])
    return go.Bar(
        orientation="h",
        y=pitch,
        base=start,
        x=np.maximum(end - start, 0.01),  # zero-length notes stay visible as slivers
        width=0.8,
        marker=dict(line_width=0, **marker),
        text=[note_name(p) for p in pitch],
        textposition="none",
        customdata=np.stack([end, velocity], axis=1),
        # The trace name (e.g. "Prompt") goes in the hover box only when tracks are told apart.
        hovertemplate="%{text}<br>%{base:.2f}–%{customdata[0]:.2f} s<br>velocity %{customdata[1]}"
                      + ("" if in_legend else "<extra></extra>"),
        name=name,
        showlegend=in_legend,
    )


def _shade_pedal(fig: go.Figure, pm: pretty_midi.PrettyMIDI, low: int, high: int) -> None:
    """All pedal presses as one filled trace (one shape per press would slow the browser)."""
    end_time = pm.get_end_time()
    intervals = [iv for inst in pm.instruments if not inst.is_drum
                 for iv in sustain_intervals(inst, end_time)]
    if not intervals:
        return
    x, y = [], []
    for down, up in intervals:
        x += [down, down, up, up, None]
        y += [low, high, high, low, None]
    fig.add_trace(go.Scatter(
        x=x, y=y, fill="toself", mode="none", fillcolor="rgba(70, 130, 180, 0.12)",
        name="sustain pedal", hoverinfo="skip", showlegend=True,
    ))


def spectrogram(audio: np.ndarray, sr: int) -> go.Figure:
    """Constant-Q spectrogram in dB, one row per piano key, so it lines up with a piano roll."""
    import librosa  # slow import, only when a recording arrives

    n_bins = constants.PIANO_PITCH_MAX - constants.PIANO_PITCH_MIN + 1
    # CQT needs a hop divisible by 2**(octaves-1) = 128 for 88 keys; grow it so long files stay light.
    hop = 512 * max(1, int(np.ceil(audio.size / SPECTROGRAM_MAX_FRAMES / 512)))
    cqt = np.abs(librosa.cqt(audio, sr=sr, hop_length=hop, n_bins=n_bins, bins_per_octave=12,
                             fmin=librosa.midi_to_hz(constants.PIANO_PITCH_MIN)))
    db = librosa.amplitude_to_db(cqt, ref=np.max, top_db=-SPECTROGRAM_FLOOR_DB)
    times = np.arange(db.shape[1]) * hop / sr
    pitches = np.arange(constants.PIANO_PITCH_MIN, constants.PIANO_PITCH_MAX + 1)
    fig = go.Figure(go.Heatmap(
        x=times, y=pitches, z=np.round(db).astype(np.int8),  # whole dB: a quarter of the bytes of float32
        zmin=SPECTROGRAM_FLOOR_DB, zmax=0, colorscale=SPECTROGRAM_COLORS,
        colorbar=dict(title="dB", thickness=12, len=0.8),
        text=np.array([[note_name(p)] * len(times) for p in pitches]),
        hovertemplate="%{text}<br>%{x:.2f} s<br>%{z:.0f} dB<extra></extra>",
    ))
    _layout(fig, constants.PIANO_PITCH_MIN, constants.PIANO_PITCH_MAX, key_stripes=False)
    return fig


def _layout(fig: go.Figure, low: int, high: int, *, key_stripes: bool = True) -> None:
    """Keyboard on the y axis (ticks at every C, more when the range is narrow), time on the x axis,
    black-key rows faintly striped."""
    low, high = max(low - 2, constants.PIANO_PITCH_MIN - 1), min(high + 2, constants.PIANO_PITCH_MAX + 1)
    span = high - low
    labelled = {0} if span > 36 else {0, 4, 7} if span > 18 else {0, 2, 4, 5, 7, 9, 11}  # C; C E G; naturals
    ticks = [p for p in range(low, high + 1) if p % 12 in labelled]
    if key_stripes:
        fig.update_layout(shapes=[
            dict(type="rect", xref="paper", x0=0, x1=1, yref="y", y0=p - 0.5, y1=p + 0.5,
                 fillcolor="rgba(0, 0, 0, 0.045)", line_width=0, layer="below")
            for p in range(low, high + 1) if p % 12 in BLACK_KEYS
        ])
    fig.update_layout(
        template="plotly_white",
        height=HEIGHT,
        margin=dict(l=50, r=10, t=10, b=40),
        xaxis=dict(title="time (s)", rangemode="tozero", showgrid=False, zeroline=False),
        yaxis=dict(range=[low - 0.5, high + 0.5], tickvals=ticks, ticktext=[note_name(p) for p in ticks],
                   gridcolor="rgba(0, 0, 0, 0.15)", zeroline=False, fixedrange=False),
        legend=dict(orientation="h", x=0, y=1.02, yanchor="bottom"),
        hoverlabel=dict(bgcolor="white"),
        dragmode="zoom",
    )
