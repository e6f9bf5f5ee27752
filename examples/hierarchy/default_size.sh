#!/usr/bin/env bash
# The study's equal-parameter variant at the size of the shipped default model: every lmax_h gets
# the multiplicity that gives ~192 k parameters at lmax_o = 4 (41, 23, 16, 11, 9 features per
# irrep for lmax_h = 0..4: 194 k, 193 k, 192 k, 180 k, 202 k), 3 convolutions, radial MLP width 64,
# 2000 optimizer steps, validation every 64 steps. lmax_h = 2 is the default architecture.
#
#   bash examples/hierarchy/default_size.sh [FLAGS...]
#
# FLAGS go to `python -m ase_density.study run` (e.g. --sizes 8 16 32 --jobs 2 --no-eval; default
# grid: lmax_o = 4, all sizes, one seed). Resumable: rerun to continue, --no-train to evaluate.
set -euo pipefail
cd "$(dirname "$0")/../.."
exec python -m ase_density.study run "${STUDY:-results/hierarchy_default_size}" \
    --train-data data/train_pool.h5 --test-data data/test.h5 \
    --max-steps 2000 --patience-steps 500 --validation-steps 64 --num-layers 3 \
    --num-features 41 23 16 11 9 --grid-level 2 --override training_module.model.radial_mlp_width=64 \
    --lmax-o 4 --repeats 1 "$@"
