"""The table RKME (``RKMETableSpecification``) as a ``Specification``.

The implementation is ``learnware_cli.rkme.RKMESpec`` itself: its numerics
live in ``learnware_cli.rkme`` (``spec.py``, ``kernels.py``) and it carries
the interface's methods. Island key: ("table", input dimension, gamma).
Importing this module imports JAX.
"""

from __future__ import annotations

from learnware_cli.rkme.spec import SPEC_TYPE, TABLE_KIND, RKMESpec
from learnware_cli.specs.registry import register

TableSpecification = RKMESpec

register(RKMESpec, "RKMEStatSpecification")

__all__ = ["SPEC_TYPE", "TABLE_KIND", "TableSpecification"]
