"""The bodies of the ``dpd`` commands; each takes the composed config as a plain dict."""

from __future__ import annotations

import json
import sys
from typing import Any


def train(cfg: dict[str, Any]) -> dict[str, Any]:
    from ..training.build import train_from_config

    summary = train_from_config(cfg)
    keys = ("step", "loss", "val_loss", "train_wallclock_s", "checkpoint")
    print(json.dumps({k: summary[k] for k in keys if k in summary}, indent=1), file=sys.stderr)
    return summary
