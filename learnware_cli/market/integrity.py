"""Is what the market stored what its checks passed? The package's sha256 against the index.

Each version record in index.json holds the sha256 of its package.zip as the
submit checks read it. Whoever can write the market folder can swap that zip
afterwards for code no check ever saw, so everything that runs a stored
package (reuse) or vouches for it (show) verifies the bytes first, and a
mismatch is a one-line ``IntegrityError`` naming the learnware and version.

Version folders are derived from the id and version number
(``Market.version_dir``), never from the record's ``path``: an edited index
could point that anywhere on the disk.
"""

from __future__ import annotations

from pathlib import Path

from learnware_cli.errors import MarketError
from learnware_cli.market.store import Market, sha256_file

PACKAGE_FILE = "package.zip"


class IntegrityError(MarketError):
    """A stored file is not the one the index recorded (a market problem: exit code 5)."""


def version_folder(market: Market, learnware_id: str, record: dict) -> Path:
    """The folder of one index record; an id or version that could name another path is a corrupt index
    (``Market.version_dir`` refuses it)."""
    return market.version_dir(learnware_id, record.get("version"))


def verify_package(package: Path, learnware_id: str, record: dict) -> None:
    """Raise IntegrityError unless the file ``package`` has the sha256 that ``record`` holds.

    Pass the very copy that will be used (reuse verifies its private copy, then
    extracts that one), so the file cannot change between check and use.
    """
    where = f"learnware {learnware_id}@{record.get('version')}"
    expected = record.get("checksum")
    if not isinstance(expected, str) or not expected:
        raise IntegrityError(f"{where}: no sha256 is recorded for its {PACKAGE_FILE}, so it cannot be verified; remove it or resubmit")
    try:
        actual = sha256_file(package)
    except FileNotFoundError:
        raise IntegrityError(f"{where}: its {PACKAGE_FILE} is missing from the market; remove it or resubmit") from None
    except OSError as exc:
        raise IntegrityError(f"{where}: its {PACKAGE_FILE} cannot be read ({exc.strerror or exc})") from None
    if actual != expected.lower():
        raise IntegrityError(
            f"{where}: {PACKAGE_FILE} does not match its recorded sha256 (the stored file was modified); remove it or resubmit"
        )
