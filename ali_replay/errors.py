"""Errors caused by user input: the CLI prints them as one line and exits non-zero."""


class UserError(Exception):
    """A problem the user can fix; the message names the problem and the fix."""


class ConfigError(UserError):
    """An unknown config key, a wrong type, or an unknown name (preset, strategy, ...)."""


class DataError(UserError):
    """A missing data root or file, a malformed array file, or labels out of range."""


class CheckpointError(UserError):
    """A missing, truncated or corrupt checkpoint."""


class ShapeError(UserError):
    """A data set whose image shape does not fit the chosen model."""
