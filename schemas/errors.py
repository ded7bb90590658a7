"""Errors a user can cause. The `openwit` command prints them as one line, no traceback."""

from __future__ import annotations


class UserError(Exception):
    """Bad path, bad option, bad input file: something the user can fix."""


class SchemaError(UserError):
    """A table or file does not match the schema it is read or written as."""
