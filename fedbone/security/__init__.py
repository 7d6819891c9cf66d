"""Study PKI: the study CA, the server's TLS certificate and the sites' keys.

Flower-free: it writes the files that ``flower-superlink`` (``--ssl-*``) and
``flower-supernode`` (``--root-certificates``, ``--auth-supernode-private-key``)
read, and ``flwr supernode register`` accepts.
"""

from __future__ import annotations

from fedbone.security.errors import PkiError
from fedbone.security.pki import (
    StudyPki,
    add_site_keys,
    check_server_certificate,
    create_study_pki,
)

__all__ = [
    "PkiError",
    "StudyPki",
    "add_site_keys",
    "check_server_certificate",
    "create_study_pki",
]
