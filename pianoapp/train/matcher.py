"""The matcher recipe: audio and MIDI encoders pulled into one space with VICReg (or InfoNCE) on
aligned 4 s segments of rendered pieces (descriptor-injected audio–MIDI paper, section 3.6).

Data: the openings of ASAP performances, POP909 songs and Nottingham tunes, rendered with two
soundfonts (one variant at the written tempo, the others time-scaled; `data.segments`) and
augmented on the audio side (`data.augment`). The third installed soundfont stays out of training
so the model card can say how the model fares on a timbre it never heard. Validation is retrieval
within a pool of val segments; the card's numbers follow the seed protocol on the test split.
"""

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from torch import nn

from pianoapp.data.augment import AudioAugment
from pianoapp.data.segments import (
    COLLECTIONS,
    HELD_OUT_SOUNDFONT,
    HOP_SECONDS,
    SEGMENT_SECONDS,
    TIME_SCALE_RANGE,
    Segments,
    TrainingSegments,
    matcher_items,
    matcher_pieces,
    render_pieces,
)
from pianoapp.errors import BadInputError
from pianoapp.evaluate.matcher import embed_segments, evaluate_matcher, retrieval
from pianoapp.io.render import list_soundfonts
from pianoapp.losses import info_nce, vicreg
from pianoapp.models.registry import build, get_config
from pianoapp.train.trainer import TrainConfig

LOSSES = ("vicreg", "infonce")


@dataclass
class MatcherTrainConfig(TrainConfig):
    loss: str = "vicreg"  # or "infonce"
    temperature: float = 0.07  # InfoNCE only
    use_a4: bool = True  # the paper's arms: D0 (neither), a4, d4, d4a4 (both)
    use_d4: bool = True
    d4_chord_s: float = 0.0  # MidiEncoderConfig.d4_chord_s
    soundfonts: str = "FluidR3_GM,MuseScore_General"  # comma-separated; TimGM6mb is held out
    renders_per_piece: int = 2  # the first at the written tempo, the others time-scaled
    render_seconds: float = 60.0  # of each piece's opening
    augment: bool = True

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.loss not in LOSSES:
            raise BadInputError(f"Training setting loss must be one of {', '.join(LOSSES)}, not {self.loss!r}.")
        installed = list_soundfonts()
        unknown = [name for name in self.soundfont_names if name not in installed]
        if not self.soundfont_names or unknown:
            raise BadInputError(f"Training setting soundfonts names {', '.join(unknown) or 'none'}; "
                                f"choose from the installed {', '.join(installed) or '(none)'}.")
        if HELD_OUT_SOUNDFONT in self.soundfont_names:
            raise BadInputError(f"{HELD_OUT_SOUNDFONT} is kept out of training for the robustness test; "
                                "train with the other soundfonts.")
        if self.renders_per_piece < 1 or self.render_seconds < SEGMENT_SECONDS:
            raise BadInputError(f"Render at least one variant of at least {SEGMENT_SECONDS:g} s per piece.")

    @property
    def soundfont_names(self) -> tuple[str, ...]:
        return tuple(name.strip() for name in self.soundfonts.split(",") if name.strip())


class MatcherRecipe:
    unit = "segments"

    def __init__(self, name: str, config: MatcherTrainConfig, *, data_dir: Path | None = None):
        self.name, self.config, self.data_dir = name, config, data_dir
        self.model_config = get_config(name, use_a4=config.use_a4, use_d4=config.use_d4)
        self.model_config.midi = replace(self.model_config.midi, d4_chord_s=config.d4_chord_s)
        self._val: list[dict] | None = None

    def _segments(self, split: str, *, soundfonts: tuple[str, ...], per_piece: int) -> Segments:
        pieces = matcher_pieces(split, data_dir=self.data_dir, max_items=self.config.max_items)
        return Segments(render_pieces(pieces, soundfonts=soundfonts, per_piece=per_piece,
                                      seconds=self.config.render_seconds))

    def build_model(self) -> nn.Module:
        return build(self.model_config)

    def dataset(self) -> TrainingSegments:
        segments = self._segments("train", soundfonts=self.config.soundfont_names,
                                  per_piece=self.config.renders_per_piece)
        return TrainingSegments(segments, seed=self.config.seed, augment=AudioAugment() if self.config.augment else None)

    def loss(self, model: nn.Module, batch: dict) -> tuple[torch.Tensor, int]:
        out = model(batch["audio"], batch["midi"])
        return self._loss(out.audio, out.midi), batch["audio"].shape[0]

    def _loss(self, za: torch.Tensor, zm: torch.Tensor) -> torch.Tensor:
        za, zm = za.float(), zm.float()
        if self.config.loss == "infonce":
            return info_nce(za, zm, temperature=self.config.temperature)["loss"]
        return vicreg(za, zm)["loss"]

    def validate(self, model: nn.Module) -> dict[str, float]:
        """Loss and retrieval within one pool of `eval_windows` clean val segments (written tempo,
        first training soundfont), every segment a query."""
        if self._val is None:
            segments = self._segments("val", soundfonts=self.config.soundfont_names[:1], per_piece=1)
            picks = np.random.default_rng(0).permutation(len(segments))[: self.config.eval_windows]
            self._val = [segments[int(j)] for j in sorted(picks)]
        za, zm = embed_segments(model, self._val, batch_size=self.config.batch_size)
        n = len(za)
        scores = retrieval(za, zm, seed=0, n_queries=n, pool=n)
        loss = self._loss(torch.from_numpy(za), torch.from_numpy(zm))
        return {"val_loss": float(loss), "val_r1_a2m": scores["audio_to_midi"]["R@1"],
                "val_r10_a2m": scores["audio_to_midi"]["R@10"], "val_r10_m2a": scores["midi_to_audio"]["R@10"],
                "val_S": scores["S"], "val_pool": float(n)}

    def checkpoint_extra(self) -> dict:
        c = self.config
        return {"data": {"collections": list(COLLECTIONS), "soundfonts": list(c.soundfont_names),
                         "held_out_soundfont": HELD_OUT_SOUNDFONT, "renders_per_piece": c.renders_per_piece,
                         "render_seconds": c.render_seconds, "segment_seconds": SEGMENT_SECONDS,
                         "hop_seconds": HOP_SECONDS},
                "train": {"loss": c.loss, "augment": c.augment}}

    def report(self, model_dir: Path) -> tuple[dict, str]:
        """The seed protocol on the test split, on a training soundfont and on the held-out one."""
        results = {sf: evaluate_matcher(model_dir, data_dir=self.data_dir, split="test", soundfont=sf,
                                        max_items=self.config.max_items)
                   for sf in (self.config.soundfont_names[0], HELD_OUT_SOUNDFONT)}
        counts = {split: len(matcher_items(split, data_dir=self.data_dir, max_items=self.config.max_items))
                  for split in ("train", "val", "test")}
        files = ", ".join(f"{split} {n:,}" for split, n in counts.items())
        c, m = self.config, self.model_config
        arm = {(False, False): "D0", (True, False): "a4", (False, True): "d4", (True, True): "d4a4"}[m.use_a4, m.use_d4]

        def row(sf: str, r: dict) -> str:
            cells = [f"{r[way][k]['mean']:.3f} ± {r[way][k]['std']:.3f}" for way in ("audio_to_midi", "midi_to_audio")
                     for k in ("R@1", "R@10")]
            return f"| {sf} | {r['segments']:,} | {' | '.join(cells)} | {r['S']['mean']:.3f} ± {r['S']['std']:.3f} |"

        main = results[c.soundfont_names[0]]
        lo, hi = TIME_SCALE_RANGE
        scaled = f", the others with note times scaled by {lo:g}–{hi:g}" if c.renders_per_piece > 1 else ""
        text = f"""## Data

Openings (first {c.render_seconds:g} s) of ASAP performances, POP909 songs and Nottingham tunes, rendered
with {', '.join(c.soundfont_names)} ({c.renders_per_piece} per piece: one at the written tempo{scaled}),
cut into {SEGMENT_SECONDS:g} s segments every {HOP_SECONDS:g} s and paired with the notes sounding in each
(sustain pedal folded in). Audio augmentation: {'gain, EQ, reverb, noise at 10–40 dB SNR' if c.augment else 'none'}.
Piece-disjoint splits; files per split: {files}. Arm {arm} (A4 {'on' if m.use_a4 else 'off'}, D4
{'on' if m.use_d4 else 'off'}{f', chords read bottom to top in {m.midi.d4_chord_s * 1000:g} ms cells' if m.use_d4 and m.midi.d4_chord_s else ''}), {c.loss} loss.

## Evaluation (seed protocol, {main['split']} split)

{main['queries']} seeded queries, each against a pool of {main['pool']} segments (the true partner and
{main['pool'] - 1} others), recall in both directions, mean ± std over {len(main['seeds'])} seeds; S =
min(R@10 audio→MIDI, R@10 MIDI→audio). Chance R@10 = {main['chance']['R@10']:.3f}. {HELD_OUT_SOUNDFONT}
was never heard in training.

| soundfont | segments | R@1 a→m | R@10 a→m | R@1 m→a | R@10 m→a | S |
|---|---|---|---|---|---|---|
{chr(10).join(row(sf, r) for sf, r in results.items())}
"""
        metrics = {"test_S": main["S"]["mean"], "test_S_std": main["S"]["std"],
                   "test_r1_a2m": main["audio_to_midi"]["R@1"]["mean"],
                   "test_r10_a2m": main["audio_to_midi"]["R@10"]["mean"],
                   "test_r10_m2a": main["midi_to_audio"]["R@10"]["mean"],
                   f"test_S_{HELD_OUT_SOUNDFONT}": results[HELD_OUT_SOUNDFONT]["S"]["mean"]}
        return metrics, text
