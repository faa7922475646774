#!/usr/bin/env bash
# The Push-T standard run (Diffusion Policy's protocol; 3 training seeds x DDPM and the
# distributional model; DDPM-100, DDIM-1/10, distributional-1/2 on 50 test seeds from 100000)
# on one GPU with 16 CPU cores beside it: the 6 trainings share the GPU at once, the env
# episodes of an evaluation run batched. Aimed at under 10 minutes on one H100 (not yet run:
# no GPU was lent to the session that wrote it). Results: benchmarks/results/standard_gpu/.
#
#   bash benchmarks/pusht_gpu.sh [extra dpd bench overrides]
set -euo pipefail
cd "$(dirname "$0")/.."
export MUJOCO_GL="${MUJOCO_GL:-egl}" OMP_NUM_THREADS=2
dpd bench preset=standard task=pusht device=cuda jobs=6 workers=16 progress=false \
    work_dir=outputs/bench_gpu output_dir=benchmarks/results/standard_gpu \
    presets.standard.threads=2 "$@"
