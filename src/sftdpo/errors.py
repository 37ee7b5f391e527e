"""Errors a user can cause. The CLI turns each into one line and an exit code."""


class SftdpoError(Exception):
    """A problem with the user's data, environment or options; never a bug."""

    exit_code = 1


class DataError(SftdpoError):
    """Data or environment problem (missing file, bad layout, offline hub): exit 1."""

    exit_code = 1


class UsageError(SftdpoError):
    """Bad option or config value: exit 2."""

    exit_code = 2
