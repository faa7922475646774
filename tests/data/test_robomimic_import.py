"""robomimic HDF5 -> zarr import: round trip, demo order, env args, and clear errors."""

import json

import numpy as np
import pytest

from diffusion_policy_dist.cli.main import main
from diffusion_policy_dist.data import DatasetError, ReplayBuffer, infer_shape_meta
from diffusion_policy_dist.data.robomimic import import_robomimic

h5py = pytest.importorskip("h5py")

ENV_ARGS = {"env_name": "Lift", "type": 1, "env_kwargs": {"control_freq": 20}}


def write_robomimic(path, lengths=(5, 7, 4), image=True, bad=None):
    """A small file in robomimic's layout; demo names out of lexical order on purpose."""
    rng = np.random.default_rng(0)
    demos = {}
    with h5py.File(path, "w") as f:
        data = f.create_group("data")
        data.attrs["env_args"] = json.dumps(ENV_ARGS)
        for i, T in zip((2, 10, 0), lengths):
            g = data.create_group(f"demo_{i}")
            act = rng.uniform(-1, 1, (T, 7)).astype(np.float64)
            eef = rng.normal(size=(T, 3))
            g.create_dataset("actions", data=act)
            obs = g.create_group("obs")
            obs.create_dataset("robot0_eef_pos", data=eef)
            if image:
                img = rng.integers(0, 256, (T, 12, 12, 3), dtype=np.uint8)
                obs.create_dataset("agentview_image", data=img)
            if bad == "shape" and i == 10:
                del obs["robot0_eef_pos"]
                obs.create_dataset("robot0_eef_pos", data=rng.normal(size=(T, 4)))
            if bad == "nan" and i == 10:
                act[1, 2] = np.nan
                del g["actions"]
                g.create_dataset("actions", data=act)
            demos[i] = (act, eef)
    return demos


def test_import_round_trip_in_numeric_demo_order(tmp_path):
    demos = write_robomimic(tmp_path / "lift.hdf5")
    summary = import_robomimic(tmp_path / "lift.hdf5", tmp_path / "lift.zarr", progress=False)
    assert summary["episodes"] == 3 and summary["steps"] == 16
    buf = ReplayBuffer.open(tmp_path / "lift.zarr")
    assert buf.keys() == ["action", "agentview_image", "robot0_eef_pos"]
    for ep, i in enumerate((0, 2, 10)):  # numeric order, not demo_0, demo_10, demo_2
        got = buf.get_episode(ep)
        np.testing.assert_allclose(got["action"], demos[i][0].astype(np.float32))
        np.testing.assert_allclose(got["robot0_eef_pos"], demos[i][1].astype(np.float32))
    assert buf.dtype("agentview_image") == np.uint8
    assert buf.attrs["robomimic_env_args"] == ENV_ARGS
    assert [r["demo"] for r in buf.attrs["episode_info"]] == ["demo_0", "demo_2", "demo_10"]
    sm = infer_shape_meta(buf)
    assert sm["obs"]["agentview_image"] == {"shape": [3, 12, 12], "type": "rgb"}
    assert sm["action"]["shape"] == [7]


def test_import_picks_obs_keys_and_the_cli_runs(tmp_path):
    write_robomimic(tmp_path / "lift.hdf5")
    out = tmp_path / "low.zarr"
    rc = main(
        [
            "import-robomimic",
            f"input={tmp_path / 'lift.hdf5'}",
            f"output={out}",
            "obs_keys=[robot0_eef_pos]",
            "progress=false",
        ]
    )
    assert rc == 0
    assert ReplayBuffer.open(out).keys() == ["action", "robot0_eef_pos"]


@pytest.mark.parametrize(
    "bad, match",
    [
        ("shape", r"lift\.hdf5: data/demo_10/obs/robot0_eef_pos has shape \(7, 4\)"),
        ("nan", r"lift\.hdf5: data/demo_10: .*'action' has NaN"),
    ],
)
def test_bad_files_get_clear_errors_and_leave_the_old_dataset(tmp_path, bad, match):
    write_robomimic(tmp_path / "good.hdf5")
    import_robomimic(tmp_path / "good.hdf5", tmp_path / "out.zarr", progress=False)
    write_robomimic(tmp_path / "lift.hdf5", bad=bad)
    with pytest.raises(DatasetError, match=match):
        import_robomimic(tmp_path / "lift.hdf5", tmp_path / "out.zarr", overwrite=True)
    assert ReplayBuffer.open(tmp_path / "out.zarr").n_episodes == 3  # untouched
    with pytest.raises(FileExistsError):
        import_robomimic(tmp_path / "good.hdf5", tmp_path / "out.zarr", progress=False)


def test_missing_groups_and_keys_are_named(tmp_path):
    with h5py.File(tmp_path / "empty.hdf5", "w") as f:
        f.create_group("mask")
    with pytest.raises(DatasetError, match=r"empty\.hdf5: no 'data' group"):
        import_robomimic(tmp_path / "empty.hdf5", tmp_path / "x.zarr")
    write_robomimic(tmp_path / "lift.hdf5")
    with pytest.raises(DatasetError, match=r"data/demo_0/obs has no key 'object'"):
        import_robomimic(tmp_path / "lift.hdf5", tmp_path / "x.zarr", obs_keys=["object"])
    with pytest.raises(FileNotFoundError, match=r"nope\.hdf5"):
        import_robomimic(tmp_path / "nope.hdf5", tmp_path / "x.zarr")
