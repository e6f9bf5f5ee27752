"""ase-density: machine-learned electron densities for water clusters, for ASE and NequIP."""

__version__ = "0.1.0"
