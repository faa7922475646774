"""The one training loop, for every policy and task.

AdamW, linear warmup + cosine LR, EMA, gradient clipping, periodic validation loss, a tqdm
progress bar, JSONL metrics (TensorBoard when installed), atomic checkpoints, and exact resume:
the batch order is a pure function of (seed, epoch, batch index), and the optimizer, LR
schedule, EMA, global RNGs and counters are all restored, so an interrupted run continues to
bit-identical parameters.
"""

from __future__ import annotations

import json
import math
import signal
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from ..models.ema import EMA
from ..policy.config import from_dict
from .checkpoint import (
    CheckpointError,
    capture_rng,
    load_checkpoint,
    resolve_checkpoint,
    restore_rng,
    save_checkpoint,
)


@dataclass
class TrainConfig:
    steps: int = 2000
    batch_size: int = 256
    lr: float = 1e-3
    weight_decay: float = 1e-6
    betas: tuple[float, float] = (0.95, 0.999)
    warmup_steps: int = 100
    lr_schedule: str = "cosine"
    grad_clip: float | None = 1.0
    ema: bool = True
    ema_power: float = 0.75
    ema_max_decay: float = 0.9999
    val_every: int = 250
    val_batches: int = 4
    log_every: int = 25
    checkpoint_every: int = 500
    keep_every: int | None = None
    num_workers: int = 0
    time_budget_s: float | None = None
    resume: str = "auto"
    progress: bool = True

    def __post_init__(self) -> None:
        self.betas = tuple(self.betas)
        if self.steps < 1 and self.time_budget_s is None:
            raise ValueError(f"training.steps must be >= 1, got {self.steps}")
        if self.batch_size < 1:
            raise ValueError(f"training.batch_size must be >= 1, got {self.batch_size}")
        if self.lr_schedule not in ("cosine", "constant"):
            raise ValueError(
                f"training.lr_schedule must be cosine or constant, got {self.lr_schedule!r}"
            )
        if self.resume not in ("auto", "always", "never"):
            raise ValueError(f"training.resume must be auto, always or never, got {self.resume!r}")


class EpochBatches:
    """Batch ``i`` of epoch ``e`` is a pure function of (seed, e, i): a resumable data order."""

    def __init__(self, n: int, batch_size: int, seed: int) -> None:
        self.n, self.seed = n, seed
        self.batch_size = min(batch_size, n)
        self.per_epoch = max(1, n // self.batch_size)

    def indices(self, epoch: int, i: int) -> np.ndarray:
        perm = np.random.default_rng([self.seed, epoch]).permutation(self.n)
        return perm[i * self.batch_size : (i + 1) * self.batch_size]


class _BatchStream(torch.utils.data.IterableDataset):
    """Yields batches from (epoch, i) onwards; batch fetching runs in DataLoader workers."""

    def __init__(self, dataset, order: EpochBatches, epoch: int, i: int) -> None:
        self.dataset, self.order, self.epoch, self.i = dataset, order, epoch, i

    def __iter__(self):
        info = torch.utils.data.get_worker_info()
        wid, nw = (info.id, info.num_workers) if info else (0, 1)
        e, i = self.epoch, self.i
        k = 0
        while True:
            if k % nw == wid:
                yield self.dataset[self.order.indices(e, i)]
            k += 1
            i += 1
            if i == self.order.per_epoch:
                e, i = e + 1, 0


def batch_loader(
    dataset,
    order: EpochBatches,
    num_workers: int,
    seed: int,
    pin_memory: bool = False,
    start: tuple[int, int] = (0, 0),
) -> torch.utils.data.DataLoader:
    """An endless loader of whole batches in ``order`` from (epoch, batch) ``start`` on; with
    ``num_workers`` > 0 the batches are gathered in worker processes, 4 ahead per worker."""
    return torch.utils.data.DataLoader(
        _BatchStream(dataset, order, *start),
        batch_size=None,
        num_workers=num_workers,
        pin_memory=pin_memory,
        persistent_workers=False,
        prefetch_factor=4 if num_workers > 0 else None,
        # its own generator: creating the iterator must not draw from the global RNG,
        # or a resumed run's noise stream would be shifted by one draw
        generator=torch.Generator().manual_seed(seed),
    )


def _lr_factor(step: int, warmup: int, total: int, kind: str) -> float:
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    if kind == "constant":
        return 1.0
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return 0.5 * (1.0 + math.cos(math.pi * progress))


class Trainer:
    """Trains ``policy`` (any module with ``forward(batch) -> (loss, info)``) on ``train_set``.

    ``meta`` and ``config`` are stored in every checkpoint so evaluation can rebuild the policy
    and its environment from the checkpoint alone.
    """

    def __init__(
        self,
        policy: nn.Module,
        train_set,
        cfg: TrainConfig | Mapping,
        output_dir: str | Path,
        val_set=None,
        meta: Mapping[str, Any] | None = None,
        config: Mapping[str, Any] | None = None,
        seed: int = 0,
        device: str | torch.device = "cpu",
    ) -> None:
        self.cfg = from_dict(TrainConfig, cfg, "training")
        self.policy = policy.to(device)
        self.device = torch.device(device)
        self.train_set, self.val_set = train_set, val_set
        self.output_dir = Path(output_dir)
        self.meta, self.config = dict(meta or {}), dict(config or {})
        self.seed = seed
        self.order = EpochBatches(len(train_set), self.cfg.batch_size, seed)
        params = [p for p in policy.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(
            params, lr=self.cfg.lr, betas=self.cfg.betas, weight_decay=self.cfg.weight_decay
        )
        self.total_steps = self.cfg.steps
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer,
            lambda s: _lr_factor(s, self.cfg.warmup_steps, self.total_steps, self.cfg.lr_schedule),
        )
        self.ema = (
            EMA(policy, power=self.cfg.ema_power, max_decay=self.cfg.ema_max_decay)
            if self.cfg.ema
            else None
        )
        self.step, self.epoch, self.batch_in_epoch = 0, 0, 0
        self.elapsed_s = 0.0
        self._stop_requested = False
        self._tb = None
        self._budget_marks: set[int] = set()
        self._budget_ref = (0, 0.0)  # (step, elapsed_s) at the last budget estimate

    # ------------------------------------------------------------------ checkpoints
    @property
    def checkpoint_dir(self) -> Path:
        return self.output_dir / "checkpoints" / "latest"

    def save(self, path: Path | None = None) -> Path:
        model = self.policy
        meta = dict(self.meta)
        meta.update(
            step=self.step,
            epoch=self.epoch,
            total_steps=self.total_steps,
            train_wallclock_s=round(self.elapsed_s, 3),
            peak_memory_mb=round(peak_memory_mb(self.device), 1),
        )
        state = {
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "rng": capture_rng(),
            "step": self.step,
            "epoch": self.epoch,
            "batch_in_epoch": self.batch_in_epoch,
            "total_steps": self.total_steps,
            "elapsed_s": self.elapsed_s,
            "ema_step": self.ema.step if self.ema else None,
            "seed": self.seed,
        }
        norm = getattr(model, "normalizer", None)
        return save_checkpoint(
            path or self.checkpoint_dir,
            model_state=model.state_dict(),
            ema_state=self.ema.state_dict() if self.ema else None,
            meta=meta,
            config=self.config,
            normalizer_stats=norm.stats() if norm is not None else None,
            training_state=state,
        )

    def try_resume(self) -> bool:
        """Restore everything from ``output_dir``'s latest checkpoint (per ``cfg.resume``)."""
        if self.cfg.resume == "never":
            return False
        try:
            path = resolve_checkpoint(self.output_dir)
        except CheckpointError:
            if self.cfg.resume == "always":
                raise
            return False
        ckpt = load_checkpoint(path)
        for key in ("shape_meta", "window", "policy"):
            if (
                key in self.meta
                and key in ckpt.meta
                and _canon(self.meta[key]) != _canon(ckpt.meta[key])
            ):
                raise CheckpointError(
                    f"cannot resume from {path}: its {key} differs from this run's.\n"
                    f"  checkpoint: {ckpt.meta[key]}\n  this run:   {self.meta[key]}\n"
                    "Use a new output_dir, or training.resume=never to start over."
                )
        ts = ckpt.training_state()
        if ts is None:
            raise CheckpointError(f"cannot resume from {path}: it has no training_state/")
        self.policy.load_state_dict(ckpt.model_state)
        if self.ema is not None and ckpt.ema_state is not None:
            self.ema.load_state_dict(ckpt.ema_state, ts.get("ema_step") or 0)
        self.optimizer.load_state_dict(ts["optimizer"])
        self.total_steps = int(ts["total_steps"])
        self.scheduler.load_state_dict(ts["scheduler"])
        self.step, self.epoch = int(ts["step"]), int(ts["epoch"])
        self.batch_in_epoch = int(ts["batch_in_epoch"])
        self.elapsed_s = float(ts.get("elapsed_s", 0.0))
        restore_rng(*ts["rng"])
        self._truncate_metrics(self.step)
        print(f"resumed from {path} at step {self.step}/{self.total_steps}", file=sys.stderr)
        return True

    # ------------------------------------------------------------------ logging
    @property
    def metrics_path(self) -> Path:
        return self.output_dir / "metrics.jsonl"

    def _truncate_metrics(self, step: int) -> None:
        """Drop metric lines logged after the checkpoint we resume from (they will be redone)."""
        if not self.metrics_path.exists():
            return
        keep = [
            line
            for line in self.metrics_path.read_text().splitlines()
            if line.strip() and json.loads(line).get("step", 0) <= step
        ]
        self.metrics_path.write_text("".join(line + "\n" for line in keep))

    def _log(self, record: dict[str, Any]) -> None:
        with open(self.metrics_path, "a") as f:
            f.write(json.dumps(record) + "\n")
        if self._tb is not None:
            for k, v in record.items():
                if k != "step" and isinstance(v, (int, float)):
                    self._tb.add_scalar(k, v, record["step"])

    def _open_tensorboard(self) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except Exception:  # tensorboard is an optional extra
            return
        self._tb = SummaryWriter(str(self.output_dir / "tensorboard"))

    # ------------------------------------------------------------------ validation
    @torch.no_grad()
    def validate(self) -> dict[str, float]:
        """Mean loss over fixed validation batches, with fixed noise, without touching the
        training RNG streams."""
        if self.val_set is None or len(self.val_set) == 0:
            return {}
        model = self.ema.module if self.ema is not None else self.policy
        was_training = model.training
        model.eval()
        order = EpochBatches(len(self.val_set), self.cfg.batch_size, self.seed + 1)
        sums: dict[str, float] = {}
        n = min(self.cfg.val_batches, order.per_epoch)
        with torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []):
            torch.manual_seed(self.seed + 12345)
            for i in range(n):
                _, info = model(self.val_set[order.indices(0, i)])
                for k, v in info.items():
                    sums[k] = sums.get(k, 0.0) + v / n
        model.train(was_training)
        return {f"val_{k}": v for k, v in sums.items()}

    # ------------------------------------------------------------------ loop
    def _request_stop(self, signum, frame) -> None:
        """SIGTERM or a first Ctrl-C: finish the current step, checkpoint, return. A second
        Ctrl-C interrupts at once (the last periodic checkpoint is still intact)."""
        if self._stop_requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self._stop_requested = True
        print(
            f"\nstopping after step {self.step + 1}: saving a checkpoint "
            "(Ctrl-C again to abort without it)",
            file=sys.stderr,
        )

    def fit(self, callback: Callable[[Trainer], None] | None = None) -> dict[str, Any]:
        """Train until ``total_steps`` (or the wall-clock budget). Returns a summary dict."""
        self.output_dir.mkdir(parents=True, exist_ok=True)
        self.try_resume()
        self._open_tensorboard()
        cfg = self.cfg
        it = iter(
            batch_loader(
                self.train_set,
                self.order,
                cfg.num_workers,
                self.seed,
                pin_memory=self.device.type == "cuda",
                start=(self.epoch, self.batch_in_epoch),
            )
        )
        old_handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
        try:
            for sig in old_handlers:
                signal.signal(sig, self._request_stop)
        except ValueError:  # not the main thread
            old_handlers = {}
        self.policy.train()
        bar = tqdm(
            total=self.total_steps,
            initial=self.step,
            desc="train",
            dynamic_ncols=True,
            disable=not cfg.progress,
            mininterval=0.5 if sys.stderr.isatty() else 10.0,
        )
        last = {"loss": float("nan")}
        t_log = time.perf_counter()
        steps_since_log = 0
        try:
            while self.step < self.total_steps and not self._stop_requested:
                t0 = time.perf_counter()
                batch = next(it)
                loss, info = self.policy(batch)
                if not torch.isfinite(loss):
                    raise FloatingPointError(
                        f"loss became {loss.item()} at step {self.step}; info={info}"
                    )
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                grad_norm = float("nan")
                if cfg.grad_clip is not None:
                    grad_norm = float(
                        nn.utils.clip_grad_norm_(self.policy.parameters(), cfg.grad_clip)
                    )
                self.optimizer.step()
                self.scheduler.step()
                if self.ema is not None:
                    self.ema.update(self.policy)
                self.step += 1
                self.batch_in_epoch += 1
                if self.batch_in_epoch == self.order.per_epoch:
                    self.epoch, self.batch_in_epoch = self.epoch + 1, 0
                self.elapsed_s += time.perf_counter() - t0
                steps_since_log += 1
                last = info
                if cfg.time_budget_s is not None and (
                    self.step == min(10, self.total_steps)
                    or self.step in self._budget_marks
                    or self.elapsed_s >= cfg.time_budget_s
                ):
                    self._fit_budget()
                    bar.total = self.total_steps
                if self.step % cfg.log_every == 0 or self.step == self.total_steps:
                    now = time.perf_counter()
                    rec = {
                        "step": self.step,
                        "epoch": self.epoch,
                        "lr": self.scheduler.get_last_lr()[0],
                        "grad_norm": grad_norm,
                        "steps_per_s": steps_since_log / max(now - t_log, 1e-9),
                        "train_wallclock_s": round(self.elapsed_s, 3),
                        **info,
                    }
                    self._log(rec)
                    t_log, steps_since_log = now, 0
                if cfg.val_every and (
                    self.step % cfg.val_every == 0 or self.step == self.total_steps
                ):
                    val = self.validate()
                    if val:
                        self._log({"step": self.step, **val})
                        last = {**last, **val}
                if self.step % cfg.checkpoint_every == 0 and self.step < self.total_steps:
                    self.save()
                    if cfg.keep_every and self.step % cfg.keep_every == 0:
                        self.save(self.output_dir / "checkpoints" / f"step_{self.step:07d}")
                bar.update(1)
                bar.set_postfix(loss=f"{info['loss']:.4f}", refresh=False)
                if callback is not None:
                    callback(self)
            path = self.save()
        finally:
            bar.close()
            for sig, handler in old_handlers.items():
                signal.signal(sig, handler)
            if self._tb is not None:
                self._tb.close()
        return {
            "step": self.step,
            "checkpoint": str(path),
            "train_wallclock_s": self.elapsed_s,
            "stopped_early": self._stop_requested,
            **last,
        }

    def _fit_budget(self) -> None:
        """With a wall-clock budget, set the step count from the measured speed so the LR
        schedule still ends at zero. Re-estimated from the speed since the last estimate at
        25/50/75/90/95% of the run (so a machine that slows down mid-run still lands on the
        budget), and the run ends outright once the budget is spent. The count is saved in
        checkpoints, so a resumed run keeps it."""
        ref_step, ref_s = self._budget_ref
        if self.step > ref_step:
            per_step = (self.elapsed_s - ref_s) / (self.step - ref_step)
        else:
            per_step = self.elapsed_s / max(self.step, 1)
        left = self.cfg.time_budget_s - self.elapsed_s
        self.total_steps = self.step + max(0, int(left / max(per_step, 1e-9)))
        self._budget_ref = (self.step, self.elapsed_s)
        self._budget_marks = {
            m
            for m in (int(self.total_steps * f) for f in (0.25, 0.5, 0.75, 0.9, 0.95))
            if m > self.step
        }


def peak_memory_mb(device: torch.device) -> float:
    """Peak memory of training so far: the CUDA allocator's peak on a GPU, else the process's
    peak resident set (run each training in its own process to compare runs)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _canon(x: Any) -> str:
    return json.dumps(x, sort_keys=True, default=str)
