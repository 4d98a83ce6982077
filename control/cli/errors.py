"""The CLI's own failure type."""

from __future__ import annotations


class CliError(Exception):
    """A failure to show the user as ``error: MESSAGE``; exit status 1 (as for ``ApiError`` from the client)."""
