"""The one exception type for problems the user can fix (bad input, bad options)."""


class UserError(Exception):
    """Raised for bad input; the CLI prints ``iflow: error: <message>`` and exits 2."""
