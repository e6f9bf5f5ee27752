"""NequIP extension of ase-density: registers its per-atom fields (density coefficients, the
softness of the charge-equilibration readout, and the Hirshfeld population matrix of training data)."""

from nequip.data import register_fields

register_fields(node_fields=["density_coefficients", "charge_softness", "hirshfeld_population_matrix"])
