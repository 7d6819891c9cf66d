"""Typed errors for the study PKI."""

from __future__ import annotations

from fedbone.errors import ProblemsError

__all__ = ["PkiError"]


class PkiError(ProblemsError):
    """A study PKI folder, certificate or key with one or more problems.

    Raised when creating files would overwrite existing ones without ``force``,
    when arguments are invalid, and when a certificate check fails (expired, not
    signed by the study CA, wrong host, key not matching). Every problem is listed.
    """

    kind = "PKI"
