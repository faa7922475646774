"""A fixed-shape sampler: one policy, one sampler, one batch size, captured once.

At batch 1 a 4.5M-parameter UNet is launch-bound on a GPU: its kernels take microseconds and
Python, the sampler's coefficient arithmetic and the kernel launches take the rest. With the
shapes fixed, the whole chunk (normalization, encoder, every sampling step, unnormalization)
can be recorded once and replayed:

- ``mode="graph"``: a CUDA graph (torch.cuda.graphs); replay launches everything at once. Needs
  a CUDA device: elsewhere it says so once and runs eagerly.
- ``mode="compile"``: the network compiled with ``torch.compile`` (``reduce-overhead``, which
  replays each network call as a CUDA graph, on a GPU; inductor's default mode on a CPU); the
  sampler's few lines of Python between the calls stay eager.
- ``mode="eager"``: the plain policy, through the same fixed-shape path (the reference).

The sampler's noise is drawn into fixed buffers before each replay (:mod:`..noise`), in the
order the sampler consumes it, so for the same generator the actions equal
``policy.predict_action``'s. ``precision="bf16"`` runs the network under bfloat16 autocast.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

from ..noise import NoiseTape
from ..precision import autocast
from .diffusion_policy import sampler_options

MODES = ("eager", "compile", "graph")


class FixedShapeSampler:
    """``sampler(obs, generator=None) -> {"action": [B, Ta, Da], "action_pred": [B, H, Da]}``
    for raw observation histories ``{key: [B, To, *shape]}`` of exactly ``batch`` rows."""

    def __init__(
        self,
        policy,
        sampler: Any = None,
        batch: int = 1,
        mode: str = "graph",
        precision: str = "fp32",
        compile_backend: str | None = None,
    ) -> None:
        if mode not in MODES:
            raise ValueError(f"mode must be one of {list(MODES)}, got {mode!r}")
        self.policy = policy.eval()
        self.sc = sampler_options(sampler if sampler is not None else policy.sampler_cfg)
        self.batch, self.precision = int(batch), precision
        self.device = policy.device
        self.obs = {k: torch.zeros(shape, device=self.device) for k, shape in self._obs_shapes()}
        tape = NoiseTape(record_from=torch.Generator(device=self.device).manual_seed(0))
        self._chunk(tape)  # a dry run: which draws the sampler makes, in which order
        self.noise = [torch.empty_like(t) for t in tape.tensors]
        self.mode = self._usable(mode)
        self._out: Tensor | None = None
        self._run = self._build(compile_backend)

    def _obs_shapes(self):
        meta, To = self.policy.shape_meta["obs"], self.policy.window.n_obs_steps
        for key, m in meta.items():
            yield key, (self.batch, To, *m["shape"])

    def _usable(self, mode: str) -> str:
        if mode == "graph" and self.device.type != "cuda":
            warnings.warn(
                "CUDA graphs need a CUDA device; the fixed-shape sampler runs eagerly on "
                f"{self.device} (mode='compile' works on a CPU)",
                RuntimeWarning,
                stacklevel=3,
            )
            return "eager"
        return mode

    def _chunk(self, tape: NoiseTape) -> Tensor:
        with autocast(self.precision, self.device):
            out = self.policy.predict_action(self.obs, sampler=self.sc, generator=tape)
        return out["action_pred"].float()

    def _replay_chunk(self) -> Tensor:
        return self._chunk(NoiseTape(self.noise))

    def _build(self, backend: str | None):
        if self.mode == "compile":
            kw = {"backend": backend} if backend else {}
            if self.device.type == "cuda" and not backend:
                kw["mode"] = "reduce-overhead"
            compiled = torch.compile(self.policy.denoiser.net, dynamic=False, **kw)
            return lambda: self._with_net(compiled)
        if self.mode == "graph":
            return self._capture()
        return self._replay_chunk

    def _with_net(self, net) -> Tensor:
        """One chunk with ``net`` standing in for the policy's network."""
        denoiser = self.policy.denoiser
        plain, denoiser.net = denoiser.net, net
        try:
            return self._replay_chunk()
        finally:
            denoiser.net = plain

    def _capture(self):
        stream = torch.cuda.Stream(self.device)
        stream.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(stream), torch.no_grad():
            for _ in range(3):  # warm-up: allocations and kernel choices before capture
                self._replay_chunk()
        torch.cuda.current_stream(self.device).wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph), torch.no_grad():
            self._out = self._replay_chunk()

        def replay() -> Tensor:
            graph.replay()
            return self._out

        return replay

    @torch.no_grad()
    def __call__(
        self, obs: Mapping[str, Any], generator: torch.Generator | None = None
    ) -> dict[str, Tensor]:
        for key, buf in self.obs.items():
            value = torch.as_tensor(obs[key])
            if tuple(value.shape) != tuple(buf.shape):
                raise ValueError(
                    f"observation {key!r} has shape {tuple(value.shape)}; this fixed-shape "
                    f"sampler was built for {tuple(buf.shape)}"
                )
            buf.copy_(value, non_blocking=True)
        for buf in self.noise:  # in the order the sampler draws them
            buf.normal_(generator=generator)
        pred = self._run().clone()
        return {"action": self.policy.window.executed(pred), "action_pred": pred}
