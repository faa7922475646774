"""A trained policy inside a fixed-rate control loop.

    python examples/control_loop.py --checkpoint outputs/oa --hz 50 --seconds 10

The loop below is what runs on a robot: read the sensors, call ``controller.step(obs)``, send
the action, sleep until the next tick. The controller computes the next chunk in a background
thread while this one executes, so ``step`` returns in well under a millisecond; here the
"robot" is the env the checkpoint was trained on. At the end it prints how punctual the loop
was (step cost, jitter, chunk latency in control steps, deadline misses).
"""

from __future__ import annotations

import argparse
import json
import time

import torch
from diffusion_policy_dist.envs import make_env

from diffusion_policy_dist import load_policy
from diffusion_policy_dist.control import TRANSITIONS, Controller


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--checkpoint", required=True, help="a checkpoint or training run folder")
    ap.add_argument("--hz", type=float, default=50.0, help="control rate")
    ap.add_argument("--seconds", type=float, default=10.0, help="how long to run")
    ap.add_argument("--transition", default="prefix", choices=TRANSITIONS)
    ap.add_argument("--threads", type=int, default=1, help="torch threads for inference")
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    policy = load_policy(args.checkpoint)
    env = make_env(policy.checkpoint_meta["env"])  # the env recorded at training time
    period = 1.0 / args.hz
    episodes = successes = 0
    with Controller(policy, control_hz=args.hz, transition=args.transition) as ctrl:
        obs, _ = env.reset(seed=0)
        ctrl.reset()
        t_end = time.perf_counter() + args.seconds
        next_tick = time.perf_counter()
        while time.perf_counter() < t_end:
            action = ctrl.step(obs)  # returns at once: inference runs in the background
            obs, _, terminated, truncated, info = env.step(action)
            if terminated or truncated:
                episodes += 1
                successes += bool(info.get("is_success"))
                obs, _ = env.reset(seed=episodes)
                ctrl.reset()
            next_tick += period
            time.sleep(max(0.0, next_tick - time.perf_counter()))
        stats = ctrl.stats()
    env.close()
    print(json.dumps({"episodes": episodes, "successes": successes, **stats}, indent=1))


if __name__ == "__main__":
    main()
