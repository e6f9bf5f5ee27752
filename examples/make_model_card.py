"""Write the JSON card of a packaged density model: how it was trained (command, resolved config),
on which data (paths and SHA-256), and how accurate it is (``ase-density evaluate`` summaries).

    python examples/make_model_card.py --run RUN_DIR --model M.nequip.zip --train-data data/train_pool.h5 \
        --eval test_eval.json transfer_eval.json --command "..." -o card.json
"""

import argparse
import datetime
import json
import os
import re

from ase_density.h5io import file_sha256, portable_path


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", required=True, help="nequip-train run directory (holds config.yaml)")
    parser.add_argument("--model", required=True, help="packaged model (.nequip.zip)")
    parser.add_argument("--train-data", required=True)
    parser.add_argument("--eval", nargs="+", default=[], help="JSON reports of ase-density evaluate")
    parser.add_argument("--command", required=True, help="the command that made the model")
    parser.add_argument("-o", "--output", required=True)
    args = parser.parse_args(argv)
    config_path = os.path.join(args.run, "config.yaml")
    if not os.path.exists(config_path):  # hydra keeps the resolved config in .hydra/
        config_path = os.path.join(args.run, ".hydra", "config.yaml")
    with open(config_path) as fh:  # absolute paths in the resolved config become repository-relative
        config = re.sub(r"(?<=: )(/\S+)", lambda m: portable_path(m.group(1)), fh.read())
    evaluations = {}
    for path in args.eval:
        with open(path) as fh:
            report = json.load(fh)
        evaluations[os.path.basename(report["data"])] = {
            "data_sha256": report["data_sha256"], "n_structures": report["n_structures"], "mean": report["mean"],
            "coefficient_rmse": report["coefficient_rmse"], "grid_level": report["grid_level"]}
    card = {
        "model": os.path.basename(args.model), "model_sha256": file_sha256(args.model),
        "command": args.command, "config_yaml": config,
        "training_data": {"path": portable_path(args.train_data), "sha256": file_sha256(args.train_data)},
        "evaluation": evaluations,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    with open(args.output, "w") as fh:
        json.dump(card, fh, indent=1)
    print(f"written {args.output}")


if __name__ == "__main__":
    main()
