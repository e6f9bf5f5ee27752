"""Plumbing shared by the benchmark scripts: one measurement per fresh Python process (so peak
memory is per measurement), and results written as JSON with the machine they ran on."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys


def run_child(code: str, *args) -> dict:
    """Run ``code`` in a fresh Python with ``args`` (as strings) in ``sys.argv[1:]``; returns the JSON
    object it prints on its last line. Raises RuntimeError with the end of its stderr if it fails."""
    proc = subprocess.run([sys.executable, "-c", code, *map(str, args)], capture_output=True, text=True)
    if proc.returncode:
        raise RuntimeError(f"measurement {list(map(str, args))} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _portable(value):
    """Absolute file paths (also inside lists) as repository-relative ones."""
    from ase_density.h5io import portable_path

    if isinstance(value, list):
        return [_portable(v) for v in value]
    return portable_path(value) if isinstance(value, str) and os.path.isabs(value) else value


def write_results(path: str, threads: int, payload: dict, **machine) -> None:
    """Write ``payload`` plus a ``machine`` record (CPUs, threads used, platform, Python, extra
    ``machine`` items such as the device) as indented JSON to ``path``, creating its folder. File
    paths in ``payload``'s top-level values are recorded repository-relative, and the ``model`` and
    ``baseline`` model files with their SHA-256 (a path alone names another file once the shipped
    model changes)."""
    from ase_density.h5io import file_sha256

    hashes = {f"{name}_sha256": file_sha256(payload[name]) for name in ("model", "baseline")
              if isinstance(payload.get(name), str) and os.path.isfile(payload[name])}
    payload = {**{name: _portable(value) for name, value in payload.items()}, **hashes}
    record = {"machine": {"cpus": os.cpu_count(), "threads": threads, "platform": platform.platform(),
                          "python": platform.python_version(), **machine}, **payload}
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as fh:
        json.dump(record, fh, indent=1)
    print(f"written {path}")
