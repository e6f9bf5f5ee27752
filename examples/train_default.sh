#!/usr/bin/env bash
# Train, package, evaluate and document the shipped default model.
#   bash examples/train_default.sh [extra nequip-train overrides]
# Writes ase_density/models/default.nequip.zip and its card default.json (both first made and
# evaluated inside the run directory, outputs/default; RUN=... to change).
# Rerunning after an interruption resumes training from the run's last checkpoint.
#   TRAIN_ONLY=1  stop after training (e.g. on a GPU machine: examples/gpu_session.sh)
#   SKIP_TRAIN=1  package, evaluate and document the run trained before (e.g. copied back from the GPU machine)
#   DATA=file.h5  another training file (default data/train_pool.h5)
#   EVAL_SETS="test transfer"  the data/<set>.h5 files evaluated for the card
#   CHECKPOINT=best_dipole     package the epoch with the smallest validation dipole error (default
#                              best: the smallest validation loss)
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
RUN=${RUN:-$ROOT/outputs/default}
cd "$ROOT"
if [ -z "${SKIP_TRAIN:-}" ]; then
    resume=()
    [ -f "$RUN/last.ckpt" ] && resume=("+ckpt_path=$RUN/last.ckpt")
    mkdir -p "$RUN"
    accelerator=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1 || true)
    echo "bash examples/train_default.sh $* (on ${accelerator:-CPU}, $(nproc --all) cores)" > "$RUN/train_command.txt"
    nequip-train -cp "$ROOT/examples" -cn train_water data_file="${DATA:-data/train_pool.h5}" hydra.run.dir="$RUN" \
        "${resume[@]}" "$@"
fi
[ -n "${TRAIN_ONLY:-}" ] && exit 0
# package, evaluate and document inside the run; the shipped pair (model + card) is replaced last,
# together, so that a failed step never leaves a model without its card
ckpt="$RUN/${CHECKPOINT:-best}.ckpt"
python examples/relative_checkpoint_paths.py "$ckpt"   # no machine paths inside the shipped file
nequip-package build "$ckpt" "$RUN/default.nequip.zip"
reports=()
for set in ${EVAL_SETS:-test transfer}; do
    # --trust-model: the file was packaged from this run just above
    ase-density evaluate --trust-model --model "$RUN/default.nequip.zip" "data/$set.h5" --json "$RUN/${set}_eval.json"
    reports+=("$RUN/${set}_eval.json")
done
python examples/make_model_card.py --run "$RUN" --model "$RUN/default.nequip.zip" \
    --train-data "${DATA:-data/train_pool.h5}" --eval "${reports[@]}" \
    --command "$(cat "$RUN/train_command.txt")" -o "$RUN/default.json"
mkdir -p ase_density/models
cp "$RUN/default.nequip.zip" ase_density/models/default.nequip.zip.tmp
cp "$RUN/default.json" ase_density/models/default.json.tmp
mv ase_density/models/default.nequip.zip.tmp ase_density/models/default.nequip.zip
mv ase_density/models/default.json.tmp ase_density/models/default.json
