"""Density analysis along MD trajectories: stream frames, predict coefficients in batches, store
per-frame dipoles, charges and molecular dipoles in a crash-safe, resumable HDF5 file, then derive
distributions, the infrared spectrum and plots from that file.

Frames are read one at a time (``ase.io.iread``), so memory does not grow with the trajectory.

**Time** (fs) of analysed frame i (its index in the trajectory): ``i * timestep`` when a timestep is
given, else ``atoms.info['time']`` (fs) when the trajectory stores it, else unknown (NaN).

**Partition.** The density is split by the atom whose basis functions carry it, as in
:func:`ase_density.density.atomic_charges`. Atomic charge q_i = Z_i - ∫rho_i. Molecules are found
by O–H connectivity (:func:`ase_density.validation.find_waters`: each H belongs to its nearest O
within 1.3 Å; every O must own exactly two H). The dipole of water w is taken about its own centre
of nuclear charge o_w = Σ Z_i R_i / Σ Z_i:

    mu_w = Σ_{i in w} [ Z_i (R_i - o_w) - ∫ (r - o_w) rho_i(r) dr ],

which is origin-independent even when the partition leaves a water slightly charged (charge
transfer between waters). A frame whose atoms are not whole waters (an H that strayed beyond 1.3 Å)
gets no molecular dipoles (``n_waters = 0``) and is counted in the summary; its other results are
kept.

**Total dipole** about the frame's centre of nuclear charge, Σ_i of the same atomic terms. With the
electron-count correction (the default) the density is exactly neutral, so this equals the dipole
about any origin, i.e. ASE's / ``DensityCalculator``'s ``dipole``; without it, the choice removes
the spurious (predicted net charge) × (position of the cluster) term that would drift with the cluster.

**Electron-count check.** ``n_electrons`` is ∫rho of the *raw* prediction, ``n_electrons_expected``
= Σ Z; their difference is the model's electron-count error. By default the coefficients are then
corrected to the exact count exactly as ``DensityCalculator`` does (:func:`electron_count_corrector`)
before charges, dipoles and cubes are computed; ``correct_electron_count=False`` keeps the raw ones.

File layout (``format = ase-density-trajectory-analysis``; units in the ``units`` attribute)::

    /frames/{time (fs), dipole (e·Å), charge (net charge of the analysed density, e),
             n_electrons, n_electrons_expected, atom_start, n_atoms, water_start, n_waters, index}
    /atoms/{numbers, charges (e)}, + {positions (Å), coefficients (a.u., e3nn, NaN-padded)} if saved
    /waters/{atoms (O, H, H indices within the frame), dipole (e·Å)}
    /analysis/{water_dipole_edges, water_dipole_counts (Debye), charge_O_edges, charge_O_counts,
               charge_H_edges, charge_H_counts (e), ir_wavenumber (cm^-1), ir_intensity, ir_acf
               ((e·Å)^2, lags of the analysed-frame spacing), summary (JSON)}

``frames/index`` (the frame's index in the trajectory) is written last: a frame counts once it is
there. The file stays in HDF5 SWMR mode while written, so a killed analysis (SIGKILL included)
leaves every finished batch readable, and the next run with the same settings repairs the file and
continues after the last complete frame; other settings are refused.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path

import h5py
import numpy as np
from ase.units import Debye

from . import density
from .dataset import LockedH5Writer, WriterLock, file_sha256, open_for_reading
from .validation import StructureError, find_waters, validate_atoms

FORMAT = "ase-density-trajectory-analysis"
FORMAT_VERSION = 1
UNITS = {"time": "fs", "dipole": "e*Angstrom", "charges": "e", "positions": "Angstrom",
         "coefficients": "atomic units (density in e/Bohr^3)", "water_dipole_edges": "Debye",
         "charge_edges": "e", "ir_wavenumber": "cm^-1", "ir_intensity": "arbitrary (max 1)",
         "ir_acf": "(e*Angstrom)^2"}
_SUMMARY_DTYPE = "S65536"
_CHUNK = 1 << 16  # rows read at once when deriving the analysis products


class TrajectoryError(ValueError):
    """A trajectory or analysis file that cannot be analysed, with the reason; ``n_done`` frames
    (those before the problem) are stored in the output."""

    def __init__(self, message, n_done: int = 0):
        super().__init__(message)
        self.n_done = n_done


# ----------------------------------------------------------------------------------------------
# per-frame physics


def frame_time(atoms, index: int, timestep: float | None) -> float:
    """Time (fs) of trajectory frame ``index``: see the module docstring."""
    if timestep is not None:
        return float(index * timestep)
    t = atoms.info.get("time")
    try:
        return float(t) if t is not None else float("nan")
    except (TypeError, ValueError):
        return float("nan")


def _centre_of_nuclear_charge(numbers, positions):
    return numbers @ positions / numbers.sum()


def molecular_dipoles(atoms, coefficients, basis, waters) -> np.ndarray:
    """(n_waters, 3) dipoles (e·Å) of the molecules ``waters`` ((n, 3) atom indices), each about
    its own centre of nuclear charge, the density partitioned by atom (module docstring)."""
    waters = np.asarray(waters, dtype=int).reshape(-1, 3)
    if not len(waters):
        return np.zeros((0, 3))
    origin = np.zeros((len(atoms), 3))
    z, pos = atoms.numbers.astype(float), atoms.get_positions()
    for w in waters:
        origin[w] = _centre_of_nuclear_charge(z[w], pos[w])
    contributions = density.atomic_dipole_contributions(atoms, coefficients, basis, origin=origin)
    return contributions[waters].sum(axis=1)


def frame_properties(atoms, coefficients, basis, correct=None) -> dict:
    """Everything stored per frame, from raw predicted ``coefficients``: see the module
    docstring. ``correct``: None, or a function (atoms, coefficients, basis) -> coefficients
    with the exact electron count."""
    n_electrons = density.electron_count(atoms, coefficients, basis)
    if correct is not None:
        coefficients = correct(atoms, coefficients, basis)
    try:
        waters = find_waters(atoms)
    except StructureError:
        waters = np.zeros((0, 3), dtype=int)
    z, pos = atoms.numbers.astype(float), atoms.get_positions()
    charges = density.atomic_charges(atoms, coefficients, basis)
    about_origin = density.atomic_dipole_contributions(atoms, coefficients, basis)
    # shift each atom's term to its molecule's centre (or the frame's): mu_i(o) = mu_i(0) - q_i o
    centre = _centre_of_nuclear_charge(z, pos)
    dipole = about_origin.sum(axis=0) - charges.sum() * centre
    water_dipoles = np.zeros((len(waters), 3))
    for k, w in enumerate(waters):
        water_dipoles[k] = about_origin[w].sum(axis=0) - charges[w].sum() * _centre_of_nuclear_charge(z[w], pos[w])
    return {"coefficients": coefficients, "charges": charges, "dipole": dipole, "charge": float(charges.sum()),
            "n_electrons": n_electrons, "n_electrons_expected": int(atoms.numbers.sum()),
            "waters": waters, "water_dipoles": water_dipoles}


def electron_count_corrector(basis):
    """The exact electron-count correction of :class:`ase_density.calculator.DensityCalculator`
    (smallest change in the one-centre Coulomb metric, scalar functions only) as a function
    (atoms, coefficients, basis) -> coefficients, for neutral frames."""
    from .calculator import correct_electron_count, correction_directions

    directions = correction_directions(basis)

    def correct(atoms, coefficients, basis):
        n_electrons = int(atoms.numbers.sum() - round(atoms.get_initial_charges().sum()))
        return correct_electron_count(atoms, coefficients, basis, n_electrons, directions)

    return correct


# ----------------------------------------------------------------------------------------------
# reading trajectories


def _frames(path, start: int, stop: int | None, every: int):
    """Yield (trajectory index, atoms), streaming; a read failure becomes :class:`TrajectoryError`."""
    import ase.io

    k = start
    try:
        iterator = ase.io.iread(os.fspath(path), index=slice(start, stop, every))
        while True:
            try:
                atoms = next(iterator)
            except StopIteration:
                return
            yield k, atoms
            k += every
    except TrajectoryError:
        raise
    except Exception as exc:  # ASE raises many kinds for unreadable/truncated files
        raise TrajectoryError(f"{path}: cannot read frame {k}: {type(exc).__name__}: {exc}") from exc


def _count_frames(path) -> int | None:
    """Number of frames where that is cheap to know (ASE .traj), else None."""
    if str(path).endswith(".traj"):
        try:
            from ase.io.trajectory import Trajectory

            with Trajectory(os.fspath(path)) as t:
                return len(t)
        except Exception:
            return None
    return None


def _fingerprint(atoms) -> str:
    h = hashlib.sha1(atoms.numbers.astype("i8").tobytes() + np.round(atoms.get_positions(), 6).tobytes())
    return h.hexdigest()[:16]


# ----------------------------------------------------------------------------------------------
# the output file


def _fields(width: int, save_coefficients: bool):
    """{group: {name: (trailing shape, dtype, fill)}}; within frames, ``index`` is last."""
    atoms = {"numbers": ((), "i1", 0), "charges": ((), "f8", np.nan)}
    if save_coefficients:
        atoms.update(positions=((3,), "f8", np.nan), coefficients=((width,), "f8", np.nan))
    return {
        "atoms": atoms,
        "waters": {"atoms": ((3,), "i4", -1), "dipole": ((3,), "f8", np.nan)},
        "frames": {"time": ((), "f8", np.nan), "dipole": ((3,), "f8", np.nan), "charge": ((), "f8", np.nan),
                   "n_electrons": ((), "f8", np.nan), "n_electrons_expected": ((), "i4", 0),
                   "atom_start": ((), "i8", -1), "n_atoms": ((), "i4", 0), "water_start": ((), "i8", -1),
                   "n_waters": ((), "i4", 0), "index": ((), "i8", -1)},
    }


ANALYSIS_FIELDS = ("water_dipole_edges", "water_dipole_counts", "charge_O_edges", "charge_O_counts",
                   "charge_H_edges", "charge_H_counts", "ir_wavenumber", "ir_intensity", "ir_acf")


def _n_complete(f) -> int:
    index = f["frames/index"][()]
    bad = np.where(index < 0)[0]
    return int(bad[0]) if len(bad) else len(index)


def _lengths(f, n: int) -> dict:
    """Rows per group that ``n`` complete frames occupy."""
    if n == 0:
        return {"frames": 0, "atoms": 0, "waters": 0}
    fr = f["frames"]
    return {"frames": n, "atoms": int(fr["atom_start"][n - 1] + fr["n_atoms"][n - 1]),
            "waters": int(fr["water_start"][n - 1] + fr["n_waters"][n - 1])}


def _open_read(path):
    return open_for_reading(path, FORMAT, TrajectoryError, "ase-density trajectory analysis")


class AnalysisWriter(LockedH5Writer):
    """Per-frame results appended in flushed batches; creates ``path`` or reopens it for the same
    ``settings`` (refusing others). ``n_done``: complete frames already stored."""

    def __init__(self, path, settings: dict, basis, save_coefficients: bool):
        self.path = os.fspath(path)
        self._lock = WriterLock(self.path, TrajectoryError)
        self.width = basis.width
        self.fields = _fields(basis.width, save_coefficients)
        self._open({"settings": json.dumps(settings, sort_keys=True), "auxbasis": basis.to_json()})
        self.n_done = _n_complete(self.f)

    def _create(self, meta):
        f = h5py.File(self.path, "w", libver="latest")
        f.attrs.update(format=FORMAT, format_version=FORMAT_VERSION, units=json.dumps(UNITS), layout="e3nn",
                       padding="NaN", width=self.width, **meta)
        for group, fields in self.fields.items():
            for name, (shape, dtype, fill) in fields.items():
                rows = 64 if name == "coefficients" else 1024
                f.create_dataset(f"{group}/{name}", (0, *shape), maxshape=(None, *shape), dtype=dtype,
                                 chunks=(rows, *shape), fillvalue=fill)
        for name in ANALYSIS_FIELDS:  # filled at the end; created now since SWMR forbids new objects
            f.create_dataset(f"analysis/{name}", (0,), maxshape=(None,), dtype="f8", chunks=(1024,))
        f.create_dataset("analysis/summary", (0,), maxshape=(None,), dtype=_SUMMARY_DTYPE, chunks=(1,))
        return f

    def _check_compatible(self, meta):
        with self._read() as f:
            for name, value in meta.items():
                found = f.attrs.get(name)
                if found != value:
                    detail = ""
                    if name == "settings" and found is not None:
                        a, b = json.loads(found), json.loads(value)
                        detail = "".join(f"\n  {k}: file {a.get(k)!r}, requested {b.get(k)!r}"
                                         for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k))
                    raise TrajectoryError(f"{self.path}: made by an analysis with other {name}; refusing to resume it "
                                          f"(delete it, pass --overwrite, or choose another output).{detail}")

    def _read(self):
        return _open_read(self.path)

    def _complete_rows(self, f) -> dict:
        return {**_lengths(f, _n_complete(f)), "analysis": 0}  # analysis products are recomputed at the end

    def write_batch(self, records: list):
        """Append a batch of (trajectory index, atoms, time, properties) and flush it."""
        if not records:
            return
        f = self.f
        atoms_rows = {name: [] for name in self.fields["atoms"]}
        frames = {name: [] for name in self.fields["frames"]}
        water_atoms, water_dipoles = [], []
        atom_start, water_start = f["atoms/numbers"].shape[0], f["waters/atoms"].shape[0]
        for index, atoms, frame_time_fs, p in records:
            atoms_rows["numbers"].append(atoms.numbers.astype("i1"))
            atoms_rows["charges"].append(p["charges"])
            if "coefficients" in atoms_rows:
                atoms_rows["positions"].append(atoms.get_positions())
                atoms_rows["coefficients"].append(p["coefficients"])
            water_atoms.append(p["waters"].reshape(-1, 3))
            water_dipoles.append(p["water_dipoles"].reshape(-1, 3))
            values = {"time": frame_time_fs, "dipole": p["dipole"], "charge": p["charge"], "n_electrons": p["n_electrons"],
                      "n_electrons_expected": p["n_electrons_expected"], "atom_start": atom_start,
                      "n_atoms": len(atoms), "water_start": water_start, "n_waters": len(p["waters"]), "index": index}
            for name, value in values.items():
                frames[name].append(value)
            atom_start += len(atoms)
            water_start += len(p["waters"])
        for name, rows in atoms_rows.items():
            self._append(f["atoms/" + name], np.concatenate(rows))
        self._append(f["waters/atoms"], np.concatenate(water_atoms))
        self._append(f["waters/dipole"], np.concatenate(water_dipoles))
        for name, rows in frames.items():
            if name != "index":
                self._append(f["frames/" + name], np.asarray(rows))
        f.flush()  # everything on disk before the indices mark the frames complete
        self._append(f["frames/index"], np.asarray(frames["index"], dtype="i8"))
        f.flush()
        self.n_done += len(records)

    def write_products(self, products: dict):
        """Replace the /analysis datasets (a crash here leaves old or partial products, which the
        next run recomputes; the frames are untouched)."""
        f = self.f
        for name in ANALYSIS_FIELDS:
            values = np.asarray(products.get(name, []), dtype=float).ravel()
            ds = f["analysis/" + name]
            ds.resize((len(values),))
            ds[:] = values
        ds = f["analysis/summary"]
        ds.resize((1,))
        ds[0] = json.dumps(products["summary"], sort_keys=True).encode()
        f.flush()



# ----------------------------------------------------------------------------------------------
# the analysis


def analyze_trajectory(trajectory, output, model=None, every: int = 1, start: int = 0, stop: int | None = None,
                       timestep: float | None = None, batch_size: int = 16, save_coefficients: bool = False,
                       correct_electron_count: bool = True, cubes=None, cube_every: int = 1,
                       cube_spacing: float = 0.2, plots=None, device: str = "cpu", overwrite: bool = False,
                       progress: bool = True, max_lag_fs: float | None = None, plot_title: str | None = None,
                       threads: int | None = None, trust_model: bool = False, allow_non_water: bool = False) -> dict:
    """Analyse frames ``start:stop:every`` of ``trajectory`` (anything ``ase.io`` reads) with the
    density ``model`` (a ``.nequip.zip``/``.ckpt`` path; default the shipped model) into the HDF5
    file ``output``, resuming it if it was made with the same settings. ``timestep``: MD timestep
    (fs) between trajectory frames. ``cubes``: directory for density cube files of every
    ``cube_every``-th analysed frame. ``plots``: directory for PNG plots. ``threads``: torch
    threads (None: torch's default; 1 is often fastest on busy or small machines). ``trust_model``:
    load a model file other than the shipped one (see :mod:`ase_density.trust`). ``allow_non_water``:
    analyse frames that are not water clusters (refused by default). Returns the summary
    (also stored as /analysis/summary). Raises :class:`TrajectoryError` for unreadable/empty
    trajectories or frames the model cannot handle, after storing every frame before them."""
    from nequip_plugin.inference import load_density_model, predict_coefficients_batch

    trajectory = os.fspath(trajectory)
    if every < 1 or start < 0 or (stop is not None and stop < 0) or batch_size < 1 or cube_every < 1:
        raise ValueError("every, batch_size and cube_every must be >= 1; start and stop >= 0 (negative "
                         "indices would need the trajectory's length)")
    if timestep is not None and not timestep > 0:
        raise ValueError(f"timestep must be > 0 fs, got {timestep}")
    if not os.path.exists(trajectory):
        raise TrajectoryError(f"{trajectory}: no such file")
    if os.path.isfile(trajectory) and os.path.getsize(trajectory) == 0:
        raise TrajectoryError(f"{trajectory}: empty file, no frames")
    from .calculator import DEFAULT_MODEL

    model_path = Path(model) if model is not None else DEFAULT_MODEL
    if not model_path.exists():
        raise TrajectoryError(f"density model {model_path} not found" + (
            " (no default model is shipped yet: pass --model PATH)" if model is None else ""))
    settings = {"trajectory": os.path.realpath(trajectory), "model_sha256": file_sha256(model_path),
                "start": start, "stop": stop, "every": every, "timestep_fs": timestep,
                "save_coefficients": save_coefficients, "correct_electron_count": correct_electron_count}
    try:
        first = next(_frames(trajectory, start, start + 1, 1))[1]
    except StopIteration:
        raise TrajectoryError(f"{trajectory}: no frames (empty trajectory, or start={start} is past its end)") from None
    settings["first_frame"] = _fingerprint(first)

    if threads is not None:
        import torch

        torch.set_num_threads(threads)
    t_load = time.perf_counter()
    net, basis = load_density_model(str(model_path), device=device, trust_model=trust_model)
    t_load = time.perf_counter() - t_load
    allowed = tuple(s for s in basis.symbols if s in net.metadata["type_names"].split())
    correct = electron_count_corrector(basis) if correct_electron_count else None
    if overwrite and os.path.exists(output):
        os.unlink(output)
    cube_dir = Path(cubes) if cubes is not None else None
    if cube_dir is not None:
        cube_dir.mkdir(parents=True, exist_ok=True)

    with AnalysisWriter(output, settings, basis, save_coefficients) as writer:
        n_before = writer.n_done
        total = _count_frames(trajectory)
        if total is not None:
            total = len(range(start, min(total, stop) if stop is not None else total, every))
        bar = _progress(progress, total, n_before)
        frames = _frames(trajectory, start + n_before * every, stop, every)
        t_loop = time.perf_counter()
        buffer, error = [], None

        def flush():
            coefficients = predict_coefficients_batch(net, [a for _, a, _ in buffer])
            records = []
            for (index, atoms, frame_time_fs), c in zip(buffer, coefficients):
                p = frame_properties(atoms, c, basis, correct)
                records.append((index, atoms, frame_time_fs, p))
                if cube_dir is not None and (index - start) // every % cube_every == 0:
                    density.write_cube(cube_dir / f"frame_{index:06d}.cube", atoms, p["coefficients"], basis,
                                       spacing=cube_spacing)
            writer.write_batch(records)
            bar.update(len(records))
            buffer.clear()

        try:
            for index, atoms in frames:
                try:
                    validate_atoms(atoms, elements=allowed, label=f"frame {index}", allow_non_water=allow_non_water)
                except StructureError as exc:
                    error = TrajectoryError(str(exc))
                    break
                buffer.append((index, atoms, frame_time(atoms, index, timestep)))
                if len(buffer) >= batch_size:
                    flush()
        except TrajectoryError as exc:
            error = exc
        except BaseException:
            bar.close()  # interrupted: the buffered frames are redone by the next run
            raise
        if buffer:
            flush()  # the last partial batch, or the frames before a bad one
        bar.close()
        if error is not None:
            error.n_done = writer.n_done
            raise TrajectoryError(f"{error} ({writer.n_done} frames before it are stored in {output})",
                                  writer.n_done) from error
        if writer.n_done == 0:
            raise TrajectoryError(f"{trajectory}: no frames to analyse in [{start}:{stop}:{every}]")
        t_loop = time.perf_counter() - t_loop
        products = compute_products(writer.f, max_lag_fs=max_lag_fs)
        writer.write_products(products)
        # not stored (the file must not depend on how the run went): new frames, seconds spent
        products["summary"].update(n_frames_new=writer.n_done - n_before,
                                   timings={"model_load_s": t_load, "frames_s": t_loop})
    if plots is not None:
        products["summary"]["plots"] = [str(p) for p in make_plots(output, plots, title=plot_title)]
    return products["summary"]


def _progress(enabled, total, initial):
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, desc="analysing frames", unit="frame", disable=not enabled)


# ----------------------------------------------------------------------------------------------
# products: distributions, IR spectrum, plots (all from the file, in chunks)


def _chunks(ds, n):
    for i in range(0, n, _CHUNK):
        yield ds[i:min(i + _CHUNK, n)]


def _histogram(chunks_fn, bins=60):
    """Histogram over a stream of 1-D chunks (two passes: range, then counts), plus mean/std."""
    lo, hi, n, s, s2 = np.inf, -np.inf, 0, 0.0, 0.0
    for x in chunks_fn():
        if len(x):
            lo, hi = min(lo, x.min()), max(hi, x.max())
            n, s, s2 = n + len(x), s + x.sum(), s2 + (x ** 2).sum()
    if n == 0:
        return np.zeros(0), np.zeros(0), {"n": 0}
    if hi <= lo:
        lo, hi = lo - 0.5, hi + 0.5
    edges = np.linspace(lo, hi, bins + 1)
    counts = np.zeros(bins)
    for x in chunks_fn():
        counts += np.histogram(x, edges)[0]
    mean = s / n
    return edges, counts, {"n": int(n), "mean": float(mean), "std": float(np.sqrt(max(s2 / n - mean ** 2, 0.0)))}


def compute_products(f, max_lag_fs: float | None = None) -> dict:
    """Distributions and the IR spectrum from an open analysis file (``h5py.File``)."""
    from .spectra import ir_spectrum, uniform_timestep

    n = _n_complete(f)
    lengths = _lengths(f, n)
    out = {}

    def water_magnitudes():
        for d in _chunks(f["waters/dipole"], lengths["waters"]):
            yield np.linalg.norm(d, axis=1) / Debye

    def charges_of(z):
        def chunks():
            for i in range(0, lengths["atoms"], _CHUNK):
                j = min(i + _CHUNK, lengths["atoms"])
                numbers, q = f["atoms/numbers"][i:j], f["atoms/charges"][i:j]
                yield q[numbers == z]
        return chunks

    out["water_dipole_edges"], out["water_dipole_counts"], water_stats = _histogram(water_magnitudes)
    out["charge_O_edges"], out["charge_O_counts"], o_stats = _histogram(charges_of(8))
    out["charge_H_edges"], out["charge_H_counts"], h_stats = _histogram(charges_of(1))
    frames = f["frames"]
    dipoles, times = frames["dipole"][:n], frames["time"][:n]
    error = frames["n_electrons"][:n] - frames["n_electrons_expected"][:n]
    summary = {"n_frames": n, "n_waters_total": lengths["waters"],
               "frames_without_whole_waters": int(np.sum(frames["n_waters"][:n] == 0)),
               "water_dipole_debye": water_stats, "charge_O": o_stats, "charge_H": h_stats,
               "dipole_debye_mean": float(np.mean(np.linalg.norm(dipoles, axis=1)) / Debye) if n else None,
               "electron_count_error": {"mean": float(error.mean()), "max_abs": float(np.abs(error).max())} if n else None}
    try:
        dt = uniform_timestep(times)
        max_lag = None if max_lag_fs is None else max(1, min(n - 1, int(round(max_lag_fs / dt))))
        wavenumber, intensity, acf = ir_spectrum(dipoles, dt, max_lag=max_lag)
        out.update(ir_wavenumber=wavenumber, ir_intensity=intensity, ir_acf=acf)
        summary["ir"] = {"timestep_fs": dt, "max_lag_fs": (len(acf) - 1) * dt, "window": "hann (decaying half)",
                         "quantum_correction": "harmonic: intensity ∝ w^2 FT[<mu(0)·mu(t)>]"}
    except ValueError as exc:
        summary["ir"] = {"skipped": str(exc)}
    out["summary"] = summary
    return out


def read_analysis(path) -> dict:
    """Per-frame arrays (time, dipole, charge, n_electrons, n_electrons_expected, index, n_waters)
    and the products of an analysis file; safe while it is being written."""
    with _open_read(os.fspath(path)) as f:
        n = _n_complete(f)
        out = {name: f["frames/" + name][:n] for name in
               ("time", "dipole", "charge", "n_electrons", "n_electrons_expected", "index", "n_waters")}
        for name in ANALYSIS_FIELDS:
            out[name] = f["analysis/" + name][()]
        s = f["analysis/summary"][()]
        out["summary"] = json.loads(s[0].decode()) if len(s) else None
        out["settings"] = json.loads(f.attrs["settings"])
    return out


def make_plots(path, directory, title: str | None = None) -> list:
    """PNG plots of an analysis file into ``directory``: total dipole against time, molecular
    dipole and O/H charge distributions, IR spectrum (when the file has one). Returns the paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    data = read_analysis(path)
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    title = title or Path(data["settings"]["trajectory"]).name
    paths = []

    def save(fig, name):
        fig.suptitle(title, fontsize=9)
        fig.tight_layout()
        p = directory / name
        fig.savefig(p, dpi=110)
        plt.close(fig)
        paths.append(p)

    mu = data["dipole"] / Debye
    t = data["time"]
    known = np.all(np.isfinite(t)) and len(t)
    x, xlabel = (t / 1000, "time (ps)") if known else (data["index"], "frame")
    fig, ax = plt.subplots(figsize=(6.4, 3.6))
    for k, c in enumerate("xyz"):
        ax.plot(x, mu[:, k], lw=0.8, label=f"$\\mu_{c}$")
    ax.plot(x, np.linalg.norm(mu, axis=1), lw=1.2, color="k", label="$|\\mu|$")
    ax.set(xlabel=xlabel, ylabel="dipole (D)", title="total dipole")
    ax.legend(fontsize=8, ncol=4)
    save(fig, "dipole_vs_time.png")

    fig, axes = plt.subplots(1, 3, figsize=(10, 3.4))
    panels = (("water_dipole", "|molecular dipole| (D)", "water dipoles", "tab:green"),
              ("charge_O", "charge (e)", "O charges", "tab:red"), ("charge_H", "charge (e)", "H charges", "tab:blue"))
    for ax, (name, xlabel, label, color) in zip(axes, panels):
        e, c = data[f"{name}_edges"], data[f"{name}_counts"]
        if len(c):
            ax.stairs(c / max(c.sum() * np.diff(e)[0], 1e-300), e, fill=True, alpha=0.7, color=color)
        ax.set(xlabel=xlabel, ylabel="probability density", title=label)
        ax.locator_params(axis="x", nbins=4)
    save(fig, "distributions.png")

    if len(data["ir_wavenumber"]):
        fig, ax = plt.subplots(figsize=(6.4, 3.4))
        ax.plot(data["ir_wavenumber"], data["ir_intensity"], lw=1)
        ax.set(xlabel="wavenumber (cm$^{-1}$)", ylabel="intensity (arb. units)",
               title="IR spectrum: $\\omega^2\\,$FT$\\langle\\mu(0)\\cdot\\mu(t)\\rangle$, Hann window, harmonic QCF")
        ax.set_xlim(0, data["ir_wavenumber"].max())
        save(fig, "ir_spectrum.png")
    return paths
