"""The project's exceptions: one base class, :class:`AseDensityError`, for every error a user can
cause (a bad file, structure, option or model). The command line catches it once and prints one
line; anything else is a bug and keeps its traceback.

Every class also derives from ``ValueError`` (callers that catch ``ValueError`` keep working).
"""

from __future__ import annotations


class AseDensityError(Exception):
    """Base of every ase-density error that a user's input can cause."""


class OptionError(AseDensityError, ValueError):
    """A function argument or command-line option outside its allowed range."""


class InputError(AseDensityError, ValueError):
    """An input file that is missing or cannot be read."""


class BasisError(AseDensityError, ValueError):
    """An auxiliary basis that cannot be loaded or does not cover an element."""


class StructureError(AseDensityError, ValueError):
    """A structure that ase-density cannot handle, with the reason."""


class DatasetError(AseDensityError, ValueError):
    """A reference file that is not ours, was made with other settings, or is damaged."""


class OutputError(AseDensityError, ValueError):
    """An output file that must not be written: another process writes it, it is one of the
    inputs, it holds another kind of data, or it was made with other settings."""


class ModelError(AseDensityError, ValueError):
    """A model file that is missing, is not a density model, or does not match its basis."""


class TrajectoryError(AseDensityError, ValueError):
    """A trajectory or analysis file that cannot be analysed, with the reason; ``n_done`` frames
    (those before the problem) are stored in the output."""

    def __init__(self, message, n_done: int = 0):
        super().__init__(message)
        self.n_done = n_done


class PredictionError(AseDensityError, ValueError):
    """Structures that could not be predicted, with the reason; ``n_done`` frames before the
    problem are stored in the output."""

    def __init__(self, message, n_done: int = 0):
        super().__init__(message)
        self.n_done = n_done
