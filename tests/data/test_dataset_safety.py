"""Datasets under concurrent writers, kills and damage: one writer at a time, atomic creation,
read-only opens that say what they see, a repair that Diffusion Policy's reader accepts, and
errors that name the file, key and chunk."""

import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import zarr

from diffusion_policy_dist.cli.main import main
from diffusion_policy_dist.data import DatasetError, ReplayBuffer, infer_shape_meta
from diffusion_policy_dist.data.collect import collect
from diffusion_policy_dist.data.lock import DatasetLockedError


def episode(T, value):
    return {
        "state": np.full((T, 4), value, np.float32),
        "action": np.full((T, 2), value, np.float32),
    }


def dp_reader_accepts(path) -> bool:
    """Diffusion Policy's ReplayBuffer check: every data array ends where the episodes end."""
    root = zarr.open_group(str(path), mode="r")
    ends = root["meta/episode_ends"][:]
    return all(root["data"][k].shape[0] == (ends[-1] if len(ends) else 0) for k in root["data"])


def test_a_second_writer_is_refused_at_once_and_named(tmp_path):
    path = tmp_path / "rb.zarr"
    with ReplayBuffer.create(path) as buf:
        buf.add_episode(episode(5, 1))
        with pytest.raises(DatasetLockedError, match=rf"PID {os.getpid()}"):
            ReplayBuffer.open(path, writable=True)
        assert ReplayBuffer.open(path).n_episodes == 1  # readers are never blocked
    with ReplayBuffer.open(path, writable=True) as buf:  # released on close
        buf.add_episode(episode(3, 2))
    assert ReplayBuffer.open(path).episode_ends.tolist() == [5, 8]


def test_a_second_collect_command_fails_at_once_and_loses_nothing(tmp_path):
    out = tmp_path / "oa.zarr"
    collect("obstacle_avoid", 3, str(out), progress=False)
    before = ReplayBuffer.open(out).load()
    cmd = [sys.executable, "-m", "diffusion_policy_dist.cli.main", "collect"]
    cmd += ["task=obstacle_avoid", "episodes=6", f"output={out}", "workers=1", "progress=false"]
    with ReplayBuffer.open(out, writable=True):  # another collector is at work
        second = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert second.returncode == 1, second.stderr
    assert f"being written by another process (PID {os.getpid()}" in second.stderr
    buf = ReplayBuffer.open(out)
    assert buf.n_episodes == 3 and all(np.array_equal(buf.load()[k], v) for k, v in before.items())
    assert subprocess.run(cmd, capture_output=True, timeout=300).returncode == 0  # lock released
    buf = ReplayBuffer.open(out)
    assert buf.n_episodes == 6 and not buf.problems and dp_reader_accepts(out)


def test_a_killed_creation_leaves_nothing_and_a_rerun_starts_clean(tmp_path, monkeypatch):
    import diffusion_policy_dist.data.replay_buffer as rb

    out = tmp_path / "oa.zarr"

    def killed(tmp, final):
        raise KeyboardInterrupt  # the process dies between building and renaming

    monkeypatch.setattr(rb, "replace_dir", killed)
    with pytest.raises(KeyboardInterrupt):
        collect("obstacle_avoid", 2, str(out), progress=False)
    assert not out.exists()
    monkeypatch.undo()
    assert collect("obstacle_avoid", 2, str(out), progress=False)["episodes"] == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == [".oa.zarr.lock", "oa.zarr"]


def test_an_ordinary_folder_is_refused_before_anything_is_written(tmp_path):
    folder = tmp_path / "my_results"
    folder.mkdir()
    (folder / "notes.txt").write_text("keep me")
    with pytest.raises(DatasetError, match="is not a zarr dataset"):
        collect("obstacle_avoid", 1, str(folder), progress=False)
    assert sorted(p.name for p in folder.iterdir()) == ["notes.txt"]


def test_read_only_opens_report_an_uncommitted_tail_and_repair_fixes_it(tmp_path, capsys):
    path = tmp_path / "rb.zarr"
    with ReplayBuffer.create(path) as buf:
        buf.add_episode(episode(5, 1))
    root = zarr.open_group(str(path), mode="a")
    root["data/state"].append(np.ones((4, 4), np.float32))  # a writer killed mid-append
    root["meta/episode_ends"].resize((2,))  # ... after growing episode_ends (fill value 0)
    assert not dp_reader_accepts(path)
    buf = ReplayBuffer.open(path)
    assert buf.n_episodes == 1 and buf.problems and "dpd repair" in buf.problems[0]
    assert main(["info", f"path={path}"]) == 1
    assert "uncommitted" in capsys.readouterr().err
    assert main(["repair", f"path={path}"]) == 0
    assert dp_reader_accepts(path) and not ReplayBuffer.open(path).problems
    assert main(["info", f"path={path}"]) == 0


def test_a_corrupted_chunk_is_named(tmp_path, capsys):
    path = tmp_path / "rb.zarr"
    with ReplayBuffer.create(path) as buf:
        buf.add_episode(episode(5, 1))
    chunk = next(p for p in (path / "data" / "action").iterdir() if not p.name.startswith("."))
    chunk.write_bytes(b"\x00garbage" * 8)
    with pytest.raises(DatasetError, match=r"data/action chunk 0 \(steps 0-4"):
        ReplayBuffer.open(path).load()
    assert main(["info", f"path={path}"]) == 1
    assert "data/action chunk 0" in capsys.readouterr().err


def test_default_observation_keys_leave_out_what_is_not_an_observation(tmp_path):
    path = tmp_path / "rb.zarr"
    with ReplayBuffer.create(path) as buf:
        T = 6
        ep = episode(T, 1)
        ep["timestamp"] = 1.7e9 + np.arange(T, dtype=np.float64)
        ep["stage"] = np.zeros(T, np.int64)
        ep["label"] = np.array(["grasp"] * T)
        buf.add_episode(ep)
    buf = ReplayBuffer.open(path)
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        sm = infer_shape_meta(buf)
    assert sorted(sm["obs"]) == ["state"]
    said = " ".join(str(x.message) for x in w)
    assert "timestamp" in said and "stage" in said and "label (non-numeric" in said
    with pytest.raises(DatasetError, match=r"data/label has dtype <U5.*must be numeric"):
        infer_shape_meta(buf, ["state", "label"])


def test_robomimic_import_of_a_text_file_names_it(tmp_path):
    pytest.importorskip("h5py")
    from diffusion_policy_dist.data.robomimic import import_robomimic

    bad = Path(tmp_path / "notes.hdf5")
    bad.write_text("not hdf5")
    with pytest.raises(DatasetError, match=r"notes\.hdf5 is not a readable HDF5 file"):
        import_robomimic(bad, tmp_path / "out.zarr", progress=False)
    assert not (tmp_path / "out.zarr").exists()
