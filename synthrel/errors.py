"""Errors a user can act on: each names the file or config key and what was expected."""


class SynthrelError(Exception):
    """Base class for errors caused by input or configuration (not by a bug)."""


class ConfigError(SynthrelError, ValueError):
    """A configuration value is invalid; the message names the key."""


class DatasetError(SynthrelError):
    """A dataset on disk is missing, incomplete or malformed; the message names the path."""


class WeightsError(SynthrelError):
    """Model weights are missing or do not match their config."""


def unknown_name(kind: str, name: str, valid, key: str | None = None) -> ConfigError:
    """Build the error for a name that is not one of `valid`, listing the valid names."""
    where = f" (config key `{key}`)" if key else ""
    return ConfigError(f"unknown {kind} {name!r}{where}; valid names: {', '.join(sorted(map(str, valid)))}")
