"""Known failures, each with the exit code the CLI reports for it.

Library code raises these; ``learnware_cli.cli.app`` maps them to a one-line
message and the exit code below. Anything else is a bug (exit 1, traceback).
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_INTERNAL = 1
EXIT_USAGE = 2
EXIT_REJECTED = 3
EXIT_NOT_FOUND = 4
EXIT_MARKET = 5


class LwError(Exception):
    """Base class: a message fit for one line, and an exit code.

    ``extra``: fields a command adds to the ``--json`` error document (besides
    ok, error and message), so that a failing command can keep its own shape.
    """

    exit_code = EXIT_USAGE
    kind = "error"
    extra: dict | None = None

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message

    def with_extra(self, **fields) -> "LwError":
        self.extra = {**(self.extra or {}), **fields}
        return self


class UsageError(LwError):
    """The command line itself is wrong: an unknown option, a missing argument, a flag value out of range."""

    kind = "usage"


class InputError(LwError):
    """The user's input (file, flag, array) is unusable."""

    kind = "bad-input"


class SpecError(InputError):
    """A specification is malformed or does not fit where it is used."""

    kind = "bad-spec"


class NotFoundError(LwError):
    """A learnware, version or market that was named does not exist."""

    exit_code = EXIT_NOT_FOUND
    kind = "not-found"


class MarketError(LwError):
    """The market itself is missing, corrupt or already exists."""

    exit_code = EXIT_MARKET
    kind = "market"


class RejectedError(LwError):
    """A submitted package failed a check; ``check`` names which one."""

    exit_code = EXIT_REJECTED
    kind = "rejected"

    def __init__(self, check: str, message: str):
        super().__init__(f"{check}: {message}")
        self.check = check
        self.reason = message
