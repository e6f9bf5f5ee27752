"""Write the JSON card of a packaged density model: how it was trained (command, resolved config),
on which data (paths and SHA-256), and how accurate it is (``ase-density evaluate`` summaries).

    python examples/make_model_card.py --run RUN_DIR --model M.nequip.zip --train-data data/train_pool.h5 \
        --eval test_eval.json transfer_eval.json --command "..." -o card.json
    python examples/make_model_card.py --update card.json --eval test_eval.json ...   # new evaluations of the same model
"""

import argparse
import datetime
import json
import os
import re

import yaml

from ase_density.h5io import file_sha256, portable_path


def evaluation_summaries(paths) -> dict:
    """{data file name: summary} of ``ase-density evaluate`` JSON reports."""
    evaluations = {}
    for path in paths:
        with open(path) as fh:
            report = json.load(fh)
        evaluations[os.path.basename(report["data"])] = {
            "data_sha256": report["data_sha256"], "n_structures": report["n_structures"], "mean": report["mean"],
            "coefficient_rmse": report["coefficient_rmse"], "grid_level": report["grid_level"],
            "model_sha256": report["model_sha256"]}
    return evaluations


def extra_training_data(config: dict) -> list:
    """The reference files added whole to the training split (``extra_train_files`` of the resolved
    nequip-train config): path, SHA-256, and the keys of the structures trained on. The keys let a
    file that labelling has grown since still be checked against the card."""
    from ase_density.dataset import ReferenceData

    records = []
    for path in config.get("extra_train_files") or []:
        data = ReferenceData(path)
        records.append({"path": portable_path(path), "sha256": file_sha256(path), "n_structures": len(data),
                        "keys": list(data.keys)})
    return records


def write_json(card: dict, path: str) -> None:
    """Write ``card`` to ``path`` through a temporary file (an interrupted write leaves the old card)."""
    with open(path + ".tmp", "w") as fh:
        json.dump(card, fh, indent=1)
    os.replace(path + ".tmp", path)
    print(f"written {path}")


def update(card_path: str, eval_paths) -> None:
    """Replace the evaluations of the card at ``card_path`` by those of ``eval_paths`` (reports of
    the same model: its SHA-256 must match the card's)."""
    with open(card_path) as fh:
        card = json.load(fh)
    evaluations = evaluation_summaries(eval_paths)
    for name, summary in evaluations.items():
        if summary["model_sha256"] != card["model_sha256"]:
            raise SystemExit(f"{name}: the report evaluated another model (sha256 {summary['model_sha256'][:12]}…, "
                             f"the card's is {card['model_sha256'][:12]}…)")
    card["evaluation"].update(evaluations)
    card["evaluation_date"] = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    write_json(card, card_path)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--update", metavar="CARD", help="replace the evaluations of this card (nothing else changes)")
    parser.add_argument("--run", help="nequip-train run directory (holds config.yaml)")
    parser.add_argument("--model", help="packaged model (.nequip.zip)")
    parser.add_argument("--train-data")
    parser.add_argument("--eval", nargs="+", default=[], help="JSON reports of ase-density evaluate")
    parser.add_argument("--command", help="the command that made the model")
    parser.add_argument("-o", "--output")
    args = parser.parse_args(argv)
    if args.update:
        return update(args.update, args.eval)
    missing = [f"--{k.replace('_', '-')}" for k in ("run", "model", "train_data", "command", "output")
               if getattr(args, k) is None]
    if missing:
        parser.error(f"a new card needs {' '.join(missing)}")
    config_path = os.path.join(args.run, "config.yaml")
    if not os.path.exists(config_path):  # hydra keeps the resolved config in .hydra/
        config_path = os.path.join(args.run, ".hydra", "config.yaml")
    with open(config_path) as fh:  # absolute paths in the resolved config become repository-relative
        config = re.sub(r"(?<=: )(/\S+)", lambda m: portable_path(m.group(1)), fh.read())
    evaluations = evaluation_summaries(args.eval)
    card = {
        "model": os.path.basename(args.model), "model_sha256": file_sha256(args.model),
        "command": args.command, "config_yaml": config,
        "training_data": {"path": portable_path(args.train_data), "sha256": file_sha256(args.train_data)},
        "extra_training_data": extra_training_data(yaml.safe_load(config)),
        "evaluation": evaluations,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    write_json(card, args.output)


if __name__ == "__main__":
    main()
