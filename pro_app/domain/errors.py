"""Errors raised by domain code and services, carried to the user as translated messages.

A message is an untranslated msgid (marked with :func:`N_` so extraction finds it) plus
named parameters; the web layer or CLI translates it for the person who reads it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def N_(message: str) -> str:  # noqa: N802 - the conventional gettext marker name
    """Mark a string for translation without translating it here."""
    return message


class DomainError(Exception):
    """A rule of the product was not met; nothing was changed."""

    def __init__(self, message: str, *, field: str | None = None, **params: Any) -> None:
        super().__init__(message % params if params else message)
        self.message = message
        self.field = field
        self.params: Mapping[str, Any] = params


class ValidationError(DomainError):
    """Input that can never be accepted as given."""


class NotFound(DomainError):
    """The record does not exist, or the caller may not know that it exists."""


class Conflict(DomainError):
    """The request clashes with the current state (already submitted, duplicate code, ...)."""
