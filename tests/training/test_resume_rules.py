"""A resumed run tells the truth: it continues to a larger step count, refuses settings it
cannot honour, logs every step once, cleans up after itself; bad settings fail at load."""

import json

import pytest
from helpers import fast_cfg

from diffusion_policy_dist.cli.main import main
from diffusion_policy_dist.training.build import train_from_config
from diffusion_policy_dist.training.checkpoint import CheckpointError, load_checkpoint


def steps_logged(run):
    return [json.loads(x)["step"] for x in open(run / "metrics.jsonl") if '"lr"' in x]


def test_a_larger_step_count_continues_to_the_new_total(bimodal_zarr, tmp_path):
    run = tmp_path / "run"
    train_from_config(fast_cfg(bimodal_zarr, run, "training.steps=20"))
    summary = train_from_config(fast_cfg(bimodal_zarr, run, "training.steps=30"))
    assert summary["step"] == 30 and load_checkpoint(run).meta["total_steps"] == 30
    logged = steps_logged(run)
    assert logged == sorted(set(logged)) and logged[-1] == 30


@pytest.mark.parametrize("change", ["training.lr=0.01", "training.batch_size=16"])
def test_settings_a_resume_cannot_honour_are_refused(bimodal_zarr, tmp_path, change):
    run = tmp_path / "run"
    train_from_config(fast_cfg(bimodal_zarr, run, "training.steps=10"))
    with pytest.raises(CheckpointError, match=rf"changed settings:\n  {change.split('=')[0]}"):
        train_from_config(fast_cfg(bimodal_zarr, run, "training.steps=20", change))


@pytest.mark.parametrize("every", [1000, 10])  # killed before its first checkpoint / after one
def test_a_killed_run_logs_each_step_once(bimodal_zarr, tmp_path, every):
    from diffusion_policy_dist.training import trainer as trainer_mod

    class Killed(Exception):
        pass

    run = tmp_path / "run"
    cfg = ("training.steps=30", f"training.checkpoint_every={every}", "training.val_every=5")
    orig_fit = trainer_mod.Trainer.fit

    def fit_then_die(self, callback=None):
        def die(tr):
            if tr.step == 25:
                raise Killed

        return orig_fit(self, callback=die)

    trainer_mod.Trainer.fit = fit_then_die
    try:
        with pytest.raises(Killed):
            train_from_config(fast_cfg(bimodal_zarr, run, *cfg))
    finally:
        trainer_mod.Trainer.fit = orig_fit
    assert steps_logged(run) == [10, 20]
    train_from_config(fast_cfg(bimodal_zarr, run, *cfg))  # starts over, or resumes at 20
    assert steps_logged(run) == [10, 20, 30]
    records = [json.loads(x) for x in open(run / "metrics.jsonl")]
    validated = [r["step"] for r in records if "val_loss" in r]
    assert validated == sorted(set(validated)) and validated[-1] == 30


def test_leftover_checkpoint_copies_are_removed_after_a_save(bimodal_zarr, tmp_path):
    ckdir = tmp_path / "run" / "checkpoints"
    for name in (".latest.tmp-deadbeef", ".latest.old-cafecafe"):
        (ckdir / name).mkdir(parents=True)
        (ckdir / name / "model.safetensors").write_bytes(b"x" * 1000)
    train_from_config(fast_cfg(bimodal_zarr, tmp_path / "run", "training.steps=5"))
    assert sorted(p.name for p in ckdir.iterdir()) == ["latest"]


@pytest.mark.parametrize(
    "override,message",
    [
        ("training.checkpoint_every=0", "training.checkpoint_every must be an integer >= 1"),
        ("training.log_every=0", "training.log_every must be an integer >= 1"),
        ("training.steps=abc", "training.steps"),
        ("training.steps=2.5", "training.steps"),
        ("training.lr=-1", "training.lr must be > 0"),
        ("device=cuda:7", "device='cuda:7'"),
    ],
)
def test_bad_settings_fail_with_a_message(bimodal_zarr, tmp_path, capsys, override, message):
    code = main(["train", f"dataset.path={bimodal_zarr}", f"output_dir={tmp_path}", override])
    assert code in (1, 2)
    assert message in capsys.readouterr().err


def test_resume_accepts_an_older_policy_record_and_a_tuned_sampler(bimodal_zarr, tmp_path):
    run = tmp_path / "run"
    train_from_config(fast_cfg(bimodal_zarr, run, "training.steps=10"))
    path = run / "checkpoints" / "latest" / "meta.json"
    meta = json.loads(path.read_text())
    del meta["policy"]["prefix_steps"]  # written before the field existed
    meta["policy"]["sampler"]["steps"] = 3  # as dpd tune would
    path.write_text(json.dumps(meta))
    assert train_from_config(fast_cfg(bimodal_zarr, run, "training.steps=20"))["step"] == 20
    with pytest.raises(CheckpointError, match="its policy differs"):
        train_from_config(fast_cfg(bimodal_zarr, run, "training.steps=30", "policy.prefix_steps=2"))


def test_noise_options_matter_to_a_distributional_model_only():
    from diffusion_policy_dist.policy.config import PolicyConfig, to_dict
    from diffusion_policy_dist.training.resume import same

    def policy(**kw):
        return to_dict(PolicyConfig(**kw))

    mean = {"kind": "mean", "loss": _mse(), "sampler": _ddpm()}
    assert same("policy", policy(**mean, noise_injection="late"), policy(**mean))
    assert same("policy", policy(**mean, noise_injection="concat"), policy(**mean))
    assert not same("policy", policy(noise_injection="concat"), policy(noise_injection="late"))
    assert not same("policy", policy(**{**mean, "prediction": "v"}), policy(**mean))


def _mse():
    from diffusion_policy_dist.diffusion.losses import MSELoss

    return MSELoss()


def _ddpm():
    from diffusion_policy_dist.diffusion.samplers.loop import sampler_config

    return sampler_config("ddpm", steps=100)
