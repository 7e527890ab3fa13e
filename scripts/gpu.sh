#!/usr/bin/env bash
# `rethink bench` on a CUDA device, in a few minutes: the data resident on the GPU, bf16 autocast,
# channels_last for the convolutional models (the trainer's own settings), each timed repetition
# closed by torch.cuda.synchronize() so wall time covers the queued kernels; the stacked part times
# k = 1, 4, 16, 64 runs of each model as one stack (rethink.train.stacked, `--stack`) beside one run
# after another. The kernel, Theorem 1 and data parts are CPU code and are left out here.
#   bash scripts/gpu.sh [--models mlp1x512,alexnet] [extra rethink bench options]
set -euo pipefail
name=$(python -c "import torch; print(torch.cuda.get_device_name(0).replace(' ', '-'))")
rethink bench --device cuda --parts throughput,anatomy,fit,stacked \
    --out "bench-gpu-${name}.json" --markdown "docs/benchmarks-gpu-${name}.md" "$@"
