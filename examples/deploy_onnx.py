"""An exported policy in a closed loop, with onnxruntime and numpy only (no torch).

    dpd export checkpoint=outputs/oa output=oa.onnx
    python examples/deploy_onnx.py --model oa.onnx --episodes 5

This is the robot side: load the file, reset at each episode start, call ``select_action`` every
control step. The "robot" here is the env the checkpoint was trained on, rebuilt from what the
file records (a registered task name; nothing in the file is run). Prints the success rate and
the time per chunk.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
from diffusion_policy_dist.envs import make_env

from diffusion_policy_dist.runtime import OnnxPolicy


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True, help="a file written by dpd export")
    ap.add_argument("--episodes", type=int, default=5)
    ap.add_argument("--seed", type=int, default=100_000, help="first episode's env seed")
    ap.add_argument("--threads", type=int, default=1, help="onnxruntime intra-op threads")
    args = ap.parse_args()

    policy = OnnxPolicy(args.model, threads=args.threads)
    env = make_env(policy.meta["env"])
    rng = np.random.default_rng(0)
    successes, chunk_ms = 0, []
    for ep in range(args.episodes):
        obs, _ = env.reset(seed=args.seed + ep)
        policy.reset()
        done, info = False, {}
        while not done:
            t0 = time.perf_counter()
            planning = policy.queued == 0
            action = policy.select_action(obs, rng=rng)
            if planning:
                chunk_ms.append(1000 * (time.perf_counter() - t0))
            obs, _, terminated, truncated, info = env.step(action)
            done = terminated or truncated
        successes += bool(info.get("is_success"))
    env.close()
    print(json.dumps({
        "episodes": args.episodes,
        "success_rate": successes / args.episodes,
        "chunk_ms_p50": float(np.median(chunk_ms)),
        "sampler": policy.meta["sampler"]["kind"] + f"-{policy.meta['sampler']['steps']}",
    }))  # fmt: skip


if __name__ == "__main__":
    main()
