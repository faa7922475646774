"""ReplayBuffer, SequenceSampler, Normalizer and the dataset's bad-input errors."""

import json
import warnings

import numpy as np
import pytest
import torch
import zarr

from diffusion_policy_dist.data import (
    DatasetError,
    Normalizer,
    ReplayBuffer,
    SequenceDataset,
    SequenceSampler,
    atomic_buffer,
    infer_shape_meta,
    split_episodes,
)
from diffusion_policy_dist.window import Window


def episode(T, seed, img=False):
    rng = np.random.default_rng(seed)
    ep = {
        "state": rng.standard_normal((T, 4)).astype(np.float32),
        "action": rng.standard_normal((T, 2)).astype(np.float32),
    }
    if img:
        ep["image"] = rng.integers(0, 255, (T, 8, 8, 3), dtype=np.uint8)
    return ep


def test_replay_buffer_round_trip(tmp_path):
    path = tmp_path / "rb.zarr"
    buf = ReplayBuffer.create(path, attrs={"env": {"id": "x"}})
    eps = [episode(T, i, img=True) for i, T in enumerate([5, 9, 3])]
    for i, ep in enumerate(eps):
        assert buf.add_episode(ep, info={"seed": i}) == i
    rb = ReplayBuffer.open(path)
    assert rb.n_episodes == 3 and rb.n_steps == 17
    assert rb.episode_ends.tolist() == [5, 14, 17]
    assert rb.keys() == ["action", "image", "state"]
    for i, ep in enumerate(eps):
        got = rb.get_episode(i)
        for k in ep:
            assert np.array_equal(got[k], ep[k]) and got[k].dtype == ep[k].dtype
    assert rb.attrs["env"] == {"id": "x"}
    assert [r["seed"] for r in rb.episode_info] == [0, 1, 2]
    # images: uint8, one frame per chunk, compressed
    meta = json.loads((path / "data" / "image" / ".zarray").read_text())
    assert meta["chunks"][0] == 1 and meta["compressor"] is not None
    assert infer_shape_meta(rb)["obs"]["image"] == {"shape": [3, 8, 8], "type": "rgb"}


def test_reads_diffusion_policy_zarr_v2_layout(tmp_path):
    """A store written with plain zarr v2 calls the way DP's ReplayBuffer lays it out."""
    path = tmp_path / "pusht_like.zarr"
    root = zarr.open_group(str(path), mode="w", zarr_format=2)
    data, meta = root.create_group("data"), root.create_group("meta")
    T = 30
    data.create_array("img", shape=(T, 6, 6, 3), chunks=(10, 6, 6, 3), dtype="float32")[:] = 1.0
    data.create_array("state", shape=(T, 5), chunks=(T, 5), dtype="float32")[:] = np.arange(
        T * 5
    ).reshape(T, 5)
    data.create_array("action", shape=(T, 2), chunks=(T, 2), dtype="float32")[:] = 0.5
    meta.create_array("episode_ends", shape=(2,), dtype="int64")[:] = [12, 30]
    rb = ReplayBuffer.open(path)
    assert rb.n_episodes == 2 and not rb.is_ours
    assert np.array_equal(rb.get_episode(1)["state"][0], np.arange(60, 65))
    sm = infer_shape_meta(rb, obs_keys=["state"])
    assert sm == {"obs": {"state": {"shape": [5], "type": "low_dim"}}, "action": {"shape": [2]}}
    # DP's 6x6 toy "img" is too small to be a camera; real float32 frames are cameras
    assert infer_shape_meta(rb)["obs"]["img"]["type"] == "low_dim"


@pytest.mark.parametrize("scale", [255.0, 1.0])
def test_float_camera_frames_like_dp_push_t_are_served_as_uint8(tmp_path, scale):
    path = tmp_path / "pusht_img.zarr"
    root = zarr.open_group(str(path), mode="w", zarr_format=2)
    data, meta = root.create_group("data"), root.create_group("meta")
    T = 12
    frames = np.random.default_rng(0).integers(0, 256, (T, 24, 24, 3)).astype(np.float32)
    data.create_array("img", shape=frames.shape, chunks=(1, 24, 24, 3), dtype="float32")[:] = (
        frames * (scale / 255.0)
    )
    data.create_array("action", shape=(T, 2), dtype="float32")[:] = 0.5
    meta.create_array("episode_ends", shape=(1,), dtype="int64")[:] = [T]
    rb = ReplayBuffer.open(path)
    sm = infer_shape_meta(rb)
    assert sm["obs"] == {"img": {"shape": [3, 24, 24], "type": "rgb"}}
    ds = SequenceDataset(rb, sm, Window(horizon=4, n_obs_steps=2, n_action_steps=2))
    item = ds[5]
    assert item["obs"]["img"].dtype == torch.uint8 and item["obs"]["img"].shape == (2, 3, 24, 24)
    want = np.moveaxis(frames[4:6], -1, 1).astype(np.uint8)  # window 5 observes steps 4, 5
    np.testing.assert_array_equal(item["obs"]["img"].numpy(), want)


def test_reads_zarr_v3(tmp_path):
    path = tmp_path / "v3.zarr"
    buf = ReplayBuffer.create(path, zarr_format=3)
    buf.add_episode(episode(4, 0))
    assert zarr.open_group(str(path)).metadata.zarr_format == 3
    assert ReplayBuffer.open(path).n_steps == 4


def test_interrupted_append_is_discarded_and_repaired(tmp_path):
    path = tmp_path / "rb.zarr"
    with ReplayBuffer.create(path) as buf:
        buf.add_episode(episode(5, 0))
    # simulate a crash after the data arrays grew but before episode_ends was committed
    root = zarr.open_group(str(path), mode="a")
    root["data/state"].append(np.ones((7, 4), np.float32))
    assert ReplayBuffer.open(path).n_steps == 5  # readers ignore the tail
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        rb = ReplayBuffer.open(path, writable=True)
    assert any("interrupted or damaged append" in str(x.message) for x in w)
    assert root["data/state"].shape[0] == 5
    rb.add_episode(episode(3, 1))
    rb.close()
    assert ReplayBuffer.open(path).episode_ends.tolist() == [5, 8]
    # a crash between resizing episode_ends and writing its value leaves a fill value (0)
    root["meta/episode_ends"].resize((3,))
    assert ReplayBuffer.open(path).n_episodes == 2


def test_first_append_killed_after_creating_some_arrays_can_start_again(tmp_path):
    path = tmp_path / "rb.zarr"
    ReplayBuffer.create(path).close()
    # killed during the very first add_episode: one data array exists, nothing was committed
    root = zarr.open_group(str(path), mode="a")
    root["data"].create_array("state", shape=(0, 4), dtype="float32")
    root["data/state"].append(np.ones((5, 4), np.float32))
    rb = ReplayBuffer.open(path, writable=True)
    assert rb.n_episodes == 0
    rb.add_episode(episode(6, 0))  # keys state + action: the stray array is replaced
    rb.close()
    back = ReplayBuffer.open(path)
    assert back.n_episodes == 1 and back.keys() == ["action", "state"]
    np.testing.assert_array_equal(back.get_episode(0)["state"], episode(6, 0)["state"])
    with pytest.raises(ValueError, match="stores keys"):  # once committed, keys are fixed
        ReplayBuffer.open(path, writable=True).add_episode({"state": np.zeros((3, 4), np.float32)})


def test_clear_errors_on_bad_datasets(tmp_path):
    p = tmp_path / "bad.zarr"
    root = zarr.open_group(str(p), mode="w", zarr_format=2)
    root.create_group("data").create_array("action", shape=(10, 2), dtype="float32")
    with pytest.raises(DatasetError, match=r"bad\.zarr.*meta"):
        ReplayBuffer.open(p)
    root.create_group("meta").create_array("episode_ends", shape=(1,), dtype="int64")[:] = [12]
    with pytest.raises(DatasetError, match=r"data/action has shape \(10, 2\).*step 12"):
        ReplayBuffer.open(p)
    root["meta/episode_ends"][:] = [8]  # foreign file with extra data: an error, not a repair
    with pytest.raises(DatasetError, match=r"data/action .*\(10, 2\)"):
        ReplayBuffer.open(p)
    with pytest.raises(FileNotFoundError, match="nope"):
        ReplayBuffer.open(tmp_path / "nope.zarr")


def test_add_episode_validation(tmp_path):
    buf = ReplayBuffer.create(tmp_path / "rb.zarr")
    buf.add_episode(episode(4, 0))
    bad = episode(4, 1)
    bad["state"][2, 1] = np.nan
    with pytest.raises(ValueError, match=r"'state' has NaN/inf \(first at step 2"):
        buf.add_episode(bad)
    with pytest.raises(ValueError, match="same non-zero length"):
        buf.add_episode(
            {"state": np.zeros((3, 4), np.float32), "action": np.zeros((2, 2), np.float32)}
        )
    with pytest.raises(ValueError, match=r"per-step shape \(5,\)"):
        buf.add_episode(
            {"state": np.zeros((3, 5), np.float32), "action": np.zeros((3, 2), np.float32)}
        )
    with pytest.raises(ValueError, match="stores keys"):
        buf.add_episode({"state": np.zeros((3, 4), np.float32)})
    buf.close()
    with pytest.raises(FileExistsError):
        ReplayBuffer.create(tmp_path / "rb.zarr")
    assert ReplayBuffer.open(tmp_path / "rb.zarr").n_episodes == 1


def test_atomic_buffer_keeps_old_dataset_on_failure(tmp_path):
    path = tmp_path / "ds.zarr"
    with atomic_buffer(path) as b:
        b.add_episode(episode(3, 0))
    with pytest.raises(RuntimeError), atomic_buffer(path, overwrite=True) as b:
        b.add_episode(episode(6, 1))
        raise RuntimeError("converter crashed")
    assert ReplayBuffer.open(path).n_steps == 3
    left = sorted(p.name for p in tmp_path.iterdir())
    assert left == [".ds.zarr.lock", "ds.zarr"]  # no temporary copy is left behind


def test_sequence_padding_and_masks():
    ends = np.array([3, 8])  # episodes [0,3) and [3,8)
    s = SequenceSampler(ends, sequence_length=4, pad_before=1, pad_after=2)
    # episode 0 (len 3): starts -1..1; episode 1 (len 5): starts 2..6 in buffer coords
    assert s.table[:, 0].tolist() == [-1, 0, 1, 2, 3, 4, 5, 6]
    x = np.arange(8) * 10
    frames, pad = s.frame_indices(np.array([0]))
    assert x[frames[0]].tolist() == [0, 0, 10, 20]
    assert pad[0].tolist() == [True, False, False, False]
    frames, pad = s.frame_indices(np.array([7]))
    assert x[frames[0]].tolist() == [60, 70, 70, 70]
    assert pad[0].tolist() == [False, False, True, True]
    frames, pad = s.frame_indices(np.array([2, 3]), 2)  # the first 2 frames of two windows
    assert x[frames].tolist() == [[10, 20], [30, 30]]
    assert pad.tolist() == [[False, False], [True, False]]
    # windows never mix episodes
    for i in range(len(s)):
        frames, _ = s.frame_indices(np.array([i]))
        assert len(set(np.searchsorted(ends, frames[0], side="right"))) == 1


def test_dataset_window_matches_policy_window(tmp_path):
    buf = ReplayBuffer.create(tmp_path / "rb.zarr")
    ep = {
        "state": np.arange(10, dtype=np.float32)[:, None],
        "action": np.arange(10, dtype=np.float32)[:, None] + 100,
    }
    buf.add_episode(ep)
    w = Window(horizon=8, n_obs_steps=3, n_action_steps=4)
    ds = SequenceDataset(buf, infer_shape_meta(buf), w)
    item = ds[0]  # the first window starts To-1 = 2 steps before the episode
    assert item["obs"]["state"][:, 0].tolist() == [0, 0, 0]
    assert item["obs_is_pad"].tolist() == [True, True, False]
    # the executed actions start at the current step: index To-1 of the chunk
    assert w.executed(item["action"][None])[0, :, 0].tolist() == [100, 101, 102, 103]
    # the executed parts of the windows cover every step of the episode
    covered = set()
    for i in range(len(ds)):
        covered |= {int(a) - 100 for a in w.executed(ds[i]["action"][None])[0, :, 0]}
    assert covered == set(range(10))
    assert len(ds) == 10 - 8 + (3 - 1) + (4 - 1) + 1  # L - H + pad_before + pad_after + 1


def test_split_by_episode():
    train, val = split_episodes(10, 0.2, seed=0)
    assert train.sum() == 8 and val.sum() == 2 and not (train & val).any()
    assert split_episodes(1, 0.5)[1].sum() == 0
    assert split_episodes(2, 0.01)[1].sum() == 1


def test_dataset_errors(tmp_path):
    buf = ReplayBuffer.create(tmp_path / "empty.zarr")
    buf.add_episode(episode(4, 0))
    buf2 = ReplayBuffer.create(tmp_path / "none.zarr")
    w = Window(horizon=4, n_obs_steps=2, n_action_steps=2)
    with pytest.raises(DatasetError, match=r"none\.zarr: the dataset is empty"):
        infer_shape_meta(buf2)
    with pytest.raises(DatasetError, match=r"no action array 'data/act'"):
        infer_shape_meta(buf, action_key="act")
    sm = infer_shape_meta(buf)
    with pytest.raises(DatasetError, match="no episodes"):
        buf2.add_episode(episode(2, 0))
        buf2.root["meta/episode_ends"].resize((0,))
        SequenceDataset(ReplayBuffer.open(tmp_path / "none.zarr"), sm, w)
    with pytest.raises(DatasetError, match=r"observation keys \['wrist'\]"):
        infer_shape_meta(buf, obs_keys=["wrist"])
    # NaN that slipped in through another writer is caught at load time, with its episode
    zarr.open_group(str(tmp_path / "empty.zarr"), mode="a")["data/state"][2, 0] = np.inf
    with pytest.raises(DatasetError, match=r"data/state .*NaN or inf.*step 2 \(episode 0\)"):
        SequenceDataset(ReplayBuffer.open(tmp_path / "empty.zarr"), sm, w)


@pytest.mark.parametrize("scheme", ["limits", "gaussian"])
def test_normalizer_round_trip_and_constant_dims(scheme):
    rng = np.random.default_rng(0)
    x = rng.uniform(-3, 5, size=(200, 3)).astype(np.float32)
    x[:, 1] = 2.5  # constant dimension
    norm = Normalizer({"a": (3,)}, scheme=scheme).fit({"a": x})
    xt = torch.from_numpy(x)
    y = norm.normalize("a", xt)
    assert torch.isfinite(y).all()
    assert torch.allclose(norm.unnormalize("a", y), xt, atol=1e-5)
    assert torch.allclose(y[:, 1], torch.zeros(200))
    if scheme == "limits":
        assert torch.allclose(y[:, [0, 2]].min(0).values, torch.tensor([-1.0, -1.0]), atol=1e-5)
        assert torch.allclose(y[:, [0, 2]].max(0).values, torch.tensor([1.0, 1.0]), atol=1e-5)
    else:
        assert torch.allclose(y[:, [0, 2]].mean(0), torch.zeros(2), atol=1e-4)
    # statistics travel in the state_dict
    fresh = Normalizer({"a": (3,)}, scheme=scheme)
    fresh.load_state_dict(norm.state_dict())
    assert torch.equal(fresh.normalize("a", xt), y) and bool(fresh.fitted)
