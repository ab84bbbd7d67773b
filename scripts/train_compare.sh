#!/usr/bin/env bash
# Train cusep's comparison models side by side with one budget (the run behind models/cusep-label-v1):
# the unconditioned baseline, FiLM-encoder and label-multiply conditioning, each label variant with
# the ensemble sampler (75 % synchronised rendered ensembles) and with mix-and-separate only.
# usage: scripts/train_compare.sh TRAIN_DIR VALID_DIR RUNS_DIR MINUTES [extra cusep train args]
set -euo pipefail
train=$1 valid=$2 runs=$3 minutes=$4
shift 4
mkdir -p "$runs"
run() {
    local name=$1
    shift
    python3 -m cusep train "$runs/$name" --data "$train" --valid "$valid" \
        --max-minutes "$minutes" --no-progress "$@" >"$runs/$name.log" 2>&1 &
}
run none-ens --preset cusep-none "$@"
run film-ens --preset cusep-film "$@"
run film-mix --preset cusep-film --set mixing.ensemble_ratio=0.0 "$@"
run label-ens --preset cusep-label "$@"
run label-mix --preset cusep-label --set mixing.ensemble_ratio=0.0 "$@"
wait
