"""The one exception type for problems the user can fix (bad input, bad options)."""

from __future__ import annotations

import re

_MARK = "\x1f"  # brackets a parameter's name inside a message (see :func:`param`)
_MARKED = re.compile(f"{_MARK}([A-Za-z_][A-Za-z0-9_]*){_MARK}")


def param(name: str) -> str:
    """A parameter's name in a :class:`UserError` message: printed as ``name`` by the library,
    as its flag ``--name`` by the command line."""
    return f"{_MARK}{name}{_MARK}"


class UserError(Exception):
    """Raised for bad input; the CLI prints ``iflow: error: <message>`` and exits 2.

    Library messages speak of parameters (``lr``, ``batch_size``), written with :func:`param`
    so that the command line can name them by their flags (:meth:`for_command_line`).
    """

    def __str__(self) -> str:
        return _MARKED.sub(r"\1", super().__str__())

    def for_command_line(self) -> str:
        """The message with each parameter written as its flag (``batch_size`` -> ``--batch-size``), on one line."""
        text = _MARKED.sub(lambda m: "--" + m.group(1).replace("_", "-"), super().__str__())
        return " ".join(text.split())
