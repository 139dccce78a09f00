"""The one trainer every model uses: AdamW with warm-up and cosine decay, gradient accumulation,
bf16 autocast on GPU, checkpoint/resume, seeded data order, tqdm progress and a JSONL metrics log,
and DDP when launched with `torchrun` (WORLD_SIZE > 1; rank 0 logs and saves).

A recipe supplies the model, a map-style dataset whose item i is a pure function of (seed, i), the
loss and its evaluations; the trainer owns everything else. Sample indices are laid out by step,
so a resumed run sees exactly the batches an uninterrupted run would have seen.
"""

import dataclasses
import datetime
import json
import math
import os
import platform
import sys
import time
import typing
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, Dataset, Sampler
from tqdm import tqdm

from pianoapp.errors import BadInputError
from pianoapp.models.checkpoint import save_model


@dataclass
class TrainConfig:
    max_steps: int = 1000
    batch_size: int = 16  # sequences per micro-batch on each process
    grad_accum: int = 1  # micro-batches per optimizer step on each process
    lr: float = 3e-4
    min_lr: float = 3e-5  # where the cosine ends
    warmup_steps: int = 100
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.95
    grad_clip: float = 1.0
    seed: int = 0
    log_every: int = 10
    eval_every: int = 500
    eval_windows: int = 64  # validation examples per evaluation
    save_every_min: float = 10.0
    num_workers: int = -1  # data loader workers per process; -1: 4 on GPU, 0 on CPU
    max_items: int = 0  # cap on the pieces a recipe loads per split (smoke runs); 0 = all
    amp: bool = True  # bf16 autocast on CUDA; ignored on CPU

    def __post_init__(self) -> None:
        for name in ("max_steps", "batch_size", "grad_accum", "log_every", "eval_every", "eval_windows"):
            if getattr(self, name) < 1:
                raise BadInputError(f"Training setting {name} must be at least 1, not {getattr(self, name)}.")

    def lr_at(self, step: int) -> float:
        """Linear warm-up to lr, then a cosine down to min_lr at max_steps (recipes may reshape it)."""
        if step < self.warmup_steps:
            return self.lr * (step + 1) / self.warmup_steps
        progress = min(1.0, (step - self.warmup_steps) / max(1, self.max_steps - self.warmup_steps))
        return self.min_lr + 0.5 * (1 + math.cos(math.pi * progress)) * (self.lr - self.min_lr)


def apply_overrides(config: TrainConfig, overrides: dict | None) -> TrainConfig:
    """A copy of config (a TrainConfig or a recipe's subclass of it) with the given fields replaced;
    strings are converted to the field's type."""
    if not overrides:
        return config
    types_ = typing.get_type_hints(type(config))
    values = {}
    for key, value in overrides.items():
        if key not in types_:
            raise BadInputError(f"{key!r} is not a training setting; use one of {', '.join(types_)}.")
        kind = types_[key]
        try:
            if kind is bool and isinstance(value, str):
                if value.lower() not in ("true", "false", "1", "0"):
                    raise ValueError(value)
                value = value.lower() in ("true", "1")
            elif kind is float and isinstance(value, int | str) and not isinstance(value, bool):
                value = float(value)
            elif kind is int and isinstance(value, str):
                value = int(value)
            if not isinstance(value, kind) or (kind is not bool and isinstance(value, bool)):
                raise ValueError(value)
        except ValueError:
            raise BadInputError(f"Training setting {key} takes {kind.__name__} values, not {value!r}.") from None
        values[key] = value
    return dataclasses.replace(config, **values)


class Recipe(Protocol):
    name: str  # the model folder's name, e.g. "lm-small"
    unit: str  # what `loss` counts, for logs and the model card: "tokens", "segments"

    def build_model(self) -> nn.Module: ...  # a registered model; `model.config` is its dataclass

    def dataset(self) -> Dataset: ...  # item i is a pure function of (seed, i); default-collated

    def loss(self, model: nn.Module, batch: Any) -> tuple[torch.Tensor, int]: ...  # mean loss, tokens

    def validate(self, model: nn.Module) -> dict[str, float]: ...  # cheap, run every eval_every steps

    def checkpoint_extra(self) -> dict: ...  # stored in config.json beside the model config

    def report(self, model_dir: Path) -> tuple[dict, str]: ...  # final metrics + markdown for the card


class StepBatches(Sampler[list[int]]):
    """This process's micro-batches of sample indices (DistributedSampler-like sharding).

    Sample index = position in one global stream laid out (step, micro-batch, rank, row), so ranks
    never share a sample and starting at `start_step` continues the stream exactly.
    """

    def __init__(self, *, batch_size: int, grad_accum: int, rank: int, world_size: int, start_step: int,
                 max_steps: int):
        self.batch_size, self.grad_accum = batch_size, grad_accum
        self.rank, self.world_size = rank, world_size
        self.start_step, self.max_steps = start_step, max_steps

    def __iter__(self):
        for step in range(self.start_step, self.max_steps):
            for micro in range(self.grad_accum):
                first = ((step * self.grad_accum + micro) * self.world_size + self.rank) * self.batch_size
                yield list(range(first, first + self.batch_size))

    def __len__(self) -> int:
        return max(0, self.max_steps - self.start_step) * self.grad_accum


def make_optimizer(model: nn.Module, config: TrainConfig, *, fused: bool) -> torch.optim.AdamW:
    # Decay matrices and embeddings only; norm gains stay free.
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in params if p.dim() >= 2], "weight_decay": config.weight_decay},
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=config.lr, betas=(config.beta1, config.beta2), fused=fused)


@dataclass
class Distributed:
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed() -> Distributed:
    """Join the process group when torchrun started several processes (nccl on GPU, gloo on CPU)."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size == 1:
        return Distributed()
    env = Distributed(int(os.environ["RANK"]), int(os.environ["LOCAL_RANK"]), world_size)
    if not dist.is_initialized():
        if torch.cuda.is_available():
            torch.cuda.set_device(env.local_rank)
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return env


def hardware(world_size: int) -> str:
    if torch.cuda.is_available():
        return f"{world_size} x {torch.cuda.get_device_name()}"
    return f"{world_size} x CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def train(recipe: Recipe, config: TrainConfig, *, out_dir: Path, run_dir: Path, command: str = "") -> Path:
    """Train (or resume from run_dir/last.pt) to config.max_steps; write the model folder; return it."""
    env = init_distributed()
    out_dir, run_dir = Path(out_dir), Path(run_dir)
    cuda = torch.cuda.is_available()
    device = torch.device(f"cuda:{env.local_rank}" if cuda else "cpu")
    if cuda:
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    torch.manual_seed(config.seed)  # same initial weights on every rank

    model = recipe.build_model().to(device)
    optimizer = make_optimizer(model, config, fused=cuda)
    state = {"step": 0, "tokens_seen": 0, "train_seconds": 0.0}
    last = run_dir / "last.pt"
    if last.is_file():
        saved = torch.load(last, map_location="cpu", weights_only=False)  # RNG states must stay on the CPU
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        torch.set_rng_state(saved["rng"]["cpu"])
        if cuda and saved["rng"]["cuda"] is not None:
            torch.cuda.set_rng_state(saved["rng"]["cuda"])
        state = saved["state"]
    run_dir.mkdir(parents=True, exist_ok=True)
    log = RunLog(run_dir / "metrics.jsonl", enabled=env.is_main)
    if env.is_main and state["step"]:
        print(f"Resuming {recipe.name} from step {state['step']} ({last})", file=sys.stderr)

    wrapped = model
    if env.world_size > 1:
        wrapped = nn.parallel.DistributedDataParallel(model, device_ids=[env.local_rank] if cuda else None)
    workers = config.num_workers if config.num_workers >= 0 else (4 if cuda else 0)
    loader = DataLoader(
        recipe.dataset(),
        batch_sampler=StepBatches(
            batch_size=config.batch_size, grad_accum=config.grad_accum, rank=env.rank,
            world_size=env.world_size, start_step=state["step"], max_steps=config.max_steps,
        ),
        num_workers=workers,
        pin_memory=cuda,
    )
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if cuda and config.amp else nullcontext()

    def save_state() -> None:
        if env.is_main:
            rng = {"cpu": torch.get_rng_state(), "cuda": torch.cuda.get_rng_state() if cuda else None}
            payload = {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "rng": rng,
                       "state": state, "config": dataclasses.asdict(config)}
            torch.save(payload, run_dir / "last.pt.tmp")
            os.replace(run_dir / "last.pt.tmp", last)

    batches = iter(loader)
    progress = tqdm(total=config.max_steps, initial=state["step"], desc=recipe.name, file=sys.stderr,
                    disable=not env.is_main, dynamic_ncols=True)
    model.train()
    started = last_save = time.monotonic()
    seconds_before = state["train_seconds"]
    window_tokens, window_start = 0, time.monotonic()
    try:
        while state["step"] < config.max_steps:
            step = state["step"]
            lr = config.lr_at(step)
            for group in optimizer.param_groups:
                group["lr"] = lr
            step_loss, step_tokens = torch.zeros((), device=device), 0
            for micro in range(config.grad_accum):
                batch = to_device(next(batches), device)
                sync = micro == config.grad_accum - 1 or env.world_size == 1
                with (nullcontext() if sync else wrapped.no_sync()), autocast:
                    loss, tokens = recipe.loss(wrapped, batch)
                (loss / config.grad_accum).backward()
                step_loss += loss.detach() / config.grad_accum
                step_tokens += int(tokens)
            grad_norm = nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            step_loss = step_loss.item()

            state["step"] = step + 1
            state["tokens_seen"] += step_tokens * env.world_size  # rank 0's count, times the ranks
            state["train_seconds"] = seconds_before + time.monotonic() - started
            window_tokens += step_tokens * env.world_size
            progress.update(1)
            progress.set_postfix(loss=f"{step_loss:.3f}", lr=f"{lr:.2e}")
            if state["step"] % config.log_every == 0 or state["step"] == config.max_steps:
                now = time.monotonic()
                log.write(step=state["step"], loss=step_loss, lr=lr, grad_norm=float(grad_norm),
                          tokens_seen=state["tokens_seen"], tokens_per_s=window_tokens / max(now - window_start, 1e-9))
                window_tokens, window_start = 0, now
            if env.is_main and (state["step"] % config.eval_every == 0 or state["step"] == config.max_steps):
                log.write(step=state["step"], **evaluate(recipe, model, autocast))
            if time.monotonic() - last_save >= config.save_every_min * 60:
                save_state()
                last_save = time.monotonic()
    except KeyboardInterrupt:
        save_state()  # Ctrl-C keeps the progress; re-running the command resumes
        raise
    finally:
        progress.close()
    save_state()

    if env.is_main:
        extra = recipe.checkpoint_extra()
        save_model(model, out_dir, config=model.config, extra=extra)
        metrics, report = recipe.report(out_dir)
        card = model_card(recipe.name, config, state, log.last_eval(), metrics, report,
                          params=sum(p.numel() for p in model.parameters()), hardware=hardware(env.world_size),
                          command=command, unit=recipe.unit)
        (out_dir / "MODEL_CARD.md").write_text(card)
    if env.world_size > 1:
        dist.barrier()
        dist.destroy_process_group()
    return out_dir


@torch.no_grad()
def evaluate(recipe: Recipe, model: nn.Module, autocast) -> dict[str, float]:
    model.eval()
    try:
        with autocast:
            return recipe.validate(model)
    finally:
        model.train()


def to_device(batch: Any, device: torch.device) -> Any:
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, (list, tuple)):
        return type(batch)(to_device(b, device) for b in batch)
    if isinstance(batch, dict):
        return {k: to_device(v, device) for k, v in batch.items()}
    return batch


class RunLog:
    """Append-only JSONL of training metrics (rank 0 only); survives resumes."""

    def __init__(self, path: Path, *, enabled: bool):
        self.path, self.enabled = path, enabled
        self._last_eval: dict = {}

    def write(self, **record) -> None:
        if not self.enabled:
            return
        record["time"] = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")
        if any(k.startswith("val_") for k in record):
            self._last_eval = record

    def last_eval(self) -> dict:
        return {k: v for k, v in self._last_eval.items() if k.startswith("val_")}


def model_card(name: str, config: TrainConfig, state: dict, val: dict, metrics: dict, report: str, *,
               params: int, hardware: str, command: str, unit: str) -> str:
    seconds = state["train_seconds"]
    duration = f"{seconds / 3600:.2f} h" if seconds >= 3600 else f"{seconds / 60:.1f} min"
    lines = [
        f"# {name}",
        "",
        f"- Date: {datetime.date.today().isoformat()}",
        f"- Command: `{command or '(called from Python)'}`",
        f"- Parameters: {params:,}",
        f"- Steps: {state['step']:,}; {unit} seen: {state['tokens_seen']:,}",
        f"- Training time: {duration} on {hardware}",
        "",
        report.strip(),
        "",
        "## Metrics",
        "",
        *(f"- {k}: {_fmt(v)}" for k, v in {**val, **metrics}.items()),
        "",
        "## Training settings",
        "",
        "```json",
        json.dumps(dataclasses.asdict(config), indent=1),
        "```",
        "",
    ]
    return "\n".join(lines)


def _fmt(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, float) else json.dumps(value)
