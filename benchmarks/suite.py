"""Experiment plumbing shared by ``dpd bench`` and ``dpd demo``: train through the one
``dpd train`` path (in a subprocess, so each run's peak memory is its own), evaluate many
samplers with one set of env workers, and report tables and plots.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from diffusion_policy_dist.provenance import header
from diffusion_policy_dist.stats import format_modes
from diffusion_policy_dist.training.checkpoint import read_meta

# model -> its policy preset (configs/policy/<name>.yaml)
POLICY_PRESETS = {"ddpm": "ddpm", "distributional": "distributional"}
POLICY_PRESETS |= {"psld_mean": "psld_mean", "psld_distributional": "psld_distributional"}
POLICY_PRESETS |= {"distributional_prefix": "distributional"}  # + policy.prefix_steps
PREFIX_STEPS = 8  # the committed prefix a real-time model is trained with (up to 8 steps)


def work_train_overrides(
    data: str | Path,
    model: str,
    network: str,
    steps: int,
    batch_rows: int,
    m: int,
    seed: int = 0,
    keep: int = 0,
    device: Any = "auto",
    progress: bool = True,
    threads: int | None = None,
    batch_size: int | None = None,
) -> list[str]:
    """``dpd train`` overrides for one model of a comparison. Every model gets ``steps``
    optimizer steps of either the same examples (``batch_size``; each model's compute per step
    is then counted in FLOPs and reported) or, with ``batch_size`` None, the same network rows
    (``batch_rows``; ``loss.m`` rows per example for a distributional model whose noise enters
    at the input). ``keep`` > 0 keeps that many checkpoints along the run (for the convergence
    curve)."""
    budget = (
        f"training.batch_size={batch_size}" if batch_size else f"training.batch_rows={batch_rows}"
    )
    out = [
        f"dataset.path={data}",
        f"policy={POLICY_PRESETS[model]}",
        f"network={network}",
        f"training.steps={steps}",
        budget,
        f"training.val_every={max(1, steps // 20)}",
        f"training.log_every={max(1, steps // 50)}",
        f"training.checkpoint_every={max(1, steps // max(keep, 1))}",
        f"seed={seed}",
        f"device={device}",
        f"training.progress={str(progress).lower()}",
    ]
    if keep:
        out.append(f"training.keep_every={max(1, steps // keep)}")
    if model in ("distributional", "psld_distributional", "distributional_prefix"):
        out.append(f"loss.m={m}")
    if model == "distributional_prefix":
        out.append(f"policy.prefix_steps={PREFIX_STEPS}")
    if threads:
        out.append(f"threads={threads}")
    return out


def val_losses(metrics_path: str | Path) -> list[tuple[int, float]]:
    """``(step, validation loss)`` of a run, from its metrics.jsonl."""
    import json

    lines = Path(metrics_path).read_text().splitlines()
    vals = [json.loads(x) for x in lines if "val_loss" in x]
    return [(v["step"], v["val_loss"]) for v in vals]


def still_falling(metrics_path: str | Path, tail: float = 0.25, rel: float = 0.05) -> float | None:
    """Relative drop of the validation loss over the last ``tail`` of a run, when it exceeds
    ``rel`` (the model is still learning: call it undertrained); None when it has flattened."""
    vals = val_losses(metrics_path)
    if len(vals) < 4:
        return None
    last_step, last_loss = vals[-1]
    early = [loss for step, loss in vals if step <= (1 - tail) * last_step]
    if not early:
        return None
    drop = (early[-1] - last_loss) / max(abs(early[-1]), 1e-12)
    return drop if drop > rel else None


class TrainingStopped(RuntimeError):
    """A signal stopped a benchmark while it trained; the run saved a resumable checkpoint."""

    def __init__(self, signum: int, output_dir: str | Path) -> None:
        super().__init__(f"stopped by signal {signum}; {output_dir} resumes where it stopped")
        self.signum = signum


_CHILDREN: set[subprocess.Popen] = set()  # trainings running now (any thread's)


@contextlib.contextmanager
def forwarding_signals() -> Iterator[list[int]]:
    """In the main thread: SIGTERM/SIGINT go on to every running training (each in its own
    session, so a terminal's Ctrl-C reaches it only this way, once per press); yields the list
    of signals received. Elsewhere (a worker thread) it does nothing: the main thread forwards."""
    import signal
    import threading

    received: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield received
        return

    def forward(signum, frame):
        received.append(signum)
        for proc in list(_CHILDREN):
            proc.send_signal(signum)

    old = {sig: signal.signal(sig, forward) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield received
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)


def flatten_step(points: Sequence[tuple[int, float]], episodes: int) -> int | None:
    """The earliest checkpoint step from which every later value (success or a score in [0, 1],
    from ``episodes`` validation episodes) lies in the 95% Wilson interval of the final one;
    None with fewer than two points. For a score the binomial variance p(1 - p) bounds the
    variance of any [0, 1] value with mean p, so the interval is conservative."""
    from diffusion_policy_dist.stats import wilson_interval

    pts = sorted(points)
    if len(pts) < 2:
        return None
    lo, hi = wilson_interval(pts[-1][1] * episodes, episodes)
    first = len(pts) - 1
    while first > 0 and lo - 1e-9 <= pts[first - 1][1] <= hi + 1e-9:
        first -= 1
    return pts[first][0]


def train_run(
    overrides: Sequence[str], output_dir: str | Path, quiet: bool = False
) -> dict[str, Any]:
    """``dpd train <overrides> output_dir=<dir>`` in a subprocess; returns the checkpoint's meta.

    A finished run in ``output_dir`` is reused (the trainer resumes and stops at once), so an
    interrupted benchmark continues where it stopped. SIGTERM or Ctrl-C to this process goes on
    to the training, which saves a checkpoint; then :class:`TrainingStopped` is raised (no
    orphaned training is left behind).
    """
    cmd = [
        sys.executable,
        "-m",
        "diffusion_policy_dist.cli.main",
        "train",
        *overrides,
        f"output_dir={output_dir}",
    ]
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    out = subprocess.DEVNULL if quiet else None
    err = subprocess.PIPE if quiet else None
    with forwarding_signals() as received:
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=err, text=True,
                                start_new_session=True)  # fmt: skip
        _CHILDREN.add(proc)
        try:
            _, stderr = proc.communicate()
        finally:
            _CHILDREN.discard(proc)
    if received or proc.returncode in (130, 143):  # a signal stopped it (here or forwarded)
        raise TrainingStopped(received[0] if received else proc.returncode - 128, output_dir)
    if proc.returncode != 0:
        tail = (stderr or "")[-2000:] if quiet else ""
        raise RuntimeError(f"training failed ({' '.join(cmd)}):\n{tail}")
    return read_meta(output_dir)


def train_many(jobs: int, runs: Sequence[tuple[Sequence[str], str | Path]], quiet=False) -> list:
    """:func:`train_run` for each ``(overrides, output_dir)``, ``jobs`` at a time (each its own
    process; give them a torch thread each); a signal reaches every running training."""
    import concurrent.futures as cf

    def start(overrides: Sequence[str], out: str | Path) -> dict[str, Any] | None:
        # after a signal the runs still queued never start (they would outlive it)
        return None if received else train_run(overrides, out, quiet)

    with forwarding_signals() as received, cf.ThreadPoolExecutor(max(1, jobs)) as ex:
        futures = [ex.submit(start, o, d) for o, d in runs]
        results = [f.result() for f in futures]
    if received:
        raise TrainingStopped(received[0], "the benchmark's work folder")
    return results


def method_name(sampler: Mapping[str, Any]) -> str:
    """A results row's method: the sampler's kind (with the churn for distributional)."""
    m = sampler["kind"]
    if m == "distributional":
        return f"distributional (churn {sampler.get('churn', 0.0):g})"
    return m


def results_header(command: str | None, device: Any, **settings: Any) -> dict[str, Any]:
    """The provenance header of a benchmark results file (see :mod:`..provenance`)."""
    return {**header(command, device), **settings}


def result_row(task: str, model: str, res: Mapping[str, Any], **extra: Any) -> dict[str, Any]:
    """One benchmark row (the keys of the results contract, plus context: ``extra`` such as the
    training seed or a prior's alpha)."""
    s = res["sampler"]
    return {
        **extra,
        "task": task,
        "method": method_name(s),
        "model": model,
        "nfe": res["nfe"],
        "churn": s.get("churn"),
        "lam": s.get("lam"),
        "success_rate": res["success_rate"],
        "success_ci95": res["success_ci95"],
        "mode_freq": res["mode_freq"],
        "latency_ms_p50": res["latency_ms_p50"],
        "latency_ms_p95": res["latency_ms_p95"],
        "latency_over_forward": res["latency_over_forward"],
        "forward_ms_p50": res["forward_ms_p50"],
        "control_rate_hz": res["control_rate_hz"],
        "episodes": res["episodes"],
        "crashed": res["crashed"],
        "successes": res["successes"],
        "mean_score": res.get("mean_score"),
        "prior_ms_p50": res.get("prior_ms_p50"),
    }


def markdown_table(
    rows: Sequence[Mapping[str, Any]], demo_modes: Mapping[str, float] | None
) -> str:
    head = (
        "| method | NFE | success (95% CI) | modes of successes | latency p50 / p95 (ms) "
        "| x forward | control rate (actions/s) |"
    )
    lines = [head, "|---|---|---|---|---|---|---|"]
    for r in rows:
        lo, hi = r["success_ci95"]
        opts = ""
        if r.get("lam") is not None:
            opts = f" (lam {r['lam']:g})"
        modes = format_modes(r.get("mode_freq"))
        lines.append(
            f"| {r['method']}{opts} | {r['nfe']} | {r['success_rate']:.0%} ({lo:.0%}-{hi:.0%}) | "
            f"{modes} | {r['latency_ms_p50']:.1f} / {r['latency_ms_p95']:.1f} | "
            f"{r['latency_over_forward']:.2f} | {r['control_rate_hz']:.0f} |"
        )
    if demo_modes:
        lines.append("")
        lines.append("Demonstrations' modes: " + format_modes(demo_modes))
    return "\n".join(lines)


STYLE = {
    "distributional (churn 0)": ("tab:blue", "o", "-"),
    "distributional (churn 1)": ("tab:cyan", "s", "--"),
    "ddim": ("tab:orange", "^", "-"),
    "dpmpp_2m": ("tab:green", "D", "-"),
    "conjugate": ("tab:red", "v", "-."),
    "ddpm": ("black", "*", ""),
}


def _lines(rows: Sequence[Mapping[str, Any]]) -> dict[str, list[Mapping[str, Any]]]:
    """One line per label (model, sampler and variant; the method in files of version 0.1),
    its rows by NFE."""
    lines: dict[str, list[Mapping[str, Any]]] = {}
    for r in rows:
        lines.setdefault(r.get("label") or r["method"], []).append(r)
    return {k: sorted(v, key=lambda r: r["nfe"]) for k, v in lines.items()}


def _style(label: str, method: str) -> tuple[str, str, str]:
    """A method's colour, marker and line style; phase-space lines are gray, so they are not
    taken for the VP model's lines of the same method."""
    return STYLE.get(method if "psld" not in label else label, ("gray", "o", "-"))


def plot_results(rows: Sequence[Mapping[str, Any]], path: str | Path, title: str) -> Path:
    """Success vs NFE (with 95% CIs) and latency vs NFE, one line per method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
    for m, rs in _lines(rows).items():
        color, marker, ls = _style(m, rs[0]["method"])
        big = rs[0]["method"] == "ddpm"
        x = [r["nfe"] for r in rs]
        y = [r["success_rate"] for r in rs]
        # clamped: at 0% or 100% the interval's end can differ from the rate by rounding
        err = [
            [max(0.0, r["success_rate"] - r["success_ci95"][0]) for r in rs],
            [max(0.0, r["success_ci95"][1] - r["success_rate"]) for r in rs],
        ]
        ax1.errorbar(
            x,
            y,
            yerr=err,
            label=m,
            color=color,
            marker=marker,
            linestyle=ls or "none",
            capsize=3,
            markersize=7 if big else 5,
        )
        ax2.plot(
            x,
            [r["latency_ms_p50"] for r in rs],
            label=m,
            color=color,
            marker=marker,
            linestyle=ls or "none",
            markersize=9 if big else 5,
        )
    for ax in (ax1, ax2):
        ax.set_xscale("log")
        ax.set_xlabel("NFE (network calls per action chunk)")
        ax.grid(alpha=0.3, which="both")
    for r in rows:  # the many-step reference as a line across all NFEs
        if r["method"] == "ddpm":
            ax1.axhline(r["success_rate"], color="black", lw=0.8, ls=":", zorder=0)
    ax1.set_ylabel("success rate")
    ax1.set_ylim(-0.03, 1.03)
    ax2.set_yscale("log")
    ax2.set_ylabel("latency per chunk, p50 (ms, batch 1)")
    ax1.legend(fontsize=8, loc="lower right")
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


class StageClock:
    """Prints stage headers with elapsed time and a running estimate of the time left."""

    def __init__(self, weights: Mapping[str, float]) -> None:
        self.weights = dict(weights)
        self.done: dict[str, float] = {}
        self.t0 = time.time()
        self.current: str | None = None
        self.t_stage = self.t0

    def start(self, name: str, detail: str = "") -> None:
        now = time.time()
        if self.current is not None:
            self.done[self.current] = self.weights.get(self.current, 1.0)
        self.current, self.t_stage = name, now
        elapsed = now - self.t0
        frac = sum(self.done.values()) / max(sum(self.weights.values()), 1e-9)
        eta = f", about {elapsed / frac * (1 - frac) / 60:.1f} min left" if frac > 0.02 else ""
        text = f"{name} {detail}".strip()
        print(f"\n=== {text}  [{elapsed / 60:.1f} min elapsed{eta}]", file=sys.stderr, flush=True)
