"""NequIP extension of ase-density: registers its per-atom fields (density coefficients, and the
softness of the charge-equilibration readout)."""

from nequip.data import register_fields

register_fields(node_fields=["density_coefficients", "charge_softness"])
