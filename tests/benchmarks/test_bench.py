"""dpd bench and dpd demo end to end at a miniature size: every stage runs (collection, training
by work budget, seeds, convergence curve, samplers, PSLD, fitted priors, pooling, reports)."""

import json

import pytest
from diffusion_policy_dist.benchmarks.runs import (
    model_for,
    parse_sampler,
    pool_seeds,
    steps_for_nfe,
)

from diffusion_policy_dist.cli.main import main

pytestmark = pytest.mark.e2e


def test_parse_sampler_and_steps_for_nfe():
    assert parse_sampler("ddpm-100") == {"kind": "ddpm", "steps": 100}
    assert parse_sampler("distributional-2@churn=1") == {
        "kind": "distributional", "steps": 2, "churn": 1.0,
    }  # fmt: skip
    assert steps_for_nfe("naive_vv", 7) == 3 and steps_for_nfe("euler", 7) == 7
    models = ["ddpm", "distributional", "psld_mean", "psld_distributional"]
    assert model_for({"kind": "naive_se"}, models) == "psld_mean"  # every phase-space kind
    assert model_for({"kind": "ddim"}, models) == "ddpm"
    assert model_for({"kind": "distributional"}, models) == "distributional"
    with pytest.raises(ValueError, match="kind-steps"):
        parse_sampler("ddpm")


def test_pooling_across_seeds_gives_seed_and_episode_intervals():
    rows = [
        {"model": "m", "method": "x", "nfe": 1, "success_rate": r, "successes": int(10 * r),
         "episodes": 10, "seed": s, "latency_ms_p50": 1.0}
        for s, r in enumerate([0.6, 0.8, 0.7])
    ]  # fmt: skip
    (row,) = pool_seeds(rows)
    assert row["success_rate"] == pytest.approx(0.7) and row["pooled_success"] == pytest.approx(0.7)
    lo, hi = row["success_ci95"]  # t(2) = 4.303, sd = 0.1: 0.7 +- 0.248
    assert lo == pytest.approx(0.7 - 4.303 * 0.1 / 3**0.5, abs=1e-3) and hi > 0.9
    assert row["episodes"] == 30 and row["success_by_seed"] == [0.6, 0.8, 0.7]


def test_a_miniature_bench_runs_every_stage(tmp_path, capsys):
    p = "presets.quick"
    args = [
        "bench", "task=obstacle_avoid", f"output_dir={tmp_path / 'results'}",
        f"work_dir={tmp_path / 'work'}", "workers=1", "progress=false", "jobs=2",
        f"{p}.demos=4", f"{p}.network=tiny", f"{p}.steps=8", f"{p}.batch_size=16", f"{p}.m=4",
        f"{p}.seeds=[0,1]", f"{p}.models=[ddpm,distributional,psld_mean]",
        f"{p}.samplers=[ddpm-3,distributional-1,reduced_vv-2]", f"{p}.test_episodes=2",
        f"{p}.curve_points=2", f"{p}.curve_episodes=2", f"{p}.priors=[0.5]",
        f"{p}.prior_steps=3", f"{p}.prior_nfe=[1]",
    ]  # fmt: skip
    assert main(args) == 0
    res = json.loads((tmp_path / "results" / "obstacle_avoid.json").read_text())
    assert res["header"]["seeds"] == [0, 1] and len(res["header"]["train"]) == 2
    for seed in ("0", "1"):
        for model in ("ddpm", "distributional", "psld_mean"):
            assert res["header"]["train"][seed][model]["step"] == 8
    labels = {r["label"] for r in res["summary"]}
    assert (
        "psld_mean: reduced_vv" in labels
        and "distributional: distributional (churn 0) [prior 0.5]" in labels
    )
    assert all(r["episodes"] == 4 for r in res["summary"])  # 2 seeds x 2 episodes pooled
    assert len({(c["model"], c["seed"], c["step"]) for c in res["curves"]}) == 8
    md = (tmp_path / "results" / "obstacle_avoid.md").read_text()
    assert (
        "mean over seeds" in md
        and (tmp_path / "results" / "obstacle_avoid_convergence.png").exists()
    )
    assert main(["bench", "task=obstacle_avoid", f"output_dir={tmp_path / 'results'}",
                 "report_only=true"]) == 0  # fmt: skip
    assert (tmp_path / "results" / "obstacle_avoid.md").read_text() == md


def test_a_miniature_realtime_bench(tmp_path):
    p = "presets.realtime"
    args = [
        "bench", "task=obstacle_avoid", "preset=realtime", f"output_dir={tmp_path / 'results'}",
        f"work_dir={tmp_path / 'work'}", "workers=1", "progress=false",
        f"{p}.demos=4", f"{p}.network=tiny", f"{p}.steps=6", f"{p}.batch_size=16", f"{p}.m=4",
        f"{p}.curve_points=0", f"{p}.test_episodes=4", f"{p}.realtime.delays=[0,2]",
        f"{p}.realtime.transitions=[naive,prefix]",
        f"{p}.realtime.delay_samplers=[distributional-1]",
        f"{p}.realtime.rates=[50]", f"{p}.realtime.rate_samplers=[distributional-1,ddim-2]",
        f"{p}.realtime.rate_episodes=1",
    ]  # fmt: skip
    assert main(args) == 0
    res = json.loads((tmp_path / "results" / "realtime" / "obstacle_avoid.json").read_text())
    sweep = {(r["model"], r["delay"], r["transition"]) for r in res["delay_rows"]}
    assert sweep == {
        (m, d, t) for m in ("distributional", "distributional_prefix")
        for d, t in ((0, "sync"), (2, "naive"), (2, "prefix"))
    }  # fmt: skip
    # (an untrained model's episode may end before its first chunk runs out: no request; with
    # 4 test episodes some episode outlives it)
    assert all(r["delay_steps"]["max"] in (0, r["delay"]) for r in res["delay_rows"])
    assert any(r["delay_steps"]["max"] == 2 for r in res["delay_rows"])
    rates = {(r["model"], r["sampler"]) for r in res["rate_rows"]}
    assert rates == {("distributional", "distributional-1"),
                     ("distributional_prefix", "distributional-1"), ("ddpm", "ddim-2")}  # fmt: skip
    assert all(r["rate"] == 50 and r["transition"] in ("naive", "prefix") for r in res["rate_rows"])
    md = (tmp_path / "results" / "realtime" / "obstacle_avoid.md").read_text()
    assert "Success and boundary jerk against delay" in md
    assert (tmp_path / "results" / "realtime" / "obstacle_avoid.png").exists()


def test_sigterm_to_a_benchmark_stops_its_training_with_a_checkpoint(bimodal_zarr, tmp_path):
    """A scheduler's SIGTERM reaches the benchmark's process only; the training it runs must
    stop with a checkpoint too, not live on as an orphan."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from diffusion_policy_dist.training.checkpoint import read_meta

    out = tmp_path / "run"
    script = (
        "import sys\n"
        "from diffusion_policy_dist.benchmarks.suite import train_run, TrainingStopped\n"
        f"args = ['dataset.path={bimodal_zarr}', 'network=tiny', 'training.steps=100000',\n"
        "        'training.batch_size=8', 'loss.m=2', 'training.val_every=0',\n"
        "        'training.log_every=1', 'training.progress=false', 'threads=1']\n"
        "try:\n"
        f"    train_run(args, {str(out)!r}, quiet=True)\n"
        "except TrainingStopped as e:\n"
        "    sys.exit(128 + e.signum)\n"
    )
    bench = subprocess.Popen([sys.executable, "-c", script])
    deadline = time.time() + 120
    while not (out / "metrics.jsonl").exists() and time.time() < deadline:
        time.sleep(0.2)
    assert bench.poll() is None, "the benchmark ended before its training started"
    children = subprocess.run(["pgrep", "-P", str(bench.pid)], capture_output=True, text=True)
    (child,) = map(int, children.stdout.split())
    os.kill(bench.pid, signal.SIGTERM)
    assert bench.wait(timeout=120) == 128 + signal.SIGTERM
    with pytest.raises(ProcessLookupError):
        os.kill(child, 0)  # the training ended with it
    step = read_meta(out)["step"]
    assert 0 < step < 100000


def test_demo_verdict_judges_convergence_by_validation_success():
    from diffusion_policy_dist.benchmarks.demo import verdict
    from diffusion_policy_dist.benchmarks.suite import flatten_step

    rows = [
        {"model": "distributional", "method": "distributional (churn 0)", "nfe": 1,
         "latency_ms_p50": 10.0, "success_rate": 1.0},
        {"model": "ddpm", "method": "ddpm", "nfe": 100, "latency_ms_p50": 700.0,
         "success_rate": 0.98},
    ]  # fmt: skip
    train = {"distributional": {"val_loss_still_falling": 0.15}, "ddpm": {}}
    flat = [(s, v) for s, v in ((300, 0.5), (600, 0.95), (900, 1.0), (1200, 1.0))]
    curves = [{"model": m, "step": s, "success": v} for m in ("distributional", "ddpm")
              for s, v in flat]  # fmt: skip
    said = verdict(rows, train, curves, 20)
    assert said.startswith("distributional-1 is 70x faster than DDPM-100") and "Caveat" not in said
    assert (
        "distributional: validation success flat from step 600; its validation loss still fell 15%"
        in said
        and "ddpm: validation success flat from step 600." in said
    )
    rising = [{**c, "success": c["success"] * (c["step"] / 1200) ** 3} for c in curves]
    said = verdict(rows, train, rising, 20)
    assert "70x faster" in said and "Caveat, not yet converged" in said
    # the interval of the final value decides: 20 episodes at 100% -> [0.84, 1]
    assert flatten_step([(1, 0.8), (2, 0.85), (3, 1.0)], 20) == 2
    assert flatten_step([(1, 0.8), (2, 0.85), (3, 1.0)], 200) == 3
    assert flatten_step([(5, 0.3)], 20) is None


def test_after_a_signal_the_queued_trainings_never_start(monkeypatch):
    """A signal stops the running training; the bench must stop too, not start the next run."""
    import os
    import signal
    import time

    from diffusion_policy_dist.benchmarks import suite

    started = []

    def fake_train_run(overrides, out, quiet=False):
        started.append(out)
        if len(started) == 1:  # the first run is signalled while it trains
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.5)  # the main thread's handler runs meanwhile
        return {"step": 1}

    monkeypatch.setattr(suite, "train_run", fake_train_run)
    with pytest.raises(suite.TrainingStopped):
        suite.train_many(1, [([], "a"), ([], "b"), ([], "c")])
    assert started == ["a"]
