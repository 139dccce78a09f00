"""The one trainer, proven with the LM recipe on real data: loss falls, checkpoints load, runs resume,
DDP shards the data."""

import json
import os
import shutil
import subprocess
import sys
import textwrap

import pytest
import torch
from safetensors import safe_open

from pianoapp.errors import BadInputError
from pianoapp.models import registry
from pianoapp.models.checkpoint import load_config, load_model
from pianoapp.tokenizer import Tokenizer
import pianoapp.train
from pianoapp.train import run, trainer
from pianoapp.train.arranger import ArrangerTrainConfig
from pianoapp.train.trainer import StepBatches, TrainConfig, apply_overrides

# A few real files, short windows: seconds on two CPU cores.
SMOKE = {"max_items": 6, "batch_size": 4, "log_every": 1, "eval_every": 10, "eval_windows": 4, "warmup_steps": 5}


def records(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_step_batches_shard_one_stream_across_ranks():
    def stream(world, start=0):
        per_rank = [list(StepBatches(batch_size=3, grad_accum=2, rank=r, world_size=world, start_step=start,
                                     max_steps=5)) for r in range(world)]
        return per_rank

    ranks = stream(2)
    assert all(len(batches) == 5 * 2 for batches in ranks)
    flat = [i for batches in ranks for batch in batches for i in batch]
    assert sorted(flat) == list(range(5 * 2 * 2 * 3))  # disjoint, nothing skipped
    assert stream(2, start=3)[1] == ranks[1][3 * 2:]  # resuming continues the same stream
    single = [i for batch in stream(1)[0] for i in batch]
    assert single == list(range(5 * 2 * 3))


def test_learning_rate_warms_up_then_follows_a_cosine():
    config = TrainConfig(lr=1e-3, min_lr=1e-4, warmup_steps=10, max_steps=110)
    assert config.lr_at(0) == pytest.approx(1e-4)
    assert config.lr_at(9) == pytest.approx(1e-3)
    assert config.lr_at(60) == pytest.approx(0.5 * (1e-3 + 1e-4))
    assert config.lr_at(110) == pytest.approx(1e-4)
    assert all(config.lr_at(s) >= config.lr_at(s + 1) for s in range(10, 110))


def test_arranger_stage_one_learns_at_its_capped_rate():
    config = ArrangerTrainConfig(lr=1e-3, min_lr=1e-4, warmup_steps=10, max_steps=100, stage1_steps=40, stage1_lr=3e-4)
    assert config.lr_at(0) == pytest.approx(1e-4)  # the warm-up, below the cap
    assert [config.lr_at(s) for s in (5, 20, 39)] == pytest.approx([3e-4] * 3)
    assert config.lr_at(40) == pytest.approx(TrainConfig.lr_at(config, 40)) and config.lr_at(40) > 5e-4


def test_a_model_folder_under_runs_is_its_own_run_folder(monkeypatch, tmp_path, data_dir):
    # Two ablation budgets of one arm share a folder name; their resume states must not.
    runs_dir, seen = tmp_path / "runs", []
    monkeypatch.setattr(pianoapp.train, "RUNS_DIR", runs_dir)
    monkeypatch.setattr(trainer, "train", lambda *a, out_dir, run_dir, command: seen.append(run_dir) or out_dir)
    for out in (runs_dir / "ablation-500" / "lm-x", runs_dir / "ablation-1500" / "lm-x", tmp_path / "models" / "lm-x"):
        run("lm", "tiny", data_dir=data_dir, out_dir=out)
    assert seen == [runs_dir / "ablation-500" / "lm-x", runs_dir / "ablation-1500" / "lm-x", runs_dir / "lm-x"]


def test_overrides_are_typed():
    config = apply_overrides(TrainConfig(), {"max_steps": "20", "lr": 1, "amp": "false", "batch_size": 2})
    assert (config.max_steps, config.lr, config.amp, config.batch_size) == (20, 1.0, False, 2)
    with pytest.raises(BadInputError, match="max_step"):
        apply_overrides(TrainConfig(), {"max_step": 3})
    with pytest.raises(BadInputError, match="int"):
        apply_overrides(TrainConfig(), {"batch_size": 2.5})
    with pytest.raises(BadInputError, match="bool"):
        apply_overrides(TrainConfig(), {"amp": "maybe"})
    with pytest.raises(BadInputError, match="at least 1"):
        apply_overrides(TrainConfig(), {"batch_size": 0})


def test_unknown_recipes_and_configs_say_so(tmp_path):
    with pytest.raises(BadInputError):
        run("gpt", out_dir=tmp_path)
    with pytest.raises(BadInputError):
        run("lm", "huge", out_dir=tmp_path)


def test_lm_trains_saves_loads_and_resumes(data_dir, tmp_path, capsys):
    out, runs = tmp_path / "lm-tiny", tmp_path / "runs"
    model_dir = run("lm", "tiny", data_dir=data_dir, out_dir=out, run_dir=runs,
                    overrides={**SMOKE, "max_steps": 20}, command="pianoapp train lm --config tiny")
    assert model_dir == out

    log = records(runs)
    losses = [r["loss"] for r in log if "loss" in r]
    assert len(losses) == 20 and all(map(torch.isfinite, torch.tensor(losses)))
    assert sum(losses[-4:]) / 4 < sum(losses[:4]) / 4 - 0.3  # it learns
    vals = [r["val_loss"] for r in log if "val_loss" in r]
    assert len(vals) == 2 and vals[1] < vals[0]

    # The shipped folder: fp16 weights, config with tokenizer, a model card.
    with safe_open(out / "model.safetensors", "pt") as f:
        assert {f.get_tensor(k).dtype for k in f.keys()}  # noqa: SIM118 (safe_open is not iterable) == {torch.float16}
    doc = load_config(out)
    assert doc["family"] == "lm" and doc["model"]["context_len"] == 256
    tokenizer = Tokenizer.from_dict(doc["tokenizer"])
    card = (out / "MODEL_CARD.md").read_text()
    for needle in ("pianoapp train lm --config tiny", "Parameters: 754,432", "tokens seen", "ASAP", "POP909",
                   "test_ratio", "Training time", "| onset |"):
        assert needle in card

    # load_model rebuilds exactly the trained weights (as rounded to fp16 for shipping).
    state = torch.load(runs / "last.pt", weights_only=False)
    trained = registry.build(registry.config_from_dict("lm", doc["model"])).eval()
    trained.load_state_dict({k: v.half().float() for k, v in state["model"].items()})
    ids = torch.randint(0, tokenizer.vocab_size, (2, 100))
    with torch.no_grad():
        torch.testing.assert_close(load_model(out, device="cpu")(ids)[0], trained(ids)[0], atol=1e-5, rtol=1e-5)

    # Same command, more steps: picks up at step 20.
    capsys.readouterr()
    run("lm", "tiny", data_dir=data_dir, out_dir=out, run_dir=runs, overrides={**SMOKE, "max_steps": 24})
    assert "from step 20" in capsys.readouterr().err
    steps = [r["step"] for r in records(runs) if "loss" in r]
    assert steps == list(range(1, 25))
    assert torch.load(runs / "last.pt", weights_only=False)["state"]["step"] == 24
    assert "Steps: 24" in (out / "MODEL_CARD.md").read_text()


@pytest.mark.skipif(shutil.which("torchrun", path=os.path.dirname(sys.executable)) is None, reason="no torchrun")
def test_ddp_on_two_processes_matches_one_process(data_dir, tmp_path):
    """Two gloo ranks with 2 sequences each take the same steps as one process with 4."""
    script = textwrap.dedent(f"""
        import sys
        from pathlib import Path
        from pianoapp.train import run
        run("lm", "tiny", data_dir=Path({str(data_dir)!r}), out_dir=Path(sys.argv[1]), run_dir=Path(sys.argv[2]),
            overrides={{**{SMOKE!r}, "max_steps": 3, "batch_size": int(sys.argv[3]), "eval_windows": 1}})
    """)
    torchrun = os.path.join(os.path.dirname(sys.executable), "torchrun")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run([torchrun, "--nproc_per_node", "2", "--no-python", sys.executable, "-c", script,
                    str(tmp_path / "ddp"), str(tmp_path / "ddp-run"), "2"], check=True, env=env,
                   capture_output=True, timeout=120)
    subprocess.run([sys.executable, "-c", script, str(tmp_path / "one"), str(tmp_path / "one-run"), "4"],
                   check=True, env=env, capture_output=True, timeout=120)
    two = torch.load(tmp_path / "ddp-run" / "last.pt", weights_only=False)
    one = torch.load(tmp_path / "one-run" / "last.pt", weights_only=False)
    assert two["state"]["step"] == one["state"]["step"] == 3
    for key, value in one["model"].items():
        torch.testing.assert_close(two["model"][key], value, atol=2e-4, rtol=1e-3)
