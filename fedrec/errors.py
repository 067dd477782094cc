"""Errors that reach the user as one clear line: what is wrong and how to fix it."""

from __future__ import annotations


class FedrecError(Exception):
    """Base class of every error fedrec raises on bad input.

    The message is a single line naming the problem and the fix; the command-line
    entry points print it without a traceback and exit with status 2.
    """


class DataError(FedrecError):
    """A dataset file is missing, malformed, or empty after filtering."""


class ConfigError(FedrecError):
    """A run configuration value is unknown, out of range, or inconsistent."""
