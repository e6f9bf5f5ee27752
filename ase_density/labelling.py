"""Label many structures with reference densities: local worker processes or a Dask cluster,
one flushed HDF5 record per finished structure, resumable, with progress."""

from __future__ import annotations

import contextlib
import functools
import os
import re
import traceback

from tqdm import tqdm

from .basis import AuxBasis
from .dataset import ReferenceWriter, structure_key
from .errors import OptionError
from .h5io import file_sha256
from .reference import (DEFAULT_MAX_MEMORY, MIN_MAX_MEMORY, ReferenceSettings, SCFNotConverged, ScratchSpaceError,
                        check_max_memory, compute_reference)
from .scf_guess import GUESSES, GuessError, density_calculator, initial_guess
from .validation import StructureError, validate_atoms


def _set_threads(n):
    from pyscf import lib

    lib.num_threads(n)


def label_one(task, on_cycle=None):
    """Worker entry point: ``(key, atoms, settings_dict, fit_error, save_dm, guess, model,
    trust_model, allow_non_water, max_memory, scratch_prefix)`` -> ``(key, ReferenceResult or
    None, failure reason or None)``; ``guess``/``model``/``trust_model`` as in
    :func:`ase_density.scf_guess.initial_guess`; ``max_memory`` (MB) the SCF's budget;
    ``scratch_prefix`` the path prefix of the structure's SCF checkpoint (``.chk``) and
    out-of-core RI-JK tensor (``.cderi.h5``); ``on_cycle`` as in
    :func:`ase_density.reference.run_scf`. Never raises for bad input."""
    key, atoms, settings, fit_error, save_dm, guess, model, trust_model, allow_non_water, max_memory, prefix = task
    try:
        result = compute_reference(atoms, ReferenceSettings(**settings), fit_error=fit_error,
                                   save_density_matrix=save_dm, label=key, allow_non_water=allow_non_water,
                                   guess=functools.partial(initial_guess, guess=guess, model=model, trust_model=trust_model),
                                   max_memory=max_memory, checkpoint=prefix + ".chk", df_file=prefix + ".cderi.h5",
                                   on_cycle=on_cycle)
        return key, result, None
    except (StructureError, SCFNotConverged, ScratchSpaceError) as exc:
        return key, None, str(exc)
    except Exception as exc:  # a crash in one structure must not end a batch of hours
        return key, None, f"{type(exc).__name__}: {exc}\n{traceback.format_exc(limit=3)}"


def label_structures(structures, output, settings: ReferenceSettings = ReferenceSettings(), workers: int = 1,
                     dask_address: str | None = None, save_density_matrix: bool = False, fit_error: bool = True,
                     retry_failed: bool = False, progress: bool = True, guess: str = "minao",
                     model=None, trust_model: bool = False, allow_non_water: bool = False,
                     max_memory: float = DEFAULT_MAX_MEMORY, scratch=None) -> dict:
    """Label ``structures`` (a list of ``ase.Atoms``) into HDF5 file ``output``, skipping those
    already stored (and those that failed before, unless ``retry_failed``). ``guess``: the SCF's
    initial guess (:data:`ase_density.scf_guess.GUESSES`; ``"model"`` with density model file
    ``model``, default the shipped one; another file needs ``trust_model``): it changes the
    cycles, not the stored results, so a file
    may be resumed with another; each guess used is recorded in the file's ``scf_guesses``
    attribute. ``allow_non_water``: also label structures that are not water clusters (else they
    are recorded as failures).

    ``max_memory``: memory budget in MB of this run's SCFs, shared by the local ``workers`` (each
    task of a Dask run gets all of it). ``scratch``: directory of the SCF checkpoints and of RI-JK
    tensors too large for the budget (default ``<output>.scratch``, removed when left empty;
    with Dask, a directory the workers share). Each structure's SCF saves its orbitals there every
    cycle; a rerun after a kill continues that SCF instead of starting afresh, and the checkpoint
    is deleted once the structure's record (or failure) is written.

    Returns a summary ``{'done': n, 'skipped': n, 'restarted': n, 'failed': [(key, reason)]}``
    (``restarted``: SCFs continued from a checkpoint). Raises
    :class:`~ase_density.scf_guess.GuessError` for a guess that does not apply,
    :class:`~ase_density.calculator.ModelError` for a model that does not load and
    :class:`~ase_density.errors.OptionError` for a bad ``max_memory`` or ``scratch``."""
    share = check_max_memory(max_memory) / (1 if dask_address else max(1, workers))
    if share < MIN_MAX_MEMORY:
        raise OptionError(f"max_memory {max_memory:g} MB over {workers} workers leaves {share:g} MB each; "
                          f"each needs at least {MIN_MAX_MEMORY}")
    basis = AuxBasis.load(settings.auxbasis)
    summary = {"done": 0, "skipped": 0, "restarted": 0, "failed": []}
    model, provenance = _guess_provenance(guess, model, settings, trust_model)
    own_scratch = scratch is None
    scratch = os.path.abspath(f"{os.fspath(output)}.scratch" if own_scratch else os.fspath(scratch))
    if os.path.exists(scratch) and not os.path.isdir(scratch):
        raise OptionError(f"scratch {scratch} exists and is not a directory")
    with ReferenceWriter(output, settings.as_dict(), basis, info={"scf_guesses": {guess: provenance}}) as writer:
        skip = writer.done | (set() if retry_failed else writer.failed)
        stem = os.path.join(scratch, os.path.basename(os.fspath(output)))
        tasks = []
        for i, atoms in enumerate(structures):
            key = structure_key(i, atoms)
            if key in skip:
                summary["skipped"] += 1
                continue
            try:
                validate_atoms(atoms, elements=basis.symbols, label=key, allow_non_water=allow_non_water)
            except StructureError as exc:
                writer.write_failure(key, str(exc))
                summary["failed"].append((key, str(exc)))
                continue
            tasks.append((key, atoms, settings.as_dict(), fit_error, save_density_matrix, guess, model, trust_model,
                          allow_non_water, share, f"{stem}.{key}"))
        created = _prepare_scratch(scratch, os.path.basename(os.fspath(output)), {t[0] for t in tasks})
        tasks.sort(key=lambda t: -len(t[1]))  # largest first: the tail of the run stays short
        by_key = {t[0]: t[1] for t in tasks}
        bar = tqdm(total=len(tasks), desc=f"labelling {os.path.basename(os.fspath(output))}", unit="structure",
                   disable=not progress)
        for key, result, reason in _run(tasks, workers, dask_address, functools.partial(_show_cycle, bar, summary)):
            if result is None:
                writer.write_failure(key, reason)
                summary["failed"].append((key, reason))
            else:
                writer.write(key, by_key[key], result)
                summary["done"] += 1
                summary["restarted"] += int(result.scf_restarted)
            with contextlib.suppress(OSError):  # the record is on disk: the checkpoint has done its work
                os.remove(f"{stem}.{key}.chk")
            bar.update(1)
            bar.set_postfix(failed=len(summary["failed"]))
        bar.close()
        if own_scratch or created:
            with contextlib.suppress(OSError):  # only if empty
                os.rmdir(scratch)
    return summary


#: names of one output's scratch files after its ``<output name>.`` prefix
_SCRATCH_NAME = re.compile(r"(\d{6}-[0-9a-f]{12})\.(chk|chk\.tmp|cderi\.h5)")


def _prepare_scratch(scratch, name, pending) -> bool:
    """Make directory ``scratch`` (True if it was made now) and remove what killed runs on output
    ``name`` left there: RI-JK tensors, half-written checkpoints, and checkpoints of structures
    not ``pending`` any more. The output's lock is held, so no other run owns these files."""
    created = not os.path.exists(scratch)
    try:
        os.makedirs(scratch, exist_ok=True)
    except OSError as exc:
        raise OptionError(f"cannot make scratch directory {scratch}: {exc.strerror}") from None
    prefix = name + "."
    for entry in os.listdir(scratch):
        match = _SCRATCH_NAME.fullmatch(entry[len(prefix):]) if entry.startswith(prefix) else None
        if match and (match.group(2) != "chk" or match.group(1) not in pending):
            with contextlib.suppress(OSError):
                os.remove(os.path.join(scratch, entry))
    return created


def _guess_provenance(guess, model, settings, trust_model=False):
    """(model file for the workers or None, what the file records of ``guess``: for a model its
    file name and sha256); the model is loaded here once, so that a bad one fails before any work."""
    if guess not in GUESSES:
        raise GuessError(f"unknown initial guess {guess!r}; choose from {', '.join(GUESSES)}")
    if guess == "vsap" and settings.is_hartree_fock:
        raise GuessError("the vsap guess needs a DFT functional, not HF")
    if guess != "model":
        return None, {}
    from .calculator import DEFAULT_MODEL

    path = os.fspath(model or DEFAULT_MODEL)
    density_calculator(path, trust_model)  # raises ModelError for a missing, foreign or untrusted file
    return path, {"model": os.path.basename(path), "model_sha256": file_sha256(path)}


def _show_cycle(bar, summary, cycle, energy):
    """The SCF in progress on the progress ``bar``: its cycle and energy (Ha)."""
    bar.set_postfix_str(f"failed={len(summary['failed'])}, SCF cycle {cycle}: E = {energy:.8f} Ha")


def _run(tasks, workers, dask_address, on_cycle=None):
    """``(key, result, reason)`` per task, from a Dask cluster, worker processes, or this process
    (``workers <= 1``; only there does ``on_cycle`` see the SCF's cycles)."""
    if not tasks:
        return
    if dask_address:
        from dask.distributed import Client, as_completed

        with Client(dask_address) as client:
            futures = client.map(label_one, tasks, pure=False)
            for future in as_completed(futures):
                yield future.result()
        return
    if workers <= 1:
        for task in tasks:
            yield label_one(task, on_cycle)
        return
    import multiprocessing as mp

    threads = max(1, (os.cpu_count() or 1) // workers)
    ctx = mp.get_context("spawn")
    with ctx.Pool(workers, initializer=_set_threads, initargs=(threads,), maxtasksperchild=20) as pool:
        yield from pool.imap_unordered(label_one, tasks)
