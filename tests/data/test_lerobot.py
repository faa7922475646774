"""LeRobot datasets written by LeRobot itself (tests/fixtures/lerobot, made by make_fixtures.py
with lerobot 0.4.4 for v3.0 and 0.3.3 for v2.1) read frame by frame against what was written;
bad folders refused with the file, episode and key; training straight from a folder."""

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("av")
pytest.importorskip("pyarrow")

from diffusion_policy_dist.cli.main import main
from diffusion_policy_dist.data import ReplayBuffer
from diffusion_policy_dist.data.lerobot import (
    LeRobotFolder,
    check,
    is_lerobot,
    to_replay_buffer,
)
from diffusion_policy_dist.data.replay_buffer import DatasetError

FIXTURES = Path(__file__).parents[1] / "fixtures" / "lerobot"
sys.path.insert(0, str(FIXTURES))
from make_fixtures import LENGTHS, TASKS, values  # noqa: E402

CASES = [(v, c) for v in ("v3.0", "v2.1") for c in ("video", "image")]


def folder(version, camera, tmp_path=None) -> Path:
    src = FIXTURES / version / f"cam_{camera}"
    if tmp_path is None:
        return src
    dst = tmp_path / f"{version}_{camera}"
    shutil.copytree(src, dst)
    return dst


@pytest.mark.parametrize("version,camera", CASES)
def test_frames_equal_what_lerobot_wrote(tmp_path, version, camera):
    f = LeRobotFolder(folder(version, camera))
    assert f.version == version and f.fps == 10 and [e.length for e in f.episodes] == [12, 9, 15]
    assert [e.tasks for e in f.episodes] == [[t] for t in TASKS]
    to_replay_buffer(f.path, tmp_path / "out.zarr", progress=False)
    buf = ReplayBuffer.open(tmp_path / "out.zarr")
    assert list(buf.episode_lengths) == list(LENGTHS)
    assert buf.attrs["source"]["fps"] == 10 and buf.attrs["source"]["tasks"] == sorted(set(TASKS))
    data, start = buf.root["data"], 0
    for ep, n in enumerate(LENGTHS):
        for i in range(n):
            want = values(ep, i)
            assert np.array_equal(data["observation.state"][start + i], want["observation.state"])
            assert np.array_equal(data["action"][start + i], want["action"])
            img = data["observation.images.cam"][start + i].astype(int)
            err = np.abs(img - want["image"]).mean()
            if camera == "image":
                assert err == 0  # PNG: lossless
            else:  # AV1: lossy, but the right frame (its neighbours differ by 8 in red)
                others = [np.abs(img - values(ep, j)["image"]).mean() for j in (i - 1, i + 1)
                          if 0 <= j < n]  # fmt: skip
                assert err < 6 and all(err < o for o in others), (ep, i, err, others)
        start += n


def _rewrite_parquet(path: Path, column: str, edit) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pq.read_table(path)
    values_ = edit(table[column].to_pylist())
    i = table.column_names.index(column)
    table = table.set_column(i, column, pa.array(values_, type=table.schema.field(column).type))
    pq.write_table(table, path)


def _data_file(root: Path) -> Path:
    return sorted((root / "data").rglob("*.parquet"))[0]


def test_bad_folders_are_named_file_episode_and_key(tmp_path):
    root = folder("v3.0", "video", tmp_path)
    video = next((root / "videos").rglob("*.mp4"))
    video.unlink()
    with pytest.raises(DatasetError, match=r"file-000.mp4 is missing \(camera "
                                           r"'observation.images.cam', episode 0\)"):  # fmt: skip
        to_replay_buffer(root, tmp_path / "a.zarr", progress=False)
    assert len(check(LeRobotFolder(root))) == 3  # one problem per episode, none left out

    root = folder("v3.0", "image", tmp_path)
    _rewrite_parquet(_data_file(root), "timestamp", lambda ts: [ts[0], ts[2], ts[1], *ts[3:]])
    with pytest.raises(DatasetError, match="episode 0: timestamps are not increasing at frame 2"):
        to_replay_buffer(root, tmp_path / "b.zarr", progress=False)

    root = folder("v2.1", "image", tmp_path)
    ep1 = root / "data" / "chunk-000" / "episode_000001.parquet"
    _rewrite_parquet(ep1, "observation.state", lambda v: [v[0], v[1], [float("nan")] * 3, *v[3:]])
    with pytest.raises(DatasetError, match=r"episode 1: 'observation.state' holds NaN or inf "
                                           r"\(first at frame 2\)"):  # fmt: skip
        to_replay_buffer(root, tmp_path / "c.zarr", progress=False)


def test_info_json_disagreements_and_foreign_folders(tmp_path):
    root = folder("v2.1", "video", tmp_path)
    info = json.loads((root / "meta" / "info.json").read_text())
    info["features"]["observation.state"]["shape"] = [4]
    (root / "meta" / "info.json").write_text(json.dumps(info))
    with pytest.raises(DatasetError, match=r"'observation\.state' has 3 numbers per frame; "
                                           r"info\.json says shape"):  # fmt: skip
        to_replay_buffer(root, tmp_path / "d.zarr", progress=False)
    assert not is_lerobot(tmp_path) and is_lerobot(root)
    info["codebase_version"] = "v1.6"
    (root / "meta" / "info.json").write_text(json.dumps(info))
    with pytest.raises(DatasetError, match=r"codebase_version 'v1.6'; readable versions are"):
        LeRobotFolder(root)
    with pytest.raises(DatasetError, match="no feature"):
        to_replay_buffer(folder("v3.0", "image"), tmp_path / "e.zarr", keys=["nope"])


def test_dpd_info_checks_and_train_reads_a_folder(tmp_path, capsys):
    assert main(["info", f"path={folder('v3.0', 'video')}"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["format"] == "LeRobot v3.0" and out["frames"] == 36 and out["problems"] == []
    bad = folder("v3.0", "video", tmp_path)
    next((bad / "videos").rglob("*.mp4")).unlink()
    assert main(["info", f"path={bad}"]) == 1
    run = tmp_path / "run"
    args = ["train", f"dataset.path={folder('v2.1', 'image')}", f"output_dir={run}",
            "network=tiny", "training.steps=2", "training.batch_size=8", "loss.m=2",
            f"dataset.cache_dir={tmp_path / 'cache'}", "training.progress=false",
            "training.val_every=0"]  # fmt: skip
    assert main(args) == 0  # episodes (9-15 frames) shorter than the window (16): padded
    meta = json.loads((run / "checkpoints" / "latest" / "meta.json").read_text())
    assert meta["dataset"]["source"]["fps"] == 10 and meta["dataset"]["source"]["tasks"]
    assert "observation.images.cam" in meta["shape_meta"]["obs"]
    assert len(list((tmp_path / "cache").glob("*.zarr"))) == 1
    assert main(args) == 0  # the second run reuses the decoded copy
    assert len(list((tmp_path / "cache").glob("*.zarr"))) == 1


def test_our_demos_in_lerobot_layout_give_the_same_training_batches(tmp_path):
    """zarr -> dpd export-lerobot -> read back: the same windows and normalization, batch by
    batch (keys renamed observation.<key> / observation.images.<key>)."""
    import torch
    from helpers import write_bimodal

    from diffusion_policy_dist.data import make_datasets
    from diffusion_policy_dist.data.dataset import infer_shape_meta
    from diffusion_policy_dist.data.normalizer import Normalizer
    from diffusion_policy_dist.window import Window

    src = tmp_path / "demos.zarr"
    write_bimodal(src, n_obs_values=2, episodes_per_value=4, T=11)
    assert main(["export-lerobot", f"input={src}", f"output={tmp_path / 'lr'}"]) == 0
    to_replay_buffer(tmp_path / "lr", tmp_path / "back.zarr", progress=False)
    sets = []
    for path in (src, tmp_path / "back.zarr"):
        buf = ReplayBuffer.open(path)
        sm = infer_shape_meta(buf)
        train, _ = make_datasets(buf, sm, Window(8, 2, 4), val_ratio=0.25, seed=0)
        sets.append(train)
    a, b = sets
    assert len(a) == len(b)
    idx = np.arange(len(a))
    ba, bb = a[idx], b[idx]
    assert torch.equal(ba["action"], bb["action"])
    assert torch.equal(ba["obs"]["state"], bb["obs"]["observation.state"])
    norms = []
    for ds, key in ((a, "state"), (b, "observation.state")):
        n = Normalizer({key: (3,), "action": (2,)})
        n.fit(ds.low_dim_data())
        norms.append(n.normalize(key, ds[idx]["obs"][key]))
    assert torch.equal(norms[0], norms[1])
