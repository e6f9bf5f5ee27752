"""ase-density: machine-learned electron densities for water clusters, for ASE and NequIP."""

__version__ = "0.1.0"


def __getattr__(name):
    # lazy: importing the calculator pulls in torch and nequip
    if name == "DensityCalculator":
        from .calculator import DensityCalculator

        return DensityCalculator
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
