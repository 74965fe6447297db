"""Statistical specifications behind one small interface, dispatched by the reference's type names.

``base.Specification`` is the contract (type name, JSON, fit, island key,
stacked arrays, MMD^2); ``registry`` maps type names to classes and loads
spec files; ``table`` registers the table RKME (``RKMESpec``). Importing this
package does not import JAX.
"""

from learnware_cli.specs.base import IslandKey, Specification, StackArrays, data_type_of, read_json, same_island
from learnware_cli.specs.registry import DEFAULT_TYPE, known_types, load_spec, register, spec_class

__all__ = [
    "DEFAULT_TYPE",
    "IslandKey",
    "Specification",
    "StackArrays",
    "data_type_of",
    "known_types",
    "load_spec",
    "read_json",
    "register",
    "same_island",
    "spec_class",
]
