#!/usr/bin/env bash
# Learning curve of the default architecture (lmax_h = 2, lmax_o = 4, 3 layers x 16 features, radial
# MLP width 64, as examples/train_water.yaml): nested training sets of 16 ... 256 pool clusters, one
# seed, the same 30 validation clusters, evaluated on data/test.h5 per output l (PySCF grid level 2),
# through the study runner (results/learning_curve/: summary.csv, slopes.md, plots/). Resumable.
#   bash examples/learning_curve.sh [flags of `python -m ase_density.study run`]
#   e.g. --jobs 5 --no-eval on a GPU machine, then --no-train here to evaluate and report
set -euo pipefail
cd "$(dirname "$0")/.."
python -m ase_density.study run results/learning_curve --train-data data/train_pool.h5 --test-data data/test.h5 \
    --lmax-h 2 --lmax-o 4 --sizes 16 32 64 128 256 --repeats 1 --num-layers 3 --num-features 16 \
    --max-steps 2000 --patience-steps 500 --grid-level 2 --override training_module.model.radial_mlp_width=64 "$@"
