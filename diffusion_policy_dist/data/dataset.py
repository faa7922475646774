"""Training windows from a replay buffer, as batches of tensors.

``shape_meta`` (what the policy sees) is inferred from the buffer when not given:
``obs`` keys are every ``data/`` key except the action key; arrays of shape ``[H, W, C]``
(uint8, or float frames such as Diffusion Policy's Push-T ``img``) are cameras (type ``rgb``,
stored HWC, served CHW as uint8), the rest ``low_dim``.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from ..window import Window
from .replay_buffer import DatasetError, ReplayBuffer
from .sequence import SequenceSampler, split_episodes


def _is_image(shape: tuple[int, ...], dtype: np.dtype) -> bool:
    """Camera frames: ``[H, W, C]`` with C in 1/3/4, uint8, or float with H, W >= 16 (Diffusion
    Policy's Push-T stores its camera as float32 in 0..255)."""
    if len(shape) != 3 or shape[-1] not in (1, 3, 4):
        return False
    return dtype == np.uint8 or (np.issubdtype(dtype, np.floating) and min(shape[:2]) >= 16)


def _as_uint8_frames(arr: np.ndarray) -> np.ndarray:
    """Float camera frames (0..1 or 0..255) as uint8, a quarter of the memory and the format
    the image encoder expects; uint8 frames pass through."""
    if arr.dtype == np.uint8:
        return arr
    scale = 255.0 if float(np.nanmax(arr, initial=0.0)) <= 1.0 else 1.0
    return np.clip(np.rint(arr * scale), 0, 255).astype(np.uint8)


# data/ keys that record an episode's bookkeeping, not what the robot observes (Diffusion
# Policy's real-robot buffers store a unix timestamp and the task stage beside the observations)
NOT_OBSERVATIONS = frozenset({"timestamp", "timestamps", "time", "stage", "episode", "index"})


def _why_not_observation(key: str, dtype: np.dtype) -> str | None:
    if dtype.kind not in "biuf":
        return f"non-numeric dtype {dtype}"
    if key.lower() in NOT_OBSERVATIONS or key.lower().endswith(("_timestamp", "_time", "_index")):
        return "bookkeeping, not an observation"
    return None


def default_obs_keys(buffer: ReplayBuffer, action_key: str = "action") -> list[str]:
    """Every ``data/`` key except the action and the keys that are not observations
    (timestamps, stages, indices, non-numeric arrays); the ones left out are reported."""
    keep, skipped = [], []
    for k in buffer.keys():
        if k == action_key:
            continue
        why = _why_not_observation(k, buffer.dtype(k))
        (skipped.append(f"{k} ({why})") if why else keep.append(k))
    if skipped:
        warnings.warn(
            f"{buffer.path}: left out of the observations: {', '.join(skipped)}; name the keys "
            "you want in dataset.obs_keys",
            stacklevel=3,
        )
    return keep


_OBS_ENTRY = re.compile(
    r"^(?:(?P<name>[\w.-]+)=)?(?P<key>[\w.-]+)(?:\[(?P<a>-?\d*):(?P<b>-?\d*)\])?$"
)


def parse_obs_key(entry: str) -> tuple[str, str, tuple[int | None, int | None] | None]:
    """``"agent_pos=state[0:2]"`` -> ``("agent_pos", "state", (0, 2))``; ``"state[:2]"`` names
    the slice after its key; ``"image"`` -> ``("image", "image", None)``."""
    m = _OBS_ENTRY.match(str(entry).strip())
    if m is None:
        raise ValueError(
            f"observation key {entry!r}: expected 'key', 'key[a:b]' or 'name=key[a:b]'"
        )
    key, a, b = m["key"], m["a"], m["b"]
    cut = None if a is None else (int(a) if a else None, int(b) if b else None)
    return m["name"] or key, key, cut


def obs_entries(shape_meta: Mapping[str, Any]) -> list[str]:
    """The ``dataset.obs_keys`` entries a shape_meta was inferred from (inverse of the above)."""
    out = []
    for key, spec in shape_meta["obs"].items():
        if "source" in spec:
            a, b = spec["slice"]
            out.append(f"{key}={spec['source']}[{a}:{b}]")
        else:
            out.append(key)
    return out


def _sliced_spec(buffer: ReplayBuffer, name: str, key: str, cut) -> dict[str, Any]:
    shape = buffer.shape(key)
    if len(shape) != 1 or _is_image(shape, buffer.dtype(key)):
        raise DatasetError(
            f"{buffer.path}: {name}={key}[...]: only 1-D low-dim arrays can be sliced; "
            f"data/{key} has per-step shape {shape}"
        )
    a, b, _ = slice(*cut).indices(shape[0])
    if b <= a:
        raise DatasetError(f"{buffer.path}: {key}[{cut[0]}:{cut[1]}] of shape {shape} is empty")
    return {"shape": [b - a], "type": "low_dim", "source": key, "slice": [a, b]}


def infer_shape_meta(
    buffer: ReplayBuffer, obs_keys: Sequence[str] | None = None, action_key: str = "action"
) -> dict[str, Any]:
    """``{"obs": {key: {"shape", "type"}}, "action": {"shape"}}`` from the buffer's arrays.
    ``obs_keys`` entries may name a slice of a key: ``"agent_pos=state[0:2]"`` (the entry then
    records ``source`` and ``slice``, applied alike to data and to an env's observations)."""
    parsed = [parse_obs_key(e) for e in obs_keys] if obs_keys is not None else None
    obs_keys = [p[1] for p in parsed] if parsed is not None else None
    keys = buffer.keys()
    if buffer.n_episodes == 0 and not keys:
        raise DatasetError(f"{buffer.path}: the dataset is empty (no episodes, no data/ arrays)")
    if action_key not in keys:
        raise DatasetError(f"{buffer.path}: no action array 'data/{action_key}'; keys are {keys}")
    if obs_keys is None:
        obs_keys = default_obs_keys(buffer, action_key)
    missing = [k for k in obs_keys if k not in keys]
    if missing:
        raise DatasetError(f"{buffer.path}: observation keys {missing} not in data/ (keys: {keys})")
    for k in obs_keys:
        if buffer.dtype(k).kind not in "biuf":
            raise DatasetError(
                f"{buffer.path}: data/{k} has dtype {buffer.dtype(k)} (shape "
                f"{buffer.shape(k)} per step); observations must be numeric"
            )
    if not obs_keys:
        raise DatasetError(f"{buffer.path}: no observation keys (data/ holds only {keys})")
    a_shape = buffer.shape(action_key)
    if len(a_shape) != 1:
        raise DatasetError(
            f"{buffer.path}: data/{action_key} must be [T, action_dim], "
            f"got per-step shape {a_shape}"
        )
    obs = {}
    for name, k, cut in parsed or [(k, k, None) for k in obs_keys]:
        shape, dtype = buffer.shape(k), buffer.dtype(k)
        if cut is not None:
            obs[name] = _sliced_spec(buffer, name, k, cut)
        elif _is_image(shape, dtype):
            h, w, c = shape
            obs[name] = {"shape": [c, h, w], "type": "rgb"}
        else:
            obs[name] = {"shape": list(shape), "type": "low_dim"}
    return {"obs": obs, "action": {"shape": list(a_shape)}}


def check_shape_meta(expected: Mapping[str, Any], got: Mapping[str, Any], where: str) -> None:
    """Raise a clear error when two shape_metas disagree (e.g. a checkpoint vs a dataset)."""

    def flat(sm):
        out = {"action": tuple(sm["action"]["shape"])}
        for k, v in sm["obs"].items():
            out[f"obs.{k}"] = (tuple(v["shape"]), v.get("type", "low_dim"))
            if "source" in v:
                out[f"obs.{k}"] += (f"{v['source']}[{v['slice'][0]}:{v['slice'][1]}]",)
        return out

    a, b = flat(expected), flat(got)
    if a != b:
        diff = [
            f"  {k}: expected {a.get(k, 'absent')}, got {b.get(k, 'absent')}"
            for k in sorted(set(a) | set(b))
            if a.get(k) != b.get(k)
        ]
        raise ValueError(f"shape_meta mismatch ({where}):\n" + "\n".join(diff))


def _load_obs(buffer: ReplayBuffer, shape_meta: Mapping[str, Any], action_key: str) -> dict:
    """Every observation (sliced where shape_meta says so) and the actions, in memory."""
    specs = shape_meta["obs"]
    sources = {spec.get("source", k) for k, spec in specs.items()}
    raw = buffer.load(sorted(sources | {action_key}))
    data = {action_key: raw[action_key]}
    for k, spec in specs.items():
        src = raw[spec.get("source", k)]
        data[k] = np.ascontiguousarray(src[:, slice(*spec["slice"])]) if "slice" in spec else src
    return data


class SequenceDataset(Dataset):
    """Windows of ``window.horizon`` steps from selected episodes, loaded into memory.

    ``dataset[idx]`` with an int or an index array returns a (batched) dict::

        {"obs": {key: [B, To, *shape]}, "obs_is_pad": [B, To],
         "action": [B, H, Da], "action_is_pad": [B, H]}

    Low-dim arrays are float32; cameras stay uint8 ``[B, To, C, H, W]``. Normalization is the
    policy's job, so this class never changes values.
    """

    def __init__(
        self,
        buffer: ReplayBuffer,
        shape_meta: Mapping[str, Any],
        window: Window,
        episode_mask: np.ndarray | None = None,
        action_key: str = "action",
        data: Mapping[str, np.ndarray] | None = None,
    ) -> None:
        self.path = buffer.path
        self.window = window
        self.shape_meta = shape_meta
        self.action_key = action_key
        self.obs_keys = sorted(shape_meta["obs"])
        if buffer.n_episodes == 0:
            raise DatasetError(f"{buffer.path}: the dataset has no episodes")
        inferred = infer_shape_meta(buffer, obs_entries(shape_meta), action_key)
        check_shape_meta(shape_meta, inferred, f"dataset {buffer.path}")
        if data is None:  # a validation split shares the training split's arrays
            self.data = _load_obs(buffer, shape_meta, action_key)
            self._check_finite(buffer)
        else:
            self.data = dict(data)
        self.rgb_keys = [k for k in self.obs_keys if shape_meta["obs"][k].get("type") == "rgb"]
        if data is None:
            for k in self.rgb_keys:
                self.data[k] = _as_uint8_frames(self.data[k])
        self.sampler = SequenceSampler(
            buffer.episode_ends,
            sequence_length=window.horizon,
            pad_before=window.pad_before,
            pad_after=window.pad_after,
            episode_mask=episode_mask,
        )
        if len(self.sampler) == 0:
            raise DatasetError(f"{buffer.path}: no training windows (empty episode selection)")

    def _check_finite(self, buffer: ReplayBuffer) -> None:
        for k, arr in self.data.items():
            if not np.issubdtype(arr.dtype, np.floating):
                continue
            bad = ~np.isfinite(arr.reshape(len(arr), -1)).all(1)
            if bad.any():
                step = int(np.argmax(bad))
                ep = int(np.searchsorted(buffer.episode_ends, step, side="right"))
                raise DatasetError(
                    f"{buffer.path}: data/{k} (shape {tuple(arr.shape)}) contains NaN or inf: "
                    f"{int(bad.sum())} steps, first at step {step} (episode {ep})"
                )

    def __len__(self) -> int:
        return len(self.sampler)

    def __getitem__(self, idx: int | Sequence[int] | np.ndarray) -> dict[str, Any]:
        scalar = np.ndim(idx) == 0
        idx = np.atleast_1d(np.asarray(idx, dtype=np.int64))
        To, H = self.window.n_obs_steps, self.window.horizon
        obs_frames, obs_pad = self.sampler.frame_indices(idx, To)
        act_frames, act_pad = self.sampler.frame_indices(idx, H)
        obs = {}
        for k in self.obs_keys:
            arr = self.data[k][obs_frames.reshape(-1)].reshape(
                *obs_frames.shape, *self.data[k].shape[1:]
            )
            if k in self.rgb_keys:
                obs[k] = torch.from_numpy(np.ascontiguousarray(np.moveaxis(arr, -1, -3)))
            else:
                obs[k] = torch.from_numpy(arr.astype(np.float32, copy=False))
        a = self.data[self.action_key]
        action = a[act_frames.reshape(-1)].reshape(*act_frames.shape, *a.shape[1:])
        batch = {
            "obs": obs,
            "obs_is_pad": torch.from_numpy(obs_pad),
            "action": torch.from_numpy(action.astype(np.float32, copy=False)),
            "action_is_pad": torch.from_numpy(act_pad),
        }
        if scalar:
            batch = {
                "obs": {k: v[0] for k, v in batch["obs"].items()},
                **{k: v[0] for k, v in batch.items() if k != "obs"},
            }
        return batch

    def low_dim_data(self) -> dict[str, np.ndarray]:
        """Low-dim arrays (incl. action) of the selected episodes, for fitting the normalizer."""
        rows = self.sampler.table
        steps = np.unique(
            np.concatenate([np.arange(s, e) for s, e in np.unique(rows[:, 1:], axis=0)])
        )
        keys = [k for k in self.obs_keys if k not in self.rgb_keys] + [self.action_key]
        return {k: self.data[k][steps] for k in keys}


def make_datasets(
    buffer: ReplayBuffer,
    shape_meta: Mapping[str, Any],
    window: Window,
    val_ratio: float = 0.1,
    seed: int = 0,
    action_key: str = "action",
) -> tuple[SequenceDataset, SequenceDataset | None]:
    """Train and validation datasets split by episode (validation is None when empty)."""
    train_mask, val_mask = split_episodes(buffer.n_episodes, val_ratio, seed)
    train = SequenceDataset(buffer, shape_meta, window, train_mask, action_key)
    val = None
    if val_mask.any():
        val = SequenceDataset(buffer, shape_meta, window, val_mask, action_key, data=train.data)
    return train, val
