"""Episode videos: GIF with Pillow (always available) or MP4 when imageio-ffmpeg is installed."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np


def write_video(
    frames: Sequence[np.ndarray], path: str | Path, fps: int = 10, fmt: str = "gif", scale: int = 2
) -> Path:
    """Write ``[H, W, 3]`` uint8 frames to ``path`` + ``.gif``/``.mp4``; returns the file path.

    Frames are upscaled by ``scale`` (nearest) so 96x96 renders are watchable.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = [np.asarray(f, dtype=np.uint8) for f in frames]
    if scale > 1:
        arr = [f.repeat(scale, 0).repeat(scale, 1) for f in arr]
    if fmt == "mp4":
        try:
            import imageio.v3 as iio

            out = path.with_suffix(".mp4")
            iio.imwrite(out, np.stack(arr), fps=fps, codec="libx264")
            return out
        except Exception:  # no ffmpeg backend: fall back to a GIF rather than lose the video
            pass
    from PIL import Image

    out = path.with_suffix(".gif")
    images = [Image.fromarray(f) for f in arr]
    images[0].save(
        out, save_all=True, append_images=images[1:], duration=max(1, round(1000 / fps)), loop=0
    )
    return out
