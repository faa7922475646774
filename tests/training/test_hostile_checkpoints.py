"""Checkpoints and datasets from someone else: loading never runs code they name, and damage or
edits give an error that names the file and the field."""

import json
import shutil

import pytest
from diffusion_policy_dist.envs import UntrustedEnvError, make_env
from helpers import fast_cfg

from diffusion_policy_dist.cli.main import main
from diffusion_policy_dist.training.build import load_policy, train_from_config
from diffusion_policy_dist.training.checkpoint import CheckpointError

EVIL = {"kind": "python", "factory": "subprocess:call", "kwargs": {"args": ["touch", "PWNED"]}}


@pytest.fixture(scope="module")
def checkpoint(bimodal_zarr, tmp_path_factory):
    run = tmp_path_factory.mktemp("ck") / "run"
    train_from_config(fast_cfg(bimodal_zarr, run, "training.steps=3"))
    return run / "checkpoints" / "latest"


@pytest.fixture
def copy(checkpoint, tmp_path):
    dst = tmp_path / "ck"
    shutil.copytree(checkpoint, dst)
    return dst


def edit_json(path, fn):
    data = json.loads(path.read_text())
    fn(data)
    path.write_text(json.dumps(data))


@pytest.mark.parametrize(
    "spec,hint",
    [
        (EVIL, "env.factory=subprocess:call"),
        ({**EVIL, "type": "python", "kind": None}, "env.factory=subprocess:call"),  # 0.1 spelling
        ({"kind": "gym", "env_id": "X-v0", "module": "evil_module"}, "env.module=evil_module"),
    ],
)
def test_a_checkpoint_env_never_runs_code(copy, tmp_path, monkeypatch, capsys, spec, hint):
    monkeypatch.chdir(tmp_path)  # where the crafted command would create its file
    spec = {k: v for k, v in spec.items() if v is not None}
    edit_json(copy / "meta.json", lambda m: m.update(env=spec))
    code = main(["eval", f"checkpoint={copy}", "eval.episodes=1", "eval.progress=false"])
    err = capsys.readouterr().err
    assert code == 1 and hint in err and "never makes the package" in err, err
    assert not (tmp_path / "PWNED").exists()
    with pytest.raises(UntrustedEnvError):
        make_env(spec)


def test_a_truncated_weights_file_is_named(copy):
    data = (copy / "model.safetensors").read_bytes()
    (copy / "model.safetensors").write_bytes(data[: len(data) // 3])
    with pytest.raises(CheckpointError, match=r"ck/model\.safetensors is not a readable"):
        load_policy(copy)
    (copy / "model.safetensors").write_text("hello, not tensors")
    with pytest.raises(CheckpointError, match=r"ck/model\.safetensors is not a readable"):
        load_policy(copy)


def test_invalid_meta_json_is_named(copy):
    (copy / "meta.json").write_text((copy / "meta.json").read_text() + "\n}")
    with pytest.raises(CheckpointError, match=r"ck/meta\.json is not valid JSON"):
        load_policy(copy)


def test_an_edited_config_yaml_is_an_error_not_ignored(copy):
    text = (copy / "config.yaml").read_text()
    (copy / "config.yaml").write_text(text.replace("horizon: 16", "horizon: 32"))
    with pytest.raises(CheckpointError, match=r"config\.yaml and meta\.json disagree on window"):
        load_policy(copy)


def test_an_edited_observation_shape_is_named(copy):
    edit_json(copy / "meta.json", lambda m: m["shape_meta"]["obs"]["state"].update(shape=[5]))
    with pytest.raises(CheckpointError, match=r"does not fit the policy.*size mismatch"):
        load_policy(copy)


def test_an_unknown_implementation_name_is_named(copy):
    edit_json(copy / "meta.json", lambda m: m["policy"]["loss"].update(kind="os.system"))
    with pytest.raises(CheckpointError, match=r"policy\.loss\.kind must be one of"):
        load_policy(copy)


def test_a_future_format_is_refused(copy):
    edit_json(copy / "meta.json", lambda m: m.update(version=99))
    with pytest.raises(CheckpointError, match="newer than this package supports"):
        load_policy(copy)
