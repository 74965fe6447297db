"""lw: a toolkit for learnware markets.

The library works without the CLI: ``learnware_cli.rkme`` fits and compares
specifications, ``learnware_cli.market`` stores and checks learnwares,
``learnware_cli.search`` finds them and ``learnware_cli.reuse`` applies them.
"""

__version__ = "0.1.0"
