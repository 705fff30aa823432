"""The error raised for missing, corrupt or inconsistent data files."""


class DataError(RuntimeError):
    """A data problem the user can fix; the message names the file and the fix."""
