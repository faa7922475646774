"""Write one of our zarr datasets as a LeRobot v3.0 dataset with its cameras as video, using
LeRobot itself (run in a side environment that has lerobot 0.4.x): the input of
``benchmarks/lerobot_loader.py``.

    python benchmarks/lerobot_video_dataset.py <zarr> <output folder> [fps]
"""

import shutil
import sys
from pathlib import Path

import numpy as np
import zarr
from lerobot.datasets.lerobot_dataset import LeRobotDataset

src, out = sys.argv[1], Path(sys.argv[2])
fps = int(sys.argv[3]) if len(sys.argv) > 3 else 10
z = zarr.open_group(src, mode="r")
data, ends = z["data"], list(z["meta/episode_ends"][:])
cams = [k for k in data.keys() if data[k].dtype == np.uint8 and data[k].ndim == 4]
features = {("action" if k == "action" else f"observation.{k}"): {
    "dtype": "float32", "shape": tuple(data[k].shape[1:]), "names": None}
    for k in data.keys() if k not in cams}  # fmt: skip
for k in cams:
    features[f"observation.images.{k}"] = {"dtype": "video", "shape": tuple(data[k].shape[1:]),
                                           "names": ["height", "width", "channels"]}  # fmt: skip
if out.exists():
    shutil.rmtree(out)
ds = LeRobotDataset.create(repo_id="local/bench", fps=fps, root=out, features=features)
arrays = {k: data[k][:] for k in data.keys()}
start = 0
for end in ends:
    for i in range(start, end):
        frame = {name: arrays[k][i] for k in data.keys()
                 for name in [("action" if k == "action" else
                               f"observation.{'images.' if k in cams else ''}{k}")]}  # fmt: skip
        ds.add_frame({**frame, "task": "demonstration"})
    ds.save_episode()
    start = end
ds.finalize()
print(f"wrote {out}: {len(ends)} episodes, {ends[-1]} frames, cameras {cams}")
