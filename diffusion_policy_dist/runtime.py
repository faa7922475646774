"""Run an exported policy (``dpd export``) with onnxruntime and numpy only: no torch, no
training stack.

    from diffusion_policy_dist.runtime import OnnxPolicy

    policy = OnnxPolicy("policy.onnx")            # checks the file and its metadata
    policy.reset()
    action = policy.select_action(obs)            # obs: {key: array [*shape]} of one robot

``select_action`` keeps the observation history and the action queue as the Python policy does
(the history padded by repeating an episode's first observation; a chunk planned when the queue
is empty). ``predict_action(obs [B, To, ...], noise=None, rng=None, prefix=None,
prefix_lengths=None)`` returns whole chunks; the noise is drawn from ``rng`` (numpy) in the
shapes the file lists, or given. An ``OnnxPolicy`` also runs inside
:class:`~diffusion_policy_dist.control.Controller` (which needs torch): given a torch generator
it draws the noise with it, so the same seed gives the same actions as the torch policy.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .queues import ActionQueue, ObsHistory, camera_chw, select_obs
from .window import Window

FORMAT = "diffusion_policy_dist.onnx/1"


class ExportFileError(ValueError):
    """An exported file that cannot be run, with what is wrong with it."""


def _session(path: Path, threads: int | None, providers: Sequence[str] | None):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    if threads:
        opts.intra_op_num_threads = int(threads)
        opts.inter_op_num_threads = 1
    try:
        return ort.InferenceSession(
            str(path), opts, providers=list(providers or ["CPUExecutionProvider"])
        )
    except Exception as e:  # onnxruntime raises its own error types for unreadable files
        raise ExportFileError(f"{path} is not a readable ONNX model ({type(e).__name__}: "
                            f"{str(e).splitlines()[0][:200]})") from e  # fmt: skip


class OnnxPolicy:
    """An exported policy; ``meta`` is the file's metadata (shape_meta, window, sampler, noise,
    package version, checkpoint hash)."""

    device = "cpu"

    def __init__(
        self, path: str | Path, threads: int | None = None, providers: Sequence[str] | None = None
    ) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"{self.path}: no such exported policy")
        self.session = _session(self.path, threads, providers)
        self.meta = self._read_meta()
        self.window = Window(**self.meta["window"])
        self.shape_meta = self.meta["shape_meta"]
        self.action_dim = int(self.shape_meta["action"]["shape"][0])
        self.batch = self.meta["batch"]
        self._history = ObsHistory(self.window.n_obs_steps)
        self._queue = ActionQueue()
        self._rng = np.random.default_rng(0)

    def _read_meta(self) -> dict[str, Any]:
        raw = self.session.get_modelmeta().custom_metadata_map.get("dpd")
        if raw is None:
            raise ExportFileError(f"{self.path} has no 'dpd' metadata: not written by dpd export")
        meta = json.loads(raw)
        if meta.get("format") != FORMAT:
            raise ExportFileError(f"{self.path} is a {meta.get('format')!r} export; this runtime "
                                f"reads {FORMAT!r}")  # fmt: skip
        names = [i.name for i in self.session.get_inputs()]
        want = [i["name"] for i in meta["inputs"]] + [n["name"] for n in meta["noise"]]
        if names != want:
            raise ExportFileError(f"{self.path}: the graph's inputs {names} are not the ones its "
                                f"metadata lists {want}")  # fmt: skip
        return meta

    # ------------------------------------------------------------------ chunks
    def noise_shapes(self, batch: int) -> list[tuple[int, ...]]:
        return [(batch, *n["shape"][1:]) for n in self.meta["noise"]]

    def draw_noise(self, batch: int, rng: Any = None) -> list[np.ndarray]:
        """Standard normal noise for one chunk, from a numpy generator (this policy's own when
        None) or a torch generator (as the torch policy draws it)."""
        if rng is not None and type(rng).__module__.startswith("torch"):
            import torch

            return [torch.randn(s, generator=rng).numpy() for s in self.noise_shapes(batch)]
        rng = self._rng if rng is None else rng
        return [rng.standard_normal(s).astype(np.float32) for s in self.noise_shapes(batch)]

    def predict_action(
        self,
        obs: Mapping[str, Any],
        noise: Sequence[np.ndarray] | None = None,
        rng: Any = None,
        prefix: Any = None,
        prefix_lengths: Any = None,
        generator: Any = None,
        sampler: Any = None,
    ) -> dict[str, np.ndarray]:
        """Chunks for raw observation histories ``{key: [B, To, *shape]}``: ``{"action": [B,
        Ta, Da], "action_pred": [B, H, Da]}`` in env units. ``prefix [B, P, Da]`` (env units):
        actions already committed from the current step on, ``prefix_lengths [B]`` of them
        per row. (``generator`` is ``rng`` under the torch policy's name; ``sampler`` must be
        None: the sampler is part of the graph.)"""
        if sampler is not None:
            raise ValueError(f"{self.path} has its sampler built in "
                             f"({self.meta['sampler']['kind']}); it takes no other")  # fmt: skip
        feeds = self._obs_feeds(obs)
        B = next(iter(feeds.values())).shape[0]
        feeds.update(self._prefix_feeds(B, prefix, prefix_lengths))
        noise = (
            self.draw_noise(B, rng if rng is not None else generator) if noise is None else noise
        )
        for spec, value in zip(self.meta["noise"], noise, strict=True):
            feeds[spec["name"]] = np.asarray(value, dtype=np.float32)
        action, pred = self.session.run(["action", "action_pred"], feeds)
        return {"action": action, "action_pred": pred}

    def _obs_feeds(self, obs: Mapping[str, Any]) -> dict[str, np.ndarray]:
        obs = camera_chw(select_obs({k: _numpy(v) for k, v in obs.items()}, self.shape_meta),
                         self.shape_meta)  # fmt: skip
        feeds = {}
        for spec in (s for s in self.meta["inputs"] if "key" in s):
            value = np.asarray(obs[spec["key"]], dtype=spec["dtype"])
            want = spec["shape"]
            if value.ndim != len(want) or any(w not in (-1, v) for w, v in zip(want, value.shape)):
                raise ValueError(f"observation {spec['key']!r} has shape {value.shape}; the "
                                 f"exported policy takes {want} (-1: any batch)")  # fmt: skip
            feeds[spec["name"]] = value
        return feeds

    def _prefix_feeds(self, B: int, prefix: Any, lengths: Any) -> dict[str, np.ndarray]:
        room = self.window.horizon - self.window.action_start
        buf = np.zeros((B, room, self.action_dim), np.float32)
        n = np.zeros(B, np.int64)
        if prefix is not None:
            p = _numpy(prefix)[:, :room].astype(np.float32)
            buf[:, : p.shape[1]] = p
            n[:] = p.shape[1] if lengths is None else np.minimum(_numpy(lengths), p.shape[1])
        return {"prefix": buf, "prefix_len": n}

    # ------------------------------------------------------------------ a control loop
    @property
    def queued(self) -> int:
        """Actions left in the queue (0: the next ``select_action`` plans a chunk)."""
        return len(self._queue)

    def reset(self) -> None:
        """Clear the observation history and the action queue (at every episode start)."""
        self._history.reset()
        self._queue.reset()

    def select_action(self, obs: Mapping[str, Any], rng: Any = None) -> np.ndarray:
        """One action ``[Da]`` for one robot's current observation ``{key: [*shape]}``."""
        self._history.push({k: _numpy(v)[None] for k, v in obs.items()})
        if not len(self._queue):
            self._queue.set(self.predict_action(self._history.stacked(), rng=rng)["action"])
        return self._queue.pop()[0]


def _numpy(v: Any) -> np.ndarray:
    if hasattr(v, "detach"):  # a torch tensor (inside the Controller)
        return v.detach().cpu().numpy()
    return np.asarray(v)
