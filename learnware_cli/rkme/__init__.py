"""RKME table specifications: fit, compare, mix and sample, on JAX.

Importing this package does not import JAX: the first fit or kernel computation
does (with float64 enabled and the compilation cache set, by ``_jax_setup``), so
reading, saving and comparing keys of specs, and the NumPy two-stage search, start fast.
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
