"""RKME table specifications: fit, compare, mix and sample, on JAX.

Importing this package imports JAX (with float64 enabled); the CLI imports it
only inside commands that need it.
"""

from learnware_cli.rkme.spec import (
    RKMESpec,
    SpecStack,
    approximation_error,
    clean_data,
    fit_rkme,
    herd,
    inner_product,
    mixture_weights,
    mmd2,
    mmd2_to_many,
)

__all__ = [
    "RKMESpec",
    "SpecStack",
    "approximation_error",
    "clean_data",
    "fit_rkme",
    "herd",
    "inner_product",
    "mixture_weights",
    "mmd2",
    "mmd2_to_many",
]
