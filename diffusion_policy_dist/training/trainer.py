"""The one training loop, for every policy and task.

AdamW, linear warmup + cosine LR, EMA, gradient clipping, periodic validation loss, a tqdm
progress bar, JSONL metrics (TensorBoard when installed), atomic checkpoints, and exact resume:
the batch order is a pure function of (seed, epoch, batch index), and the optimizer, LR
schedule, EMA, global RNGs and counters are all restored, so an interrupted run continues to
bit-identical parameters.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import math
import signal
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from .. import shard
from ..models.ema import EMA
from ..policy.config import build_config
from ..precision import autocast
from .batches import EpochBatches, batch_loader
from .budget import WallClockBudget
from .checkpoint import (
    CheckpointError,
    capture_rng,
    load_checkpoint,
    resolve_checkpoint,
    restore_rng,
    save_checkpoint,
)
from .config import TrainConfig
from .cost import train_step_flops
from .distributed import World
from .resume import SETTINGS, check_same_run, check_same_settings, new_total


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
        clock: Callable[[], float] = time.perf_counter,
        world: World | None = None,
    ) -> None:
        self.cfg = build_config(TrainConfig, cfg, "training")
        self._clock = clock  # seconds; injectable, so budgets are testable on a busy machine
        self.world = world or World()
        self.policy = policy.to(device)
        # read from the policy itself, never from a DDP wrapper (which would hide it)
        self.rows_per_example = int(getattr(policy, "samples_per_example", 1))
        self.batch_size = self.cfg.examples_per_step(self.rows_per_example)
        self.device = torch.device(device)
        self.train_set, self.val_set = train_set, val_set
        self.output_dir = Path(output_dir)
        self.meta, self.config = dict(meta or {}), dict(config or {})
        self.seed = seed
        self.order = EpochBatches(len(train_set), self.batch_size, seed, *self._shard())
        self.model = self._wrap(self.policy)
        params = [p for p in policy.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(
            params, lr=self.cfg.lr, betas=self.cfg.betas, weight_decay=self.cfg.weight_decay
        )
        self.total_steps = self.cfg.steps
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer,
            lambda s: _lr_factor(s, self._warmup(), self.total_steps, self.cfg.lr_schedule),
        )
        self.ema = (
            EMA(policy, power=self.cfg.ema_power, max_decay=self.cfg.ema_max_decay)
            if self.cfg.ema
            else None
        )
        self.step, self.epoch, self.batch_in_epoch = 0, 0, 0
        self.elapsed_s = 0.0
        self.stop_signal: int | None = None
        self._tb = None
        budget_s = self.cfg.time_budget_s
        self.budget = WallClockBudget(budget_s) if budget_s is not None else None
        self.flops_per_step: int | None = None  # counted on the first batch of fit()

    def _shard(self) -> tuple[int, int]:
        """(rank, world size); the global batch must split evenly over the processes."""
        w = self.world
        if w.active:
            if self.cfg.time_budget_s is not None:
                raise ValueError(
                    "training.time_budget_s reads each process's own clock, so processes could "
                    "disagree on the step count; give training.steps with several processes"
                )
            global_batch = min(self.batch_size, len(self.train_set))
            if global_batch % w.size:
                raise ValueError(
                    f"training.batch_size={global_batch} is the global batch and must split "
                    f"evenly over the {w.size} processes (per process: batch_size / {w.size})"
                )
        return w.rank, w.size

    def _wrap(self, policy: nn.Module) -> nn.Module:
        """What the training step calls: the policy, or DDP around it with several processes
        (DDP averages the gradients of the processes' shares)."""
        if not self.world.active:
            return policy
        from torch.nn.parallel import DistributedDataParallel

        ids = [self.device] if self.device.type == "cuda" else None
        return DistributedDataParallel(policy, device_ids=ids, broadcast_buffers=False)

    def _warmup(self) -> int:
        """Warmup steps: ``warmup_steps``, else ``warmup_fraction`` of the run's total."""
        if self.cfg.warmup_steps is not None:
            return self.cfg.warmup_steps
        return round(self.cfg.warmup_fraction * self.total_steps)

    @property
    def rows_per_step(self) -> int:
        """Network rows per optimizer step: examples x generator samples per example."""
        return self.order.batch_size * self.rows_per_example

    # ------------------------------------------------------------------ checkpoints
    @property
    def checkpoint_dir(self) -> Path:
        return self.output_dir / "checkpoints" / "latest"

    def save(self, path: Path | None = None) -> Path:
        """Write a checkpoint (rank 0 only; every rank returns its path)."""
        path = path or self.checkpoint_dir
        if not self.world.is_main:
            return path
        model = self.policy
        meta = dict(self.meta)
        meta.update(
            batch_size=self.order.batch_size,
            world_size=self.world.size,
            rows_per_step=self.rows_per_step,
            step=self.step,
            epoch=self.epoch,
            total_steps=self.total_steps,
            train_wallclock_s=round(self.elapsed_s, 3),
            peak_memory_mb=round(peak_memory_mb(self.device), 1),
            precision=self.cfg.precision,
            train_flops_per_step=(self.flops_per_step or 0) * self.world.size or None,
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
            "train_config": self._settings(),
        }
        norm = getattr(model, "normalizer", None)
        return save_checkpoint(
            path,
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
        check_same_run(path, self.meta, ckpt.meta)
        ts = ckpt.training_state()
        if ts is None:
            raise CheckpointError(f"cannot resume from {path}: it has no training_state/")
        check_same_settings(path, ts.get("train_config"), self._settings())
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
        budgeted = self.cfg.time_budget_s is not None
        self.total_steps = new_total(path, self.cfg.steps, self.total_steps, self.step, budgeted)
        print(f"resumed from {path} at step {self.step}/{self.total_steps}", file=sys.stderr)
        return True

    def _settings(self) -> dict[str, Any]:
        c = self.cfg
        out = {k: getattr(c, k) for k in SETTINGS}
        out.update(batch_size=self.order.batch_size, warmup_steps=self._warmup(), seed=self.seed)
        return out

    # ------------------------------------------------------------------ logging
    @property
    def metrics_path(self) -> Path:
        return self.output_dir / "metrics.jsonl"

    def _truncate_metrics(self, step: int) -> None:
        """Drop metric lines logged after the checkpoint we resume from (they will be redone)."""
        if not self.world.is_main or not self.metrics_path.exists():
            return
        keep = [
            line
            for line in self.metrics_path.read_text().splitlines()
            if line.strip() and json.loads(line).get("step", 0) <= step
        ]
        self.metrics_path.write_text("".join(line + "\n" for line in keep))

    def _log(self, record: dict[str, Any]) -> None:
        if not self.world.is_main:
            return
        with open(self.metrics_path, "a") as f:
            f.write(json.dumps(record) + "\n")
        if self._tb is not None:
            for k, v in record.items():
                if k != "step" and isinstance(v, (int, float)):
                    self._tb.add_scalar(k, v, record["step"])

    def _open_tensorboard(self) -> None:
        if not self.world.is_main:
            return
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
        if self.val_set is None or len(self.val_set) == 0 or not self.world.is_main:
            return {}
        model = self.ema.module if self.ema is not None else self.policy
        was_training = model.training
        model.eval()
        order = EpochBatches(len(self.val_set), self.batch_size, self.seed + 1)
        sums: dict[str, float] = {}
        n = min(self.cfg.val_batches, order.per_epoch)
        with torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []):
            torch.manual_seed(self.seed + 12345)
            for i in range(n):
                with autocast(self.cfg.precision, self.device):
                    _, info = model(self.val_set[order.indices(0, i)])
                for k, v in info.items():
                    sums[k] = sums.get(k, 0.0) + v / n
        model.train(was_training)
        return {f"val_{k}": v for k, v in sums.items()}

    # ------------------------------------------------------------------ loop
    def _stopping(self) -> bool:
        """Whether to stop now: a signal reached this process or (all agree) any other one."""
        signum = self.world.max(self.stop_signal or 0)
        if signum and self.stop_signal is None:
            self.stop_signal = signum
        return bool(signum)

    def _request_stop(self, signum, frame) -> None:
        """SIGTERM or a first Ctrl-C: finish the current step, checkpoint, return. A second
        Ctrl-C interrupts at once (the last periodic checkpoint is still intact)."""
        if self.stop_signal is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.stop_signal = signum
        print(
            f"\nstopping after step {self.step + 1}: saving a checkpoint "
            "(Ctrl-C again to abort without it)",
            file=sys.stderr,
        )

    @contextlib.contextmanager
    def _signals_stop(self):
        """SIGTERM and SIGINT end the run cleanly (unless the process was started with them
        ignored, e.g. in the background, which is respected)."""
        old = {}
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                if signal.getsignal(sig) is not signal.SIG_IGN:
                    old[sig] = signal.signal(sig, self._request_stop)
            except ValueError:  # not the main thread: no signal handling
                pass
        try:
            yield
        finally:
            for sig, handler in old.items():
                signal.signal(sig, handler)

    def _progress_bar(self):
        return tqdm(
            total=self.total_steps,
            initial=self.step,
            desc="train",
            dynamic_ncols=True,
            disable=not (self.cfg.progress and self.world.is_main),
            mininterval=0.5 if sys.stderr.isatty() else 10.0,
        )

    def _train_step(self, batch) -> dict[str, float]:
        t0 = self._clock()
        with shard.batch_shard(self.world.rank, self.world.size):
            with autocast(self.cfg.precision, self.device):
                loss, info = self.model(batch)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"loss became {loss.item()} at step {self.step}; info={info}")
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = float("nan")
        if self.cfg.grad_clip is not None:
            grad_norm = float(
                nn.utils.clip_grad_norm_(self.policy.parameters(), self.cfg.grad_clip)
            )
        self.optimizer.step()
        self.scheduler.step()
        if self.ema is not None:
            self.ema.update(self.policy)
        self.step += 1
        self.batch_in_epoch += 1
        if self.batch_in_epoch == self.order.per_epoch:
            self.epoch, self.batch_in_epoch = self.epoch + 1, 0
        self.elapsed_s += self._clock() - t0
        return {**info, "grad_norm": grad_norm}

    def _after_step(self, info: dict[str, float], bar) -> dict[str, float]:
        """Budget, logging, validation and periodic checkpoints; returns the latest values."""
        cfg, last = self.cfg, dict(info)
        if self.budget is not None and self.budget.due(self.step, self.total_steps, self.elapsed_s):
            self.total_steps = self.budget.total_steps(self.step, self.elapsed_s)
            bar.total = self.total_steps
        if self.step % cfg.log_every == 0 or self.step == self.total_steps:
            self._log_train(info)
        if cfg.val_every and (self.step % cfg.val_every == 0 or self.step == self.total_steps):
            val = self.validate()
            if val:
                self._log({"step": self.step, **val})
                last.update(val)
        if self.step % cfg.checkpoint_every == 0 and self.step < self.total_steps:
            self.save()
            if cfg.keep_every and self.step % cfg.keep_every == 0:
                self.save(self.output_dir / "checkpoints" / f"step_{self.step:07d}")
        bar.update(1)
        bar.set_postfix(loss=f"{info['loss']:.4f}", refresh=False)
        return last

    def _log_train(self, info: dict[str, float]) -> None:
        info = self.world.mean(info)  # the global batch's values (a collective: every rank)
        now = self._clock()
        steps = self.step - self._log_ref[0]
        rec = {
            "step": self.step,
            "epoch": self.epoch,
            "lr": self.scheduler.get_last_lr()[0],
            "steps_per_s": steps / max(now - self._log_ref[1], 1e-9),
            "rows": self.step * self.rows_per_step,
            "train_flops": self.step * (self.flops_per_step or 0) * self.world.size,
            "train_wallclock_s": round(self.elapsed_s, 3),
            **info,
        }
        self._log(rec)
        self._log_ref = (self.step, now)

    def fit(self, callback: Callable[[Trainer], None] | None = None) -> dict[str, Any]:
        """Train until ``total_steps`` (or the wall-clock budget, or SIGINT/SIGTERM: then
        ``stop_signal`` is set). Saves a final checkpoint and returns a summary dict."""
        self.output_dir.mkdir(parents=True, exist_ok=True)
        self.try_resume()
        # lines a killed run logged after its last checkpoint (or before its first) are redone
        self._truncate_metrics(self.step)
        self._open_tensorboard()
        start = (self.epoch, self.batch_in_epoch)
        pin = self.device.type == "cuda"
        it = iter(
            batch_loader(self.train_set, self.order, self.cfg.num_workers, self.seed, pin, start)
        )
        self.policy.train()
        first = next(it)
        self.flops_per_step = train_step_flops(self.policy, first, self.cfg.precision)
        it = itertools.chain([first], it)
        self._log_ref = (self.step, self._clock())
        last: dict[str, float] = {"loss": float("nan")}
        try:
            with self._signals_stop(), self._progress_bar() as bar:
                while self.step < self.total_steps and not self._stopping():
                    last = self._after_step(self._train_step(next(it)), bar)
                    if callback is not None:
                        callback(self)
                path = self.save()
                self.world.barrier()  # nobody leaves before the checkpoint is written
        finally:
            if self._tb is not None:
                self._tb.close()
        return {
            "step": self.step,
            "checkpoint": str(path),
            "train_wallclock_s": self.elapsed_s,
            "stopped_early": self.stop_signal is not None,
            "stop_signal": self.stop_signal,
            **last,
        }


def peak_memory_mb(device: torch.device) -> float:
    """Peak memory of training so far: the CUDA allocator's peak on a GPU, else the process's
    peak resident set (run each training in its own process to compare runs)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
