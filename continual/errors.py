"""Errors that carry a message a user can act on (what is wrong, and how to fix it)."""


class ContinualError(Exception):
    """Base class: a problem the user can fix; printed without a traceback by the CLI."""


class ConfigError(ContinualError):
    """An impossible or unknown configuration value."""


class DataError(ContinualError):
    """A missing, empty or corrupt data source, or too little data for the request."""


class ModelError(ContinualError):
    """A model that cannot be found, prepared or loaded."""
