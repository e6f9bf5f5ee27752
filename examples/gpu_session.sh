#!/usr/bin/env bash
# One prepared GPU session (~9 minutes on one H100/H200), everything side by side on the one GPU:
#   1. the default model (examples/train_default.sh's training step) -> outputs/default, and a wider
#      candidate (32 features) -> outputs/default_f32; each stopped after TRAIN_MINUTES at the latest;
#   2. the default architecture's learning curve (examples/learning_curve.sh) -> results/learning_curve;
#   3. the lmax_h x lmax_o study (first seed), largest training sets first -> results/hierarchy.
# Study runs cut off by the limit leave no train.json and are retrained by a later call.
# Nothing is evaluated here (DFT grids are CPU work). Afterwards, on the CPU machine:
#   SKIP_TRAIN=1 bash examples/train_default.sh          # package, evaluate, card
#   bash examples/learning_curve.sh --no-train           # evaluate and report
#   python -m ase_density.study run results/hierarchy --train-data data/train_pool.h5 \
#       --test-data data/test.h5 --sizes 8 16 32 64 128 256 --repeats 1 --no-train
set -uo pipefail
cd "$(dirname "$0")/.."
LIMIT=${LIMIT:-510}                       # s, for everything
TRAIN_MINUTES=${TRAIN_MINUTES:-7}
export OMP_NUM_THREADS=1 HYDRA_FULL_ERROR=1
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || echo "no GPU: everything runs on CPU"
start=$SECONDS
mkdir -p outputs
limit="++trainer.max_time=00:00:$(printf %02d "$TRAIN_MINUTES"):00"
TRAIN_ONLY=1 timeout "$LIMIT" bash examples/train_default.sh "$limit" > outputs/default.out 2>&1 &
RUN=$PWD/outputs/default_f32 TRAIN_ONLY=1 timeout "$LIMIT" bash examples/train_default.sh "$limit" \
    training_module.model.num_features=32 > outputs/default_f32.out 2>&1 &
timeout "$LIMIT" bash examples/learning_curve.sh --jobs 5 --no-eval > outputs/learning_curve.out 2>&1 &
timeout "$LIMIT" python -m ase_density.study run results/hierarchy --train-data data/train_pool.h5 \
    --test-data data/test.h5 --sizes ${HIERARCHY_SIZES:-8 16 32 64 128 256} --repeats 1 --grid-level 2 --jobs "${HIERARCHY_JOBS:-6}" --no-eval \
    > outputs/hierarchy.out 2>&1 &
wait
pkill -TERM -f nequip-train && sleep 5  # trainings the limit cut off (timeout signals only their parents)
echo "wall time: $((SECONDS - start)) s; study runs finished:" \
     "$(ls results/learning_curve/runs/*/train.json 2>/dev/null | wc -l) learning curve," \
     "$(ls results/hierarchy/runs/*/train.json 2>/dev/null | wc -l) hierarchy"
for f in outputs/*.out; do echo "== $f"; tail -5 "$f"; done
