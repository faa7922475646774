"""Demonstration storage (zarr), windowed datasets and normalization."""

from .dataset import SequenceDataset, infer_shape_meta, make_datasets
from .normalizer import Normalizer
from .replay_buffer import DatasetError, ReplayBuffer, atomic_buffer
from .sequence import SequenceSampler, split_episodes

__all__ = [
    "DatasetError",
    "Normalizer",
    "ReplayBuffer",
    "SequenceDataset",
    "SequenceSampler",
    "atomic_buffer",
    "infer_shape_meta",
    "make_datasets",
    "split_episodes",
]
