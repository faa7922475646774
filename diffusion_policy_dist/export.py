"""A trained policy as one ONNX graph a robot runs without this package's training stack.

The graph maps raw observation histories (cameras as uint8) and the sampler's noise (explicit
inputs, so the runtime owns the randomness and the same noise reproduces ``dpd eval``'s actions)
to the action chunk in raw units. Inside it: normalization, the observation encoder, every
sampling step unrolled (their coefficients are constants), clipping, unnormalization, and the
committed-prefix conditioning of real-time control (inputs ``prefix`` and ``prefix_len``; a
length of 0 commits nothing and changes nothing). Its metadata (JSON in the model's
``metadata_props["dpd"]``) describes the inputs, the window, the sampler, the package version and
the checkpoint's hash; it is data, never code. :mod:`.runtime` runs it with onnxruntime and
numpy.

The graph is traced with torch's TorchScript-based ONNX exporter: the newer ``torch.export``
cannot trace the sampler, whose step coefficients are computed on the host in float64
(data-dependent Python floats), so ``format=pt2`` is refused with that reason.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from . import __version__
from .noise import NoiseTape
from .policy.config import to_dict
from .policy.diffusion_policy import sampler_options

FORMAT = "diffusion_policy_dist.onnx/1"
MAX_STEPS = 16  # network calls a graph may unroll


class ExportError(ValueError):
    """A policy or a sampler that cannot be exported, or a file that is not a usable export."""


def _input_specs(policy, batch: int) -> list[dict[str, Any]]:
    """The graph's observation and prefix inputs, in order."""
    To, w = policy.window.n_obs_steps, policy.window
    specs = []
    for key, m in sorted(policy.shape_meta["obs"].items()):
        dtype = "uint8" if m.get("type") == "rgb" else "float32"
        specs.append({"name": f"obs.{key}", "key": key, "shape": [batch, To, *m["shape"]],
                      "dtype": dtype})  # fmt: skip
    room = w.horizon - w.action_start
    specs.append({"name": "prefix", "shape": [batch, room, policy.action_dim], "dtype": "float32"})
    specs.append({"name": "prefix_len", "shape": [batch], "dtype": "int64"})
    return specs


def _example(spec: dict[str, Any]) -> torch.Tensor:
    dtype = getattr(torch, spec["dtype"])
    if spec["dtype"] == "uint8":
        return torch.randint(0, 256, spec["shape"], dtype=dtype)
    if spec["dtype"] == "int64":
        return torch.zeros(spec["shape"], dtype=dtype)
    return torch.randn(spec["shape"], dtype=dtype)


class _Chunk(nn.Module):
    """``forward(*obs, prefix, prefix_len, *noise) -> (action, action_pred)``."""

    def __init__(self, policy, sampler, keys: list[str]) -> None:
        super().__init__()
        self.policy, self.sampler, self.keys = policy, sampler, keys

    def forward(self, *inputs: torch.Tensor):
        n = len(self.keys)
        obs = dict(zip(self.keys, inputs[:n], strict=True))
        prefix, lengths, noise = inputs[n], inputs[n + 1], list(inputs[n + 2 :])
        out = self.policy.predict_action(obs, sampler=self.sampler, generator=NoiseTape(noise),
                                         prefix=prefix, prefix_lengths=lengths)  # fmt: skip
        return out["action"], out["action_pred"]


def checkable_sampler(policy, sampler: Any):
    """The sampler to export (the policy's default when None), refused when a graph cannot
    hold it sensibly."""
    sc = sampler_options(sampler if sampler is not None else policy.sampler_cfg)
    calls = (sc.steps - 1) * type(sc).nfe_per_step + 1
    if calls > MAX_STEPS:
        raise ExportError(
            f"sampler {sc.describe()} makes {calls} network calls per chunk: unrolled into one "
            f"graph that is ~{calls}x the size and latency of a 1-step policy; export a sampler "
            f"of at most {MAX_STEPS} calls (distributional-1/2, ddim-k with k <= {MAX_STEPS})"
        )
    if policy.prior is not None and sc.use_prior:
        raise ExportError(
            "this policy starts from a learned truncation prior, which draws a mixture "
            "component per chunk: export it with the prior off (sampler option use_prior=false)"
        )
    return sc


def checkpoint_sha256(checkpoint: str | Path | None) -> str | None:
    """sha256 of a checkpoint's weights file (None without a checkpoint)."""
    if checkpoint is None:
        return None
    path = Path(checkpoint)
    weights = next((p for p in (path / "model.safetensors",
                                path / "checkpoints" / "latest" / "model.safetensors")
                    if p.exists()), None)  # fmt: skip
    return hashlib.sha256(weights.read_bytes()).hexdigest() if weights else None


def export_onnx(
    policy,
    output: str | Path,
    sampler: Any = None,
    batch: int | str = "dynamic",
    checkpoint: str | Path | None = None,
    opset: int = 18,
) -> dict[str, Any]:
    """Write ``policy`` with ``sampler`` as an ONNX file at ``output``; returns its metadata.
    ``batch``: ``"dynamic"`` (any batch size) or a fixed number of rows."""
    policy = policy.eval().cpu()
    sc = checkable_sampler(policy, sampler)
    dynamic = batch == "dynamic"
    rows = 1 if dynamic else int(batch)
    specs = _input_specs(policy, rows)
    example = [_example(s) for s in specs]
    keys = [s["key"] for s in specs if "key" in s]
    tape = NoiseTape(record_from=torch.Generator().manual_seed(0))
    module = _Chunk(policy, sc, keys)
    with torch.no_grad():  # a dry run: which noise the sampler draws, in which order
        policy.predict_action(dict(zip(keys, example, strict=False)), sampler=sc, generator=tape)
    noise = [{"name": f"noise.{i}", "shape": list(s), "dtype": "float32"}
             for i, s in enumerate(tape.shapes)]  # fmt: skip
    meta = _metadata(policy, sc, specs, noise, dynamic, checkpoint)
    names = [s["name"] for s in specs] + [n["name"] for n in noise]
    outputs = ["action", "action_pred"]
    axes = {n: {0: "batch"} for n in names + outputs} if dynamic else None
    output = Path(output)
    tmp = output.with_name(output.name + ".tmp")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the tracer's notes on the sampler's Python floats
        torch.onnx.export(module, (*example, *tape.tensors), str(tmp), dynamo=False,
                          opset_version=opset, input_names=names, output_names=outputs,
                          dynamic_axes=axes)  # fmt: skip
    _add_metadata(tmp, meta)
    tmp.replace(output)  # atomic: a reader never sees half a file
    return meta


def _metadata(policy, sc, specs, noise, dynamic: bool, checkpoint) -> dict[str, Any]:
    def shape(s):  # the batch axis as -1 when the batch is dynamic
        return [-1 if dynamic else s["shape"][0], *s["shape"][1:]]

    ckpt_meta = getattr(policy, "checkpoint_meta", {}) or {}
    return {
        "format": FORMAT,
        "package_version": __version__,
        "checkpoint": None if checkpoint is None else str(checkpoint),
        "checkpoint_sha256": checkpoint_sha256(checkpoint),
        "checkpoint_step": ckpt_meta.get("step"),
        "env": ckpt_meta.get("env"),
        "shape_meta": policy.shape_meta,
        "window": to_dict(policy.window),
        "sampler": to_dict(sc),
        "batch": "dynamic" if dynamic else specs[0]["shape"][0],
        "inputs": [{**s, "shape": shape(s)} for s in specs],
        "noise": [{**n, "shape": shape(n)} for n in noise],
        "outputs": {
            "action": [-1, policy.window.n_action_steps, policy.action_dim],
            "action_pred": [-1, policy.window.horizon, policy.action_dim],
        },
    }


def _add_metadata(path: Path, meta: dict[str, Any]) -> None:
    import onnx

    model = onnx.load(str(path))
    entry = model.metadata_props.add()
    entry.key, entry.value = "dpd", json.dumps(meta)
    onnx.save(model, str(path))
