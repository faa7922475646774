"""Observation keys: whole keys or slices of a key, the same at training and evaluation time;
and Diffusion Policy's zipped datasets read everywhere."""

import json
import zipfile

import numpy as np
import pytest
import torch

from diffusion_policy_dist.cli.main import main
from diffusion_policy_dist.data import ReplayBuffer, infer_shape_meta, make_datasets
from diffusion_policy_dist.data.dataset import obs_entries, parse_obs_key
from diffusion_policy_dist.queues import select_obs
from diffusion_policy_dist.window import Window


@pytest.mark.parametrize(
    "entry,want",
    [
        ("state", ("state", "state", None)),
        ("state[:2]", ("state", "state", (None, 2))),
        ("agent_pos=state[0:2]", ("agent_pos", "state", (0, 2))),
        ("tail=state[-3:]", ("tail", "state", (-3, None))),
    ],
)
def test_parse_obs_key(entry, want):
    assert parse_obs_key(entry) == want


def test_a_bad_entry_says_what_is_expected():
    with pytest.raises(ValueError, match="expected 'key', 'key\\[a:b\\]' or 'name=key\\[a:b\\]'"):
        parse_obs_key("state[1]")


@pytest.fixture
def pusht_like(tmp_path):
    """A Push-T-shaped dataset: state = [agent x, agent y, block x, block y, block angle]."""
    path = tmp_path / "pt.zarr"
    with ReplayBuffer.create(path) as buf:
        for e in range(3):
            state = np.arange(40, dtype=np.float32).reshape(8, 5) + 100 * e
            buf.add_episode({"state": state, "action": state[:, :2] + 0.5})
    return path


def test_a_slice_is_taken_alike_from_data_and_from_an_env(pusht_like):
    buf = ReplayBuffer.open(pusht_like)
    sm = infer_shape_meta(buf, ["agent_pos=state[0:2]"])
    assert sm["obs"] == {
        "agent_pos": {"shape": [2], "type": "low_dim", "source": "state", "slice": [0, 2]}
    }
    assert obs_entries(sm) == ["agent_pos=state[0:2]"]
    train, _ = make_datasets(buf, sm, Window(8, 2, 4), val_ratio=0.0)
    batch = train[np.arange(len(train))]
    full = buf.load(["state"])["state"]
    assert batch["obs"]["agent_pos"].shape[-1] == 2
    assert set(batch["obs"]["agent_pos"].flatten().tolist()) <= set(full[:, :2].flatten().tolist())
    env_obs = {"state": torch.arange(10.0).view(2, 5)}  # what an env gives: the whole state
    assert select_obs(env_obs, sm)["agent_pos"].tolist() == [[0.0, 1.0], [5.0, 6.0]]
    with pytest.raises(KeyError, match="'agent_pos' \\(from 'state'\\)"):
        select_obs({"other": env_obs["state"]}, sm)


def test_dpd_info_reads_a_zipped_dataset(pusht_like, tmp_path, capsys):
    zipped = tmp_path / "pt.zarr.zip"
    with zipfile.ZipFile(zipped, "w") as z:
        for f in pusht_like.rglob("*"):
            if f.is_file():
                z.write(f, f.relative_to(pusht_like).as_posix())
    assert main(["info", f"path={zipped}"]) == 0
    out = capsys.readouterr().out
    info = json.loads(out.split("\n", 1)[1])
    assert info["shape_meta"]["obs"]["state"]["shape"] == [5] and info["problems"] == []
