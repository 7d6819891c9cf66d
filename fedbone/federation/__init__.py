"""The only part of fedbone that knows Flower: records, message kinds, egress.

``records`` converts between Flower records and numpy and digests content,
``kinds`` declares message types and what a reply of each may hold,
``egress`` screens and logs every reply a site sends, and ``site_context``
finds a site's configuration from a message and its context.
"""

from fedbone.federation.egress.guard import (
    EgressGuard,
    EgressLog,
    EgressRefused,
    EgressVerdict,
    egress_mod,
)
from fedbone.federation.records import (
    array_signature,
    arrays_to_record,
    canonical_bytes,
    content_digest,
    record_to_arrays,
)
from fedbone.federation.site_context import (
    guard_and_log_for,
    load_site_for,
    resolve_site_config_path,
)

__all__ = [
    "EgressGuard",
    "EgressLog",
    "EgressRefused",
    "EgressVerdict",
    "array_signature",
    "arrays_to_record",
    "canonical_bytes",
    "content_digest",
    "egress_mod",
    "guard_and_log_for",
    "load_site_for",
    "record_to_arrays",
    "resolve_site_config_path",
]
