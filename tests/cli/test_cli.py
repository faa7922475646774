"""The dpd command line and the README's promises."""

import re
import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from diffusion_policy_dist.cli.compose import compose
from diffusion_policy_dist.cli.main import COMMANDS, main
from diffusion_policy_dist.diffusion.losses import LOSSES
from diffusion_policy_dist.diffusion.processes import PROCESS_CONFIGS
from diffusion_policy_dist.diffusion.samplers import SAMPLERS

ROOT = Path(__file__).resolve().parents[2]
V1 = ROOT / "tests" / "fixtures" / "v1" / "distributional"  # a checkpoint of version 0.1


def run(*args):
    return subprocess.run(
        [sys.executable, "-m", "diffusion_policy_dist.cli.main", *args],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_help_lists_every_command(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for name in COMMANDS:
        assert name in out


def test_train_composes_groups_and_rejects_typos():
    cfg = compose("train", ["dataset.path=x.zarr", "policy=ddpm", "sampler=ddim", "network=dp"])
    assert cfg.policy.kind == "mean" and cfg.loss.kind == "mse"
    assert cfg.sampler.kind == "ddim" and cfg.network.down_dims == (256, 512, 1024)
    cfg = compose("train", ["dataset.path=x.zarr"])
    assert cfg.policy.kind == "distributional" and cfg.sampler.kind == "distributional"
    assert cfg.loss.kind == "energy" and cfg.training.batch_size == 256 and cfg.loss.m == 4
    assert cfg.policy.noise_injection == "late"
    r = run("train", "dataset.path=x.zarr", "training.stpes=3")
    assert r.returncode == 2 and "training.stpes" in r.stderr


def test_clean_error_without_traceback(bimodal_zarr, tmp_path):
    r = run("train", "dataset.path=/nonexistent/data.zarr", "training.steps=1")
    assert r.returncode == 1
    assert "dataset /nonexistent/data.zarr does not exist" in r.stderr
    assert "Traceback" not in r.stderr
    r = run(
        "train",
        f"dataset.path={bimodal_zarr}",
        "window.horizon=12",
        "training.steps=1",
        f"output_dir={tmp_path / 'run'}",
    )
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert "horizon" in r.stderr and "divisible" in r.stderr, r.stderr


def test_cfg_flag_prints_the_composed_config():
    r = run("eval", "checkpoint=x", "sampler=conjugate", "sampler.lam=0.2", "--cfg")
    assert r.returncode == 0 and "kind: conjugate" in r.stdout and "lam: 0.2" in r.stdout


def readme_block(title_words):
    text = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```bash\n(.*?)\n```", text, flags=re.S)
    return [b.strip() for b in blocks if all(w in b for w in title_words)]


def test_readme_commands_exist_in_ci_and_cli():
    test_cmd = readme_block(["pytest"])
    demo_cmd = readme_block(["dpd demo"])
    assert len(test_cmd) >= 1 and len(demo_cmd) >= 1
    ci = (ROOT / ".ci" / "run").read_text()
    assert test_cmd[0] in ci.splitlines(), "the README's test command must be .ci/run's command"
    for block in readme_block(["dpd "]):
        for m in re.finditer(r"\bdpd ([a-z-]+)", block):
            assert m.group(1) in COMMANDS, f"README uses 'dpd {m.group(1)}', which does not exist"


@pytest.mark.parametrize("group", ["policy", "network"])
def test_every_preset_file_composes(group):
    for option in sorted((ROOT / "configs" / group).glob("*.yaml")):
        cfg = compose("train", ["dataset.path=x.zarr", f"{group}={option.stem}"])
        if group == "policy":
            kinds = {"ddpm": "mean", "psld_mean": "mean", "psld_distributional": "distributional"}
            assert cfg.policy.kind == kinds.get(option.stem, option.stem)
        else:  # the chosen file's settings, not the default's, are what got composed
            want = OmegaConf.to_container(OmegaConf.load(option)) or {}
            got = {k: getattr(cfg.network, k) for k in want}
            assert {k: list(v) if isinstance(v, tuple) else v for k, v in got.items()} == want


@pytest.mark.parametrize(
    "group,registry", [("sampler", SAMPLERS), ("loss", LOSSES), ("schedule", PROCESS_CONFIGS)]
)
def test_every_registered_choice_is_a_config_option(group, registry):
    for kind, cls in registry.items():
        option = {"loss": {"kernel": "kernel_rbf"}}.get(group, {}).get(kind, kind)
        psld_only = "vp" not in getattr(cls, "families", ("vp",))
        extra = ["policy=psld_mean"] if psld_only or kind == "psld" else []
        extra += ["policy=ddpm"] if (group, kind) == ("loss", "mse") else []
        cfg = compose("train", ["dataset.path=x.zarr", *extra, f"{group}={option}"])
        assert isinstance(getattr(cfg, group), cls)


def test_options_a_choice_does_not_take_are_refused():
    r = run("train", "dataset.path=x.zarr", "sampler=ddim", "sampler.churn=0.5")
    assert r.returncode == 2 and "churn" in r.stderr and "DDIMSampler" in r.stderr
    for steps in (1, 4):  # refused for any step count, not only when a step uses it
        r = run("train", "dataset.path=x.zarr", f"sampler.steps={steps}", "sampler.churn=2")
        assert r.returncode == 2 and "sampler.churn must be in [0, 1]" in r.stderr
        r = run("eval", f"checkpoint={V1}", f"sampler.steps={steps}", "sampler.churn=2")
        assert r.returncode == 2 and "sampler.churn must be in [0, 1]" in r.stderr
    r = run("train", "dataset.path=x.zarr", "policy=ddpm", "loss.m=8")
    assert r.returncode == 2 and "loss.m" in r.stderr


def test_eval_starts_from_the_checkpoints_sampler():
    cfg = compose("eval", [f"checkpoint={V1}", "sampler.steps=3"])
    assert cfg.sampler.kind == "distributional" and cfg.sampler.steps == 3
    assert cfg.sampler.churn == 0.0  # the checkpoint's value, kept
    cfg = compose("eval", [f"checkpoint={V1}", "sampler=ddim"])
    assert cfg.sampler.kind == "ddim" and cfg.sampler.steps == 10  # DDIM's own defaults
    r = run("eval", "checkpoint=/nonexistent", "sampler.steps=2")
    assert r.returncode == 2 and "pick a sampler with sampler=<kind>" in r.stderr
