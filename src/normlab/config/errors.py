"""The error raised for an invalid configuration, before any training starts."""


class ConfigError(ValueError):
    """A config problem; the message names the key, the bad value and the fix."""
