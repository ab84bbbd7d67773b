#!/usr/bin/env bash
# On a lent GPU: train cusep-label from the default model on the sets packed by
# `python scripts/gpu_recipe.py pack ...` (carry .carry and .whl), export the best step to $OUT.
# usage: bash scripts/gpu_train.sh MINUTES [extra cusep train arguments, e.g. --set optim.lr=3e-4]
# Wheels to carry (here: echo /.whl/ >> .git/info/exclude), for the device's Python 3.12:
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#     --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
#     -d .whl soundfile==0.14.0 cffi==2.0.0 pycparser
set -euo pipefail
minutes=${1:?usage: gpu_train.sh MINUTES [cusep train args]}
shift
cd "$(dirname "$0")/.."
source scripts/device_env.sh
out=${OUT:-/tmp/cusep-out}
data=/tmp/cusep-data
run=/tmp/cusep-run
mkdir -p "$out"
python3 scripts/gpu_recipe.py unpack "$data"
args=()
for d in "$data"/train-*; do args+=(--data "$d"); done
for d in "$data"/valid-*; do args+=(--valid "$d"); done
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || true
python3 -m cusep train "$run" --preset cusep-label "${args[@]}" --device "${CUSEP_DEVICE:-cuda}" \
    --max-minutes "$minutes" --set "init=${CUSEP_INIT:-cusep-label-v2}" --set mixing.eq_db=6 \
    --set optim.batch_size=32 --set optim.lr=2e-4 --set optim.valid_every=250 \
    --set optim.checkpoint_every=250 --no-progress "$@" 2>&1 | tee "$out/train.log"
python3 -m cusep export "$run" "$out/model"
cp "$run/metrics.jsonl" "$run/config.json" "$out/"
ls -la "$out" "$out/model"
