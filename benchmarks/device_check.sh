#!/usr/bin/env bash
# The GPU check, prepared to run in one go (under 8 minutes) on a lent CUDA machine, whose torch
# is installed but not soundfile, av or norbert: carry their wheels in .whl (ignored by git).
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#     --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
#     -d .whl soundfile==0.14.0 cffi==2.0.0 pycparser av norbert typer rich mido safetensors pytest
# (add whatever else `python3 -c 'import cusep.cli'` reports missing there).
# then run it there: bash benchmarks/device_check.sh   (logs under $OUT, or /tmp/cusep-out)
# It runs the tests that take the CUDA path when CUDA is present (device choice, separation,
# training steps, Wiener, the models), then the separation benchmark on the GPU, 3 minutes of
# 44.1 kHz stereo with 4 instruments at 0 and 2 Wiener iterations, beside the CPU.
set -uo pipefail
cd "$(dirname "$0")/.."
source scripts/device_env.sh
out=${OUT:-/tmp/cusep-out}
mkdir -p "$out"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | tee "$out/gpu.txt"
python3 -c "import torch; assert torch.cuda.is_available(), 'no CUDA here'; print(torch.__version__)"
timeout 300 python3 -m pytest -q -p no:cacheprovider tests/test_separate.py tests/test_train.py \
    tests/test_model.py tests/test_wiener.py tests/test_checkpoint.py 2>&1 | tee "$out/tests.log"
timeout 150 python3 benchmarks/bench_separate.py --device cuda --no-reference --memory-minutes 0 \
    --wiener-iterations 0,2 --threads 16 2>&1 | tee "$out/bench-cuda.log"
