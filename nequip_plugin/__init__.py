"""NequIP extension of ase-density: registers the per-atom field of density coefficients."""

from nequip.data import register_fields

register_fields(node_fields=["density_coefficients"])
