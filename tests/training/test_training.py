"""The Trainer end to end on synthetic data: every loss, checkpoints, exact resume, and the
core claim in miniature."""

import json
import os

import numpy as np
import pytest
import torch
from helpers import fast_cfg

from diffusion_policy_dist.training.build import policy_from_checkpoint, train_from_config
from diffusion_policy_dist.training.checkpoint import load_checkpoint, save_checkpoint


@pytest.mark.parametrize(
    "policy,loss",
    [
        ("ddpm", "mse"),
        ("distributional", "energy"),
        ("distributional", "kernel_rbf"),
        ("distributional", "kernel_imq"),
    ],
)
def test_200_steps_each_loss_reduces_loss(bimodal_zarr, tmp_path, policy, loss):
    cfg = fast_cfg(
        bimodal_zarr,
        tmp_path / "run",
        f"policy={policy}",
        f"loss={loss}",
        "training.steps=200",
        "training.val_every=100",
    )
    summary = train_from_config(cfg)
    assert summary["step"] == 200
    lines = [json.loads(x) for x in open(tmp_path / "run" / "metrics.jsonl")]
    losses = [r["loss"] for r in lines if "loss" in r]
    assert np.isfinite(losses).all()
    assert np.mean(losses[-3:]) < np.mean(losses[:3])
    assert any("val_loss" in r for r in lines)
    ckpt = tmp_path / "run" / "checkpoints" / "latest"
    assert {
        "model.safetensors",
        "config.yaml",
        "meta.json",
        "normalizer.json",
        "training_state",
    } <= set(os.listdir(ckpt))


def test_checkpoint_reload_gives_identical_actions(bimodal_zarr, tmp_path, monkeypatch):
    from diffusion_policy_dist.training import trainer as trainer_mod

    trained = []
    orig_fit = trainer_mod.Trainer.fit

    def fit_and_keep(self, callback=None):
        trained.append(self)
        return orig_fit(self, callback)

    monkeypatch.setattr(trainer_mod.Trainer, "fit", fit_and_keep)
    cfg = fast_cfg(bimodal_zarr, tmp_path / "run", "training.steps=20")
    train_from_config(cfg)
    live = trained[0].ema.module.eval()  # the in-memory EMA policy at the end of training
    pol_a, ck = policy_from_checkpoint(tmp_path / "run")
    pol_b, _ = policy_from_checkpoint(tmp_path / "run" / "checkpoints" / "latest")
    obs = {"state": torch.randn(4, 2, 3)}
    ref = live.predict_action(obs, generator=torch.Generator().manual_seed(3))["action"]
    a = pol_a.predict_action(obs, generator=torch.Generator().manual_seed(3))["action"]
    b = pol_b.predict_action(obs, generator=torch.Generator().manual_seed(3))["action"]
    assert torch.equal(a, ref) and torch.equal(b, ref)
    raw, _ = policy_from_checkpoint(tmp_path / "run", use_ema=False)
    r = raw.predict_action(obs, generator=torch.Generator().manual_seed(3))["action"]
    assert not torch.equal(r, ref)  # the EMA weights really are a different set
    meta = ck.meta
    assert meta["shape_meta"]["obs"]["state"]["shape"] == [3]
    assert meta["step"] == 20 and meta["policy"]["kind"] == "distributional"
    assert ck.config["dataset"]["path"] == bimodal_zarr
    # no pickle anywhere in the checkpoint
    for _, _, files in os.walk(ck.path):
        for f in files:
            assert not f.endswith((".pt", ".pth", ".pkl", ".ckpt"))


def test_interrupted_run_resumes_to_identical_parameters(bimodal_zarr, tmp_path):
    common = ("training.steps=60", "training.checkpoint_every=20", "training.val_every=20")
    train_from_config(fast_cfg(bimodal_zarr, tmp_path / "full", *common))

    from diffusion_policy_dist.training import trainer as trainer_mod

    class Killed(Exception):
        pass

    orig_fit = trainer_mod.Trainer.fit

    def fit_then_die(self, callback=None):
        def die(tr):
            if tr.step == 33:  # past the step-20 checkpoint, before the next one
                raise Killed

        return orig_fit(self, callback=die)

    trainer_mod.Trainer.fit = fit_then_die
    try:
        with pytest.raises(Killed):
            train_from_config(fast_cfg(bimodal_zarr, tmp_path / "cut", *common))
    finally:
        trainer_mod.Trainer.fit = orig_fit
    assert load_checkpoint(tmp_path / "cut").meta["step"] == 20
    train_from_config(fast_cfg(bimodal_zarr, tmp_path / "cut", *common))  # resume=auto
    a = load_checkpoint(tmp_path / "full")
    b = load_checkpoint(tmp_path / "cut")
    assert b.meta["step"] == 60
    for k in a.model_state:
        assert torch.equal(a.model_state[k], b.model_state[k]), k
    for k in a.ema_state:
        assert torch.equal(a.ema_state[k], b.ema_state[k]), k
    steps = [json.loads(x)["step"] for x in open(tmp_path / "cut" / "metrics.jsonl")]
    assert steps == sorted(steps)  # metrics after the checkpoint were not logged twice


@pytest.fixture
def send_at_step(monkeypatch):
    """``send_at_step(signum, step)``: the next training runs send itself ``signum`` when they
    reach ``step`` (as a user pressing Ctrl-C or a scheduler's SIGTERM would)."""
    import signal

    from diffusion_policy_dist.training import trainer as trainer_mod

    orig_fit = trainer_mod.Trainer.fit
    old_int = signal.signal(signal.SIGINT, signal.default_int_handler)  # whatever pytest inherited

    def arm(signum, step):
        def fit(self, callback=None):
            def press(tr):
                if tr.step == step:
                    os.kill(os.getpid(), signum)

            return orig_fit(self, callback=press)

        monkeypatch.setattr(trainer_mod.Trainer, "fit", fit)

    yield arm
    signal.signal(signal.SIGINT, old_int)


@pytest.mark.parametrize("signame", ["SIGINT", "SIGTERM"])
def test_a_signal_saves_a_checkpoint_and_the_resumed_run_matches(
    bimodal_zarr, tmp_path, send_at_step, monkeypatch, signame
):
    import signal

    common = ("training.steps=40", "training.checkpoint_every=20", "training.val_every=0")
    train_from_config(fast_cfg(bimodal_zarr, tmp_path / "full", *common))
    signum = getattr(signal, signame)
    before = signal.getsignal(signum)
    send_at_step(signum, 27)
    summary = train_from_config(fast_cfg(bimodal_zarr, tmp_path / "cut", *common))
    assert summary["stopped_early"] and summary["step"] == 27 and summary["stop_signal"] == signum
    assert load_checkpoint(tmp_path / "cut").meta["step"] == 27  # not the step-20 one
    assert signal.getsignal(signum) is before  # handler restored
    monkeypatch.undo()
    train_from_config(fast_cfg(bimodal_zarr, tmp_path / "cut", *common))
    a, b = load_checkpoint(tmp_path / "full"), load_checkpoint(tmp_path / "cut")
    for k in a.model_state:
        assert torch.equal(a.model_state[k], b.model_state[k]), k


def test_dpd_train_stopped_by_a_signal_exits_nonzero(bimodal_zarr, tmp_path, send_at_step):
    import signal

    from diffusion_policy_dist.cli.main import main

    args = ["train", f"dataset.path={bimodal_zarr}", f"output_dir={tmp_path / 'run'}"]
    args += ["network=tiny", "training.steps=30", "training.batch_size=16", "loss.m=2"]
    args += ["training.progress=false", "training.val_every=0"]
    send_at_step(signal.SIGTERM, 5)
    assert main(args) == 143
    assert load_checkpoint(tmp_path / "run").meta["step"] == 5
    send_at_step(signal.SIGINT, 9)
    assert main(args) == 130


def test_resume_refuses_a_different_shape_meta(bimodal_zarr, tmp_path):
    from diffusion_policy_dist.data import ReplayBuffer

    train_from_config(fast_cfg(bimodal_zarr, tmp_path / "run", "training.steps=5"))
    other = ReplayBuffer.create(tmp_path / "other.zarr")
    other.add_episode(
        {"state": np.zeros((20, 4), np.float32), "action": np.zeros((20, 2), np.float32)}
    )
    other.close()
    with pytest.raises(ValueError, match=r"shape_meta differs(.|\n)*'shape': \[4\]"):
        train_from_config(fast_cfg(tmp_path / "other.zarr", tmp_path / "run", "training.steps=10"))


def test_checkpoint_for_another_shape_meta_is_refused(bimodal_zarr, tmp_path):
    train_from_config(fast_cfg(bimodal_zarr, tmp_path / "run", "training.steps=5"))
    other = {"obs": {"state": {"shape": [4], "type": "low_dim"}}, "action": {"shape": [2]}}
    with pytest.raises(
        ValueError, match=r"obs.state: expected \(\(3,\), 'low_dim'\), got \(\(4,\)"
    ):
        policy_from_checkpoint(tmp_path / "run", expected_shape_meta=other)


def test_crash_while_replacing_a_checkpoint_leaves_one_loadable(tmp_path, monkeypatch):
    state = {"w": torch.ones(3)}
    save_checkpoint(tmp_path / "ck", model_state=state, meta={"step": 1})
    real_replace = os.replace
    calls = []

    def flaky(src, dst):
        calls.append((src, dst))
        if len(calls) == 2:  # old moved aside, new not yet in place
            raise OSError("power cut")
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", flaky)
    with pytest.raises(OSError):
        save_checkpoint(tmp_path / "ck", model_state={"w": torch.zeros(3)}, meta={"step": 2})
    monkeypatch.setattr(os, "replace", real_replace)
    with pytest.warns(UserWarning, match="interrupted save"):
        ck = load_checkpoint(tmp_path / "ck")
    assert ck.meta["step"] == 1 and torch.equal(ck.model_state["w"], torch.ones(3))


def test_core_claim_in_miniature(bimodal_zarr, tmp_path):
    """1-step samples of the distributional model cover both modes; the MSE model with
    1-step DDIM averages them (|a| << c).

    The MSE model predicts x0 here, so 1-step DDIM returns its estimate of E[a | o]. (With
    DP's eps-prediction, 1-step DDIM is worse than an average: x0 = (x_t - sigma eps)/alpha
    amplifies the error by 1/alpha ~ 600 at t = 1 and the result is clipped noise.)"""
    c = 0.8
    obs_values = torch.tensor(
        np.random.default_rng(0).uniform(-1, 1, size=(6, 3)), dtype=torch.float32
    )
    obs = {"state": obs_values.repeat_interleave(100, 0)[:, None].repeat(1, 2, 1)}
    results = {}
    for policy in ("distributional", "ddpm"):
        extra = ["policy.prediction=sample"] if policy == "ddpm" else []
        extra.append("dataset.val_ratio=0")  # every o keeps exactly balanced modes
        cfg = fast_cfg(
            bimodal_zarr,
            tmp_path / policy,
            f"policy={policy}",
            "training.steps=300",
            "training.batch_size=64",
            *extra,
            m=8,
        )
        train_from_config(cfg)
        pol, _ = policy_from_checkpoint(tmp_path / policy)
        sampler = (
            {"kind": "distributional", "steps": 1, "churn": 0.0}
            if policy == "distributional"
            else {"kind": "ddim", "steps": 1, "eta": 0.0}
        )
        a = pol.predict_action(obs, sampler=sampler, generator=torch.Generator().manual_seed(0))[
            "action"
        ]
        results[policy] = a.mean(dim=(1, 2))  # one number per chunk
    dist = results["distributional"]
    frac_pos = (dist > 0).float().mean().item()
    assert 0.3 <= frac_pos <= 0.7, frac_pos
    on_mode = (dist.abs() > 0.75 * c).float().mean().item()
    assert on_mode > 0.8, on_mode  # samples sit on the modes, not between them
    mse = results["ddpm"].view(6, 100)
    assert mse.mean(1).abs().max().item() < 0.15 * c, mse.mean(1)  # E[a | o] ~ 0 for every o
    assert (mse.abs() > 0.75 * c).float().mean().item() < 0.1  # and it rarely lands on a mode


def test_wall_clock_budget_ends_on_time_with_the_lr_schedule_finished(bimodal_zarr, tmp_path):
    """With an injected clock (every step takes 0.05 s of it, then 0.1 s from step 60 on: the
    machine slowed down), the run ends on the budget and the LR schedule ends with it; nothing
    here depends on how busy the machine is."""
    from diffusion_policy_dist.training.build import build_policy_and_data
    from diffusion_policy_dist.training.trainer import Trainer

    run = fast_cfg(bimodal_zarr, tmp_path / "run", "training.steps=1000000", "training.log_every=5")
    run.training.time_budget_s = budget = 10.0
    policy, train_set, _, _, _ = build_policy_and_data(run)

    def clock():  # the time after the steps done so far (0.05 s each, then 0.1 s from step 60)
        n = trainer.step
        return 0.05 * min(n, 60) + 0.1 * max(n - 60, 0)

    trainer = Trainer(policy, train_set, run.training, tmp_path / "run", clock=clock)
    summary = trainer.fit()
    # 60 fast steps take 3 s; the other 7 s of budget hold 70 slow ones
    assert summary["step"] == trainer.total_steps and 129 <= summary["step"] <= 130
    assert budget - 0.1 - 1e-9 <= summary["train_wallclock_s"] <= budget + 1e-9
    lrs = [json.loads(x)["lr"] for x in open(tmp_path / "run" / "metrics.jsonl") if '"lr"' in x]
    assert lrs[-1] < 0.1 * max(lrs)  # the cosine schedule was refitted and ran to its end
