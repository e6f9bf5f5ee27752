#!/usr/bin/env bash
# One prepared GPU session (~9 minutes on one H100/H200) for examples/hierarchy/default_size.sh:
# its runs at the larger training sets, JOBS at a time side by side on the one GPU, trained only.
# Runs cut off by LIMIT leave no train.json and are trained again by a later call, on a GPU or on
# the CPU machine (the smaller sets are CPU work: --sizes 8 16 32 --jobs 2 --no-eval). Afterwards,
# on the CPU machine (the eps_rho grid integrals are CPU work):
#
#   bash examples/hierarchy/default_size.sh --no-train        # evaluate and report
set -uo pipefail
cd "$(dirname "$0")/../.."
LIMIT=${LIMIT:-480}  # s
export STUDY=${STUDY:-results/hierarchy_default_size}  # also read by default_size.sh
export OMP_NUM_THREADS=1
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || echo "no GPU: the runs train on the CPU"
start=$SECONDS
# shellcheck disable=SC2086
timeout "$LIMIT" bash examples/hierarchy/default_size.sh --sizes ${SIZES:-64 128 256} --jobs "${JOBS:-15}" --no-eval
# the study's trainings that the limit cut off (timeout signals only the runner)
pkill -TERM -f "nequip-train -cp $(realpath "$STUDY")/config" && sleep 5
echo "wall time: $((SECONDS - start)) s; finished runs: $(ls "$STUDY"/runs/*/train.json 2>/dev/null | wc -l)"
