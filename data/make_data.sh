#!/usr/bin/env bash
# Rebuilds the shipped reference data. Every step resumes where it stopped; rerun to continue.
# PBE0/def2-SVP, grid level 3, aux basis def2-universal-jfit-decontract (the defaults).
set -euo pipefail
cd "$(dirname "$0")"
W=${WORKERS:-2}
# 32 waters: RI-JK within a 16 GB budget; 50 waters: integral-direct (no 33 GB tensor to rebuild after
# a restart), its SCF checkpoint in transfer50.restart/ (commit it to continue elsewhere); a killed SCF
# continues from its checkpoint
BIG=(--density-fit-scf --save-dm --max-memory "${MAX_MEMORY:-16000}" ${SCRATCH:+--scratch "$SCRATCH"})
ase-density sample -n 320 --waters 2 10 --seed 1 -o train_pool.xyz
ase-density sample -n 40 --waters 8 12 --seed 2 -o test.xyz
ase-density sample -n 6 --waters 20 20 --seed 3 -o transfer.xyz
ase-density sample -n 3 --waters 32 32 --seed 4 -o transfer32.xyz
ase-density sample -n 2 --waters 50 50 --seed 5 -o transfer50.xyz
ase-density sample -n 40 --waters 12 16 --seed 6 -o train_large.xyz   # larger training clusters (docs/data.md)
ase-density label train_pool.xyz -o train_pool.h5 --workers "$W" || true
ase-density label train_large.xyz -o train_large.h5 --workers "$W" --guess model || true
ase-density label test.xyz -o test.h5 --workers "$W" --save-dm || true
ase-density label transfer.xyz -o transfer.h5 --workers "$W" --save-dm || true
ase-density label transfer32.xyz -o transfer32.h5 "${BIG[@]}" || true
ase-density label transfer50.xyz -o transfer50.h5 --save-dm --max-memory 8000 --scratch transfer50.restart \
    --guess model --workers 1 || true
