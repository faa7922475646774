"""Training with several processes (torchrun, gloo on the CPU): W processes with the global batch
split between them train the model one process trains on the whole batch; one writer; a signal
to one rank stops every rank with a resumable checkpoint; the world size may change on resume."""

import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from diffusion_policy_dist.training.batches import EpochBatches
from diffusion_policy_dist.training.checkpoint import load_checkpoint, read_meta
from diffusion_policy_dist.training.distributed import World, world_from_env

pytestmark = pytest.mark.e2e


def args(data, out, steps=6, *extra):
    return [
        "train", f"dataset.path={data}", f"output_dir={out}", "network=tiny",
        f"training.steps={steps}", "training.batch_size=16", "loss.m=2",
        "policy.noise_injection=late", "training.progress=false", "training.val_every=3",
        "training.log_every=2", "training.checkpoint_every=100", "threads=1", *extra,
    ]  # fmt: skip


def launch(n: int, argv: list[str], **kw) -> subprocess.Popen:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    if n == 1:
        cmd = [sys.executable, "-m", "diffusion_policy_dist", *argv]
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               f"--nproc_per_node={n}", "-m", "diffusion_policy_dist", *argv]  # fmt: skip
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, **kw)


def run(n: int, argv: list[str]) -> str:
    p = launch(n, argv)
    out, _ = p.communicate(timeout=600)
    assert p.returncode == 0, out.decode()[-3000:]
    return out.decode()


def max_diff(a, b) -> float:
    ka, kb = load_checkpoint(a), load_checkpoint(b)
    assert ka.model_state.keys() == kb.model_state.keys()
    pairs = [(ka.model_state[k], kb.model_state[k]) for k in ka.model_state]
    pairs += [(ka.ema_state[k], kb.ema_state[k]) for k in ka.ema_state]
    return max(float((x.double() - y.double()).abs().max()) for x, y in pairs)


def test_shards_of_every_global_batch_cover_it_exactly():
    one = EpochBatches(100, 16, seed=3)
    parts = [EpochBatches(100, 16, seed=3, rank=r, world=4) for r in range(4)]
    for e, i in ((0, 0), (2, 5)):
        joined = [x for p in parts for x in p.indices(e, i)]
        assert joined == list(one.indices(e, i)) and all(len(p.indices(e, i)) == 4 for p in parts)
    assert world_from_env({}) == World() and not World().active
    assert world_from_env({"WORLD_SIZE": "4", "RANK": "2", "LOCAL_RANK": "0"}).rank == 2
    with pytest.raises(ValueError, match="RANK=4 is not in a world of WORLD_SIZE=4"):
        world_from_env({"WORLD_SIZE": "4", "RANK": "4"})


def test_two_processes_train_what_one_process_trains_on_the_global_batch(bimodal_zarr, tmp_path):
    run(1, args(bimodal_zarr, tmp_path / "one"))
    run(2, args(bimodal_zarr, tmp_path / "two"))
    diff = max_diff(tmp_path / "one", tmp_path / "two")
    assert diff < 1e-4, diff  # float summation order, amplified by Adam (measured: 1.1e-5)
    meta = read_meta(tmp_path / "two")
    assert meta["world_size"] == 2 and meta["batch_size"] == 16 and meta["step"] == 6
    assert meta["train_flops_per_step"] == read_meta(tmp_path / "one")["train_flops_per_step"]
    lines = (tmp_path / "two" / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == len((tmp_path / "one" / "metrics.jsonl").read_text().splitlines())
    assert sorted(os.listdir(tmp_path / "two")) == sorted(os.listdir(tmp_path / "one"))


def test_the_global_batch_must_split_over_the_processes(bimodal_zarr, tmp_path):
    p = launch(2, args(bimodal_zarr, tmp_path / "odd", 2, "training.batch_size=15"))
    out, _ = p.communicate(timeout=600)
    assert p.returncode != 0
    assert "training.batch_size=15 is the global batch and must split evenly" in out.decode()


def test_sigterm_to_one_rank_stops_all_with_a_checkpoint_and_resume_is_exact(
    bimodal_zarr, tmp_path
):
    run(2, args(bimodal_zarr, tmp_path / "full", 40))
    cut = args(bimodal_zarr, tmp_path / "cut", 40, "training.log_every=1")
    p = launch(2, cut)
    metrics = tmp_path / "cut" / "metrics.jsonl"
    deadline = time.time() + 300
    while time.time() < deadline and (
        not metrics.exists() or len(metrics.read_text().splitlines()) < 3
    ):
        time.sleep(0.2)
    workers = subprocess.run(["pgrep", "-P", str(p.pid)], capture_output=True, text=True)
    ranks = sorted(int(x) for x in workers.stdout.split())
    assert len(ranks) == 2, workers.stdout
    os.kill(ranks[-1], signal.SIGTERM)  # one rank only, as a node's scheduler would
    out, _ = p.communicate(timeout=300)
    assert p.returncode != 0, out.decode()[-2000:]
    step = read_meta(tmp_path / "cut")["step"]
    assert 0 < step < 40
    run(2, cut)  # the same command resumes (as torchrun --max-restarts would)
    assert read_meta(tmp_path / "cut")["step"] == 40
    assert max_diff(tmp_path / "full", tmp_path / "cut") == 0.0


def test_resume_with_another_world_size_continues_exactly(bimodal_zarr, tmp_path):
    # a constant LR, so that 4 steps continued to 8 are the 8-step run
    flat = ("training.lr_schedule=constant", "training.warmup_steps=0")
    run(2, args(bimodal_zarr, tmp_path / "two", 8, *flat))
    run(2, args(bimodal_zarr, tmp_path / "mixed", 4, *flat))
    out = run(1, args(bimodal_zarr, tmp_path / "mixed", 8, *flat))  # one process takes over
    assert "continuing to step 8" in out
    assert max_diff(tmp_path / "two", tmp_path / "mixed") < 1e-4
    assert torch.equal(torch.tensor(read_meta(tmp_path / "mixed")["world_size"]), torch.tensor(1))
