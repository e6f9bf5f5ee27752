"""Seeded water-cluster geometries: random non-overlapping packing of rigid waters, a short
TIP3P relaxation (waters held by stiff springs), then thermal variety, intramolecular flexibility included.

Thermal variety is drawn, not simulated (rigid-water MD costs ~0.1 s/step here): each water gets
a rigid-body displacement (translation sigma 0.15 Å, rotation sigma 8°, roughly 300 K librations
and hydrogen-bond stretches in TIP3P) and new internal coordinates, O–H lengths from
N(0.97 Å, 0.03 Å) and H–O–H angles from N(104.5°, 5°) (the spread of classical flexible-water MD
at 300 K), each clipped at 3 sigma.
"""

from __future__ import annotations

import numpy as np
from ase import Atoms
from ase.calculators.calculator import Calculator, all_changes

from .errors import InputError, OptionError

R_OH, ANGLE_HOH = 0.9572, 104.52  # TIP3P geometry (Å, degrees)
THERMAL = dict(translation=0.15, rotation_deg=8.0, r_oh_mean=0.97, r_oh_sigma=0.03, angle_mean=104.5, angle_sigma=5.0)
MIN_OO, MIN_OH_INTER, MIN_HH_INTER = 2.3, 1.3, 1.4  # Å: closer intermolecular contacts are rejected
CONNECT_OO = 3.6  # Å: O–O distance that links waters into one cluster (no fragments)
VOLUME_PER_WATER = 30.0  # Å^3, liquid density


def _water(r_oh=R_OH, angle=ANGLE_HOH) -> np.ndarray:
    """O, H, H coordinates (Å) with O at the origin, in the xy plane, bisector along +x."""
    half = np.radians(angle) / 2
    return np.array([[0, 0, 0], [r_oh * np.cos(half), r_oh * np.sin(half), 0], [r_oh * np.cos(half), -r_oh * np.sin(half), 0]])


def _random_rotation(rng, sigma_deg=None) -> np.ndarray:
    from scipy.spatial.transform import Rotation

    if sigma_deg is None:
        return Rotation.random(random_state=rng).as_matrix()
    axis = rng.normal(size=3)
    axis /= np.linalg.norm(axis)
    return Rotation.from_rotvec(axis * np.radians(rng.normal(0, sigma_deg))).as_matrix()


def _pack(n_waters, rng) -> np.ndarray:
    radius = (3 * n_waters * VOLUME_PER_WATER / (4 * np.pi)) ** (1 / 3) + 1.0
    placed = []
    tries = 0
    while len(placed) < n_waters:
        tries += 1
        if tries % 2000 == 0:
            radius *= 1.1
        d = rng.normal(size=3)
        centre = d / np.linalg.norm(d) * radius * rng.random() ** (1 / 3)
        mol = _water() @ _random_rotation(rng).T + centre
        if all(_contacts_ok(mol, other) for other in placed) and (not placed or min(
                np.linalg.norm(mol[0] - o[0]) for o in placed) < CONNECT_OO):
            placed.append(mol)
    return np.concatenate(placed)


def _contacts_ok(a, b) -> bool:
    d = np.linalg.norm(a[:, None] - b[None], axis=-1)
    return d[0, 0] >= MIN_OO and min(d[0, 1:].min(), d[1:, 0].min()) >= MIN_OH_INTER and d[1:, 1:].min() >= MIN_HH_INTER


def cluster_problem(positions) -> str | None:
    """Why an O,H,H-ordered water cluster (Å) is unacceptable (too-close intermolecular contacts
    or fragments flown apart), or None if it is fine."""
    mols = np.asarray(positions).reshape(-1, 3, 3)
    n = len(mols)
    for i in range(n):
        for j in range(i + 1, n):
            if not _contacts_ok(mols[i], mols[j]):
                return f"waters {i} and {j} are too close"
    oo = np.linalg.norm(mols[:, None, 0] - mols[None, :, 0], axis=-1)
    seen, stack = {0}, [0]
    while stack:
        k = stack.pop()
        for j in np.where(oo[k] < CONNECT_OO)[0]:
            if j not in seen:
                seen.add(int(j))
                stack.append(int(j))
    if len(seen) < n:
        return f"cluster splits into fragments ({len(seen)} of {n} waters connected)"
    return None


class WaterBonds:
    """Harmonic O–H and H–H (Urey–Bradley) springs that hold TIP3P's waters together during the
    relaxation: far cheaper than RATTLE constraints (ASE's ``FixBondLengths``), and exact enough
    since the internal geometry is redrawn afterwards. Energies in eV, k in eV/Å^2."""

    k_oh, k_hh = 40.0, 10.0
    r_hh = 2 * R_OH * np.sin(np.radians(ANGLE_HOH) / 2)

    def energy_forces(self, positions):
        mols = positions.reshape(-1, 3, 3)
        forces = np.zeros_like(mols)
        energy = 0.0
        for a, b, k, r0 in ((0, 1, self.k_oh, R_OH), (0, 2, self.k_oh, R_OH), (1, 2, self.k_hh, self.r_hh)):
            d = mols[:, b] - mols[:, a]
            r = np.linalg.norm(d, axis=1)
            energy += 0.5 * k * np.sum((r - r0) ** 2)
            f = (k * (r - r0) / r)[:, None] * d
            forces[:, a] += f
            forces[:, b] -= f
        return energy, forces.reshape(-1, 3)


class FlexibleTIP3P(Calculator):
    """A flexible classical water model as an ASE calculator (energy, forces; eV, Å): TIP3P's
    intermolecular terms (``ase.calculators.tip3p.TIP3P``, Coulomb cutoff ``rc`` Å: keep it larger
    than the cluster) plus the :class:`WaterBonds` springs inside each water. Atoms in O,H,H order
    per molecule. The springs give an O–H stretch near 3400 cm^-1 and an H–O–H bend, so MD with it
    has an infrared spectrum; there are no RATTLE constraints, so use a timestep of about 0.5 fs."""

    implemented_properties = ["energy", "free_energy", "forces"]

    def __init__(self, rc: float = 100.0, **kwargs):
        from ase.calculators.tip3p import TIP3P

        super().__init__(**kwargs)
        self.tip3p, self.bonds = TIP3P(rc=rc), WaterBonds()

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        e_bond, f_bond = self.bonds.energy_forces(self.atoms.get_positions())
        energy = self.tip3p.get_potential_energy(self.atoms) + e_bond
        self.results = {"energy": energy, "free_energy": energy, "forces": self.tip3p.get_forces(self.atoms) + f_bond}


def _relax(atoms: Atoms, steps: int, fmax: float) -> Atoms:
    from ase.optimize import FIRE

    atoms.calc = FlexibleTIP3P()
    FIRE(atoms, logfile=None).run(fmax=fmax, steps=steps)
    atoms.calc = None
    return atoms


def _flexible_water(rng) -> np.ndarray:
    """O, H, H (Å) of one water with thermally drawn O–H lengths and H–O–H angle (see THERMAL),
    O at the origin, bisector along +x, in the xy plane."""
    t = THERMAL
    r1, r2 = np.clip(rng.normal(t["r_oh_mean"], t["r_oh_sigma"], 2), t["r_oh_mean"] - 3 * t["r_oh_sigma"], t["r_oh_mean"] + 3 * t["r_oh_sigma"])
    ang = np.clip(rng.normal(t["angle_mean"], t["angle_sigma"]), t["angle_mean"] - 3 * t["angle_sigma"], t["angle_mean"] + 3 * t["angle_sigma"])
    local = _water(1.0, ang)
    local[1] *= r1
    local[2] *= r2
    return local


def _thermalise(positions, rng) -> np.ndarray:
    t = THERMAL
    out = []
    for mol in np.asarray(positions).reshape(-1, 3, 3):
        # molecular frame of the relaxed water: bisector x, in-plane y, normal z
        bis = (mol[1] + mol[2]) / 2 - mol[0]
        x = bis / np.linalg.norm(bis)
        y = mol[1] - mol[2]
        y -= (y @ x) * x
        y /= np.linalg.norm(y)
        frame = np.stack([x, y, np.cross(x, y)])
        new = _flexible_water(rng) @ frame
        centre = new.mean(axis=0)
        rot = _random_rotation(rng, sigma_deg=t["rotation_deg"])
        new = (new - centre) @ rot.T + centre + mol[0] + rng.normal(0, t["translation"], 3)
        out.append(new)
    return np.concatenate(out)


def sample_cluster(n_waters: int, seed, relax_steps: int = 300, fmax: float = 0.05, max_tries: int = 50) -> Atoms:
    """One water cluster of ``n_waters`` (O,H,H order, Å), deterministic in ``seed`` (an int or
    a sequence of ints)."""
    if n_waters < 1:
        raise ValueError(f"n_waters must be >= 1, got {n_waters}")
    rng = np.random.default_rng(seed)
    for _ in range(max_tries):
        atoms = Atoms("OH2" * n_waters, positions=_pack(n_waters, rng))
        if relax_steps > 0 and n_waters > 1:
            atoms = _relax(atoms, relax_steps, fmax)
        relaxed = atoms.get_positions()
        for _ in range(max_tries):
            positions = _thermalise(relaxed, rng)
            if cluster_problem(positions) is None:
                return Atoms("OH2" * n_waters, positions=positions - positions.mean(axis=0))
    raise RuntimeError(f"could not sample an acceptable {n_waters}-water cluster in {max_tries}² tries")


def sample_clusters(n_clusters: int, n_waters_range, seed: int, relax_steps: int = 300, start: int = 0):
    """Yield ``n_clusters`` clusters with water counts drawn uniformly from ``n_waters_range``
    (min, max inclusive); cluster k depends only on (seed, k), so a run can resume at ``start``."""
    lo, hi = n_waters_range
    if not 1 <= lo <= hi:
        raise OptionError(f"invalid water range {lo} {hi}: need 1 <= MIN <= MAX")
    for k in range(start, n_clusters):
        n = int(np.random.default_rng([seed, k, 0]).integers(lo, hi + 1))
        atoms = sample_cluster(n, [seed, k, 1], relax_steps=relax_steps)
        atoms.info.update(index=k, **_settings(seed, n_waters_range, relax_steps))
        yield atoms


def _settings(seed, n_waters_range, relax_steps) -> dict:
    """The sampling settings stored in every cluster's ``info`` (a resumed file must match them)."""
    return {"seed": int(seed), "waters_min": int(n_waters_range[0]), "waters_max": int(n_waters_range[1]),
            "relax_steps": int(relax_steps)}


def sample_file(output, n_clusters: int, n_waters_range, seed: int = 0, relax_steps: int = 300, resume: bool = True,
                progress: bool = True) -> int:
    """Write ``n_clusters`` clusters (:func:`sample_clusters`) to the extxyz file ``output``. With
    ``resume``, an existing ``output`` is continued, but only if every cluster in it was sampled
    with the same ``seed``, water range and ``relax_steps`` (else :class:`OptionError`; files from
    before these were stored are checked on seed, index and water count), and each
    cluster is appended as soon as it is made; without, the clusters go to a temporary file that
    replaces ``output`` once all are written. Returns the
    number of new clusters."""
    import os

    import ase.io
    from tqdm import tqdm

    if n_clusters < 1:
        raise OptionError(f"the number of clusters must be >= 1, got {n_clusters}")
    output = os.fspath(output)
    wanted = _settings(seed, n_waters_range, relax_steps)
    start = 0
    if resume and os.path.exists(output):
        try:
            existing = ase.io.read(output, index=":", format="extxyz")
        except Exception as exc:  # ASE raises many kinds for unreadable files
            raise InputError(f"{output}: cannot read it to resume sampling ({type(exc).__name__}: {exc})") from exc
        for k, atoms in enumerate(existing):
            found = {name: atoms.info.get(name) for name in wanted}
            # files written before the settings were stored carry only seed and index: compare what
            # they hold, and their water count against the requested range
            differs = any(value is not None and value != wanted[name] for name, value in found.items())
            out_of_range = not wanted["waters_min"] <= len(atoms) // 3 <= wanted["waters_max"]
            if differs or out_of_range or found["seed"] is None or atoms.info.get("index") != k:
                raise OptionError(f"{output}: cluster {k} was sampled with other settings ({found}, index "
                                  f"{atoms.info.get('index')}); requested {wanted}: refusing to append (choose another "
                                  "output, or pass --no-resume)")
        start = len(existing)
    if start >= n_clusters:
        return 0
    target = output if resume else output + ".tmp"  # a fresh file replaces the old one only when complete
    with open(target, "a" if resume else "w") as fh:
        for atoms in tqdm(sample_clusters(n_clusters, n_waters_range, seed, relax_steps=relax_steps, start=start),
                          total=n_clusters, initial=start, desc="sampling clusters", unit="cluster", disable=not progress):
            ase.io.write(fh, atoms, format="extxyz")
            fh.flush()
    if target != output:
        os.replace(target, output)
    return n_clusters - start


def water_droplet(n_waters: int, seed, max_sweeps: int = 200) -> Atoms:
    """A large liquid-like water droplet (O,H,H order, Å) in seconds, for benchmarks and tests of
    scale (thousands of waters): O atoms on the liquid-density cubic lattice (3.1 Å) nearest the
    centre, jittered by 0.1 Å, each water randomly oriented with thermally drawn internal
    coordinates; waters in too-close contact are redrawn until none are. Not relaxed: use
    :func:`sample_cluster` for training data."""
    from scipy.spatial import cKDTree

    if n_waters < 1:
        raise ValueError(f"n_waters must be >= 1, got {n_waters}")
    rng = np.random.default_rng(seed)
    spacing = VOLUME_PER_WATER ** (1 / 3)
    side = int(np.ceil(n_waters ** (1 / 3))) + 2
    grid = np.stack(np.meshgrid(*[np.arange(side)] * 3, indexing="ij"), -1).reshape(-1, 3) * spacing
    grid -= grid.mean(axis=0)
    oxygens = grid[np.argsort(np.linalg.norm(grid, axis=1), kind="stable")[:n_waters]]
    oxygens = oxygens + rng.normal(0, 0.1, oxygens.shape)

    def draw(k):
        return _flexible_water(rng) @ _random_rotation(rng).T + oxygens[k]

    mols = np.stack([draw(k) for k in range(n_waters)])
    limit = np.array([[MIN_OO, MIN_OH_INTER, MIN_OH_INTER], [MIN_OH_INTER, MIN_HH_INTER, MIN_HH_INTER],
                      [MIN_OH_INTER, MIN_HH_INTER, MIN_HH_INTER]])
    for _ in range(max_sweeps):
        flat = mols.reshape(-1, 3)
        pairs = cKDTree(flat).query_pairs(MIN_OO, output_type="ndarray")
        i, j = pairs[:, 0], pairs[:, 1]
        clash = (i // 3 != j // 3) & (np.linalg.norm(flat[i] - flat[j], axis=1) < limit[i % 3, j % 3])
        bad = np.unique(j[clash] // 3)  # redraw one water of each clashing pair
        if len(bad) == 0:
            return Atoms("OH2" * n_waters, positions=flat - flat.mean(axis=0))
        for k in bad:
            mols[k] = draw(k)
    raise RuntimeError(f"could not place {n_waters} waters without clashes in {max_sweeps} sweeps")
