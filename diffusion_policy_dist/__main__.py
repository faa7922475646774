"""``python -m diffusion_policy_dist <command> ...`` is ``dpd <command> ...`` (and what torchrun
starts: ``torchrun --nproc_per_node=N -m diffusion_policy_dist train ...``)."""

import sys

from .cli.main import main

sys.exit(main())
