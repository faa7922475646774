"""Fixed-length windows over episodes, with edge padding and padding masks.

The index table is built once. A window may start up to ``pad_before`` steps before its
episode and end up to ``pad_after`` steps after it; out-of-episode frames repeat the episode's
first or last frame and are flagged in ``<key>_is_pad``. Gathering is vectorized: a batch of
windows is one fancy-index per key.
"""

from __future__ import annotations

import numpy as np


class SequenceSampler:
    """All windows of ``sequence_length`` steps over episodes given by cumulative ``episode_ends``.

    ``episode_mask`` (bool per episode) selects the episodes to draw from (train/val split).
    Row i of the table is ``(window_start, episode_start, episode_end)`` in buffer steps.
    """

    def __init__(
        self,
        episode_ends: np.ndarray,
        sequence_length: int,
        pad_before: int = 0,
        pad_after: int = 0,
        episode_mask: np.ndarray | None = None,
    ) -> None:
        ends = np.asarray(episode_ends, dtype=np.int64)
        starts = np.concatenate([[0], ends[:-1]])
        if episode_mask is None:
            episode_mask = np.ones(len(ends), dtype=bool)
        episode_mask = np.asarray(episode_mask, dtype=bool)
        if episode_mask.shape != ends.shape:
            raise ValueError(f"episode_mask has shape {episode_mask.shape}, expected {ends.shape}")
        if sequence_length < 1 or pad_before < 0 or pad_after < 0:
            raise ValueError("sequence_length must be >= 1 and paddings >= 0")
        rows = []
        for s, e, keep in zip(starts, ends, episode_mask):
            if not keep:
                continue
            first = s - pad_before
            last = max(first, e - sequence_length + pad_after)
            w = np.arange(first, last + 1, dtype=np.int64)
            rows.append(np.stack([w, np.full_like(w, s), np.full_like(w, e)], axis=1))
        self.table = np.concatenate(rows) if rows else np.zeros((0, 3), dtype=np.int64)
        self.sequence_length = sequence_length
        self.pad_before, self.pad_after = pad_before, pad_after

    def __len__(self) -> int:
        return len(self.table)

    def frame_indices(
        self, idx: np.ndarray, length: int | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Buffer indices ``[B, length]`` of the first ``length`` frames of windows ``idx`` and
        their padding mask (True where the frame repeats an episode edge)."""
        length = self.sequence_length if length is None else length
        rows = self.table[np.asarray(idx, dtype=np.int64)]
        pos = rows[:, :1] + np.arange(length)[None]
        lo, hi = rows[:, 1:2], rows[:, 2:3]
        is_pad = (pos < lo) | (pos >= hi)
        return np.clip(pos, lo, hi - 1), is_pad


def split_episodes(
    n_episodes: int, val_ratio: float, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Random train/val masks over episodes. With ``val_ratio > 0`` and at least 2 episodes,
    validation gets at least one episode and training keeps at least one."""
    if not 0.0 <= val_ratio < 1.0:
        raise ValueError(f"val_ratio must be in [0, 1), got {val_ratio}")
    val = np.zeros(n_episodes, dtype=bool)
    n_val = round(n_episodes * val_ratio)
    if val_ratio > 0 and n_episodes >= 2:
        n_val = min(max(n_val, 1), n_episodes - 1)
    else:
        n_val = 0
    val[np.random.default_rng(seed).permutation(n_episodes)[:n_val]] = True
    return ~val, val
