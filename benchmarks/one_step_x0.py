"""What one step returns: a trained policy's x0 estimates at the first step, per sampler.

    python benchmarks/one_step_x0.py --checkpoint DIR --dataset DEMOS.zarr [--episodes 64]

Plans a chunk from the first observation of each of the first ``--episodes`` demonstrations
(the history padded as at an episode start) with DDIM-1 (with and without the default clip),
DDIM-10 and DDPM-100, and reports the size of the normalized actions (|x| is at most 1 for
data), the share that sits at the clip, and the spread of the first action across episodes
next to the demonstrations' own. Writes ``benchmarks/results/one_step_x0.{json,md}``.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

import numpy as np
import torch

SAMPLERS = (
    ("ddim-1", "ddim", {"steps": 1}),
    ("ddim-1, no clip", "ddim", {"steps": 1, "clip_x0": None}),
    ("ddim-10", "ddim", {"steps": 10}),
    ("ddpm-100", "ddpm", {"steps": 100}),
)


def first_observations(dataset: str, shape_meta: dict, n: int) -> tuple[dict, torch.Tensor]:
    """``({key: [n, 2, *shape]}, first actions [n, Da])`` at the demonstrations' starts."""
    from diffusion_policy_dist.data import ReplayBuffer

    with ReplayBuffer.open(dataset) as buf:
        keys = [*shape_meta["obs"], "action"]
        first = [buf.get_episode(i, keys) for i in range(min(n, buf.n_episodes))]
    step0 = {k: torch.as_tensor(np.stack([ep[k][0] for ep in first])).float() for k in keys}
    obs = {k: step0[k][:, None].expand(-1, 2, *step0[k].shape[1:]) for k in shape_meta["obs"]}
    return obs, step0["action"]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--checkpoint", required=True)
    ap.add_argument("--dataset", required=True)
    ap.add_argument("--episodes", type=int, default=64)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "one_step_x0"))
    args = ap.parse_args()
    from diffusion_policy_dist.diffusion.samplers import sampler_config
    from diffusion_policy_dist.provenance import header
    from diffusion_policy_dist.training.build import load_policy

    torch.set_num_threads(1)
    pol = load_policy(args.checkpoint)
    obs, demo = first_observations(args.dataset, pol.shape_meta, args.episodes)
    rows = []
    for name, kind, opts in SAMPLERS:
        g = torch.Generator().manual_seed(0)
        out = pol.predict_action(obs, sampler=sampler_config(kind, **opts), generator=g)
        xn = pol.normalizer.normalize("action", out["action_pred"])
        rows.append({"sampler": name, "mean_abs": float(xn.abs().mean()),
                     "at_clip": float((xn.abs() > 0.999).float().mean()),
                     "first_action_std": out["action_pred"][:, 0].std(0).tolist()})  # fmt: skip
    cmd = "python " + " ".join(shlex.quote(a) for a in sys.argv)
    head = header(cmd, "cpu")
    out = Path(args.out)
    blob = {"header": head, "rows": rows, "demo_first_action_std": demo.std(0).tolist()}
    out.with_suffix(".json").write_text(json.dumps(blob, indent=1))
    md = ["# One step of a mean model: what x0 it returns\n", f"Command: `{cmd}`  ",
          f"Commit `{head['git_commit']}`, {head['date']}\n",
          "| sampler | mean abs normalized action | share at the clip | first-action std "
          "across episodes |", "|---|---|---|---|"]  # fmt: skip
    md += [f"| {r['sampler']} | {r['mean_abs']:.3f} | {r['at_clip']:.0%} | "
           f"{', '.join(f'{v:.3f}' for v in r['first_action_std'])} |" for r in rows]  # fmt: skip
    md.append(f"| demonstrations | | | {', '.join(f'{v:.3f}' for v in demo.std(0).tolist())} |")
    out.with_suffix(".md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
