"""Training from a LeRobot video dataset against training from zarr, on this CPU.

    python benchmarks/lerobot_loader.py --folder <LeRobot folder> --zarr <the same data as zarr>

The LeRobot folder is decoded once (``dpd train dataset.path=<folder>`` does this into its
cache): the decode rate is the first epoch's extra cost. Afterwards training reads the decoded
copy; its windows/s are measured through the trainer's own loader beside the original zarr's,
at the same batch, interleaved. ``benchmarks/lerobot_video_dataset.py`` makes such a folder
from a zarr dataset with LeRobot itself. Writes ``benchmarks/results/lerobot_loader.{json,md}``.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from loader import time_loader


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--folder", required=True)
    ap.add_argument("--zarr", required=True)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--batches", type=int, default=60)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results"))
    a = ap.parse_args(argv)
    import torch

    from diffusion_policy_dist.data import ReplayBuffer, SequenceDataset, infer_shape_meta
    from diffusion_policy_dist.data.lerobot import LeRobotFolder, to_replay_buffer
    from diffusion_policy_dist.files import write_json_atomic
    from diffusion_policy_dist.provenance import header
    from diffusion_policy_dist.window import Window

    torch.set_num_threads(1)
    folder = LeRobotFolder(a.folder)
    frames = sum(e.length for e in folder.episodes)
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        to_replay_buffer(folder.path, Path(tmp) / "decoded.zarr", progress=False)
        decode_s = time.perf_counter() - t0
        window = Window(16, 2, 8)
        sets = {}
        for name, path in (
            ("zarr", a.zarr),
            ("LeRobot video (decoded once)", Path(tmp) / "decoded.zarr"),
        ):
            buf = ReplayBuffer.open(path)
            sets[name] = SequenceDataset(buf, infer_shape_meta(buf), window)
        rates: dict[str, list[float]] = {k: [] for k in sets}
        for _ in range(a.rounds):
            for name, ds in sets.items():
                rates[name].append(time_loader(ds, a.batch, 0, a.batches)["samples_per_s"])
    rows = [{"source": k, "windows_per_s": max(v), "runs": v} for k, v in rates.items()]
    command = shlex.join(["python", "benchmarks/lerobot_loader.py", *(argv or sys.argv[1:])])
    result = {"header": header(command), "frames": frames, "decode_s": decode_s,
              "decode_frames_per_s": frames / decode_s, "rows": rows,
              "cameras": folder.cameras, "fps": folder.fps}  # fmt: skip
    out = Path(a.out)
    write_json_atomic(out / "lerobot_loader.json", result)
    md = markdown(result, a.batch, a.rounds)
    (out / "lerobot_loader.md").write_text(md)
    print(md)
    return result


def markdown(result: dict, batch: int, rounds: int) -> str:
    h, rows = result["header"], result["rows"]
    ratio = rows[1]["windows_per_s"] / rows[0]["windows_per_s"]
    md = [
        "# Training from a LeRobot video dataset vs from zarr\n",
        f"Command: `{h['command']}`  ",
        f"Commit `{h['git_commit']}`, {h['date']}, {h['machine']}\n",
        f"Decoding the folder once ({result['frames']} frames, camera(s) {result['cameras']}, "
        f"AV1): {result['decode_s']:.1f} s, {result['decode_frames_per_s']:.0f} frames/s.\n",
        f"Training windows/s through the trainer's loader (batch {batch}, 0 workers, best of "
        f"{rounds} interleaved rounds):\n",
        "| source | windows/s |",
        "|---|---|",
        *[f"| {r['source']} | {r['windows_per_s']:.0f} |" for r in rows],
        "",
        f"LeRobot / zarr: {ratio:.2f}x.",
        "",
    ]
    return "\n".join(md)


if __name__ == "__main__":
    main()
