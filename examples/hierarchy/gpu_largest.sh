#!/usr/bin/env bash
# The largest-training-set runs of the study (all lmax_h x lmax_o, first seed) on one GPU, in
# about 12 minutes of wall time:
#
#   examples/hierarchy/gpu_largest.sh STUDY_DIR [TRAIN_DATA] [TEST_DATA]
#
# STUDY_DIR may be a study begun on CPU (its frozen settings are used, so the GPU runs are the
# same runs) or a new one. Copy the finished runs back into the CPU study directory afterwards:
# the CPU runner then skips them. Environment: SIZE (256), JOBS (runs sharing the GPU, 4).
set -uo pipefail
study=${1:?usage: $0 STUDY_DIR [TRAIN_DATA] [TEST_DATA]}
train=${2:-data/train_pool.h5}
test=${3:-data/test.h5}
args=(run "$study" --sizes "${SIZE:-256}" --repeats 1 --train-data "$train" --test-data "$test")
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || echo "no nvidia-smi: training runs on CPU"
start=$SECONDS
# 1. train, JOBS runs at a time on the one GPU, at most 9 minutes. A run cut off by the limit has
#    no train.json: it is discarded and trained again by a later call, never half-used.
timeout --kill-after=20 540 python -m ase_density.study "${args[@]}" --jobs "${JOBS:-4}"
echo "training phase: $((SECONDS - start)) s"
# 2. evaluate (test-set grids, on the host CPUs) and report what finished, at most 2.5 minutes
timeout --kill-after=10 150 python -m ase_density.study "${args[@]}" --no-train
echo "total: $((SECONDS - start)) s; finished runs: $(ls "$study"/runs/*/train.json 2>/dev/null | wc -l)," \
     "evaluated: $(ls "$study"/runs/*/eval.json 2>/dev/null | wc -l)"
