#!/usr/bin/env bash
# The full lmax_h x lmax_o study on this machine's CPUs, in the background, resumable:
#
#   examples/hierarchy/run_grid.sh [STUDY_DIR] [TRAIN_DATA] [TEST_DATA]
#
# Rerun the same command after an interruption: finished runs and cached evaluations are kept.
# Progress: tail -f STUDY_DIR.log. Extra flags for `python -m ase_density.study run` go in
# $STUDY_FLAGS (e.g. STUDY_FLAGS="--repeats 1 --jobs 2").
set -euo pipefail
study=${1:-results/hierarchy}
train=${2:-data/train_pool.h5}
test=${3:-data/test.h5}
mkdir -p "$(dirname "$study")"
# shellcheck disable=SC2086
nohup python -m ase_density.study run "$study" --train-data "$train" --test-data "$test" ${STUDY_FLAGS:-} \
    > "$study.log" 2>&1 &
echo "study running in the background (pid $!): $study, log $study.log"
