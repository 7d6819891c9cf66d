"""Message kinds, study phases, and what a site's reply of each kind may hold.

The table :data:`REPLY_SPECS` is the whole egress policy in data: for every
message type a site answers, which records may go back, of which record type,
with which keys, and which value rule their values must pass (the rules
themselves live in :mod:`fedbone.federation.egress.guard`). A new kind of exchange is
one :class:`ReplySpec` entry here, plus a :class:`ValueRule` only when none of
the existing ones fits.

Record names and keys are templates: ``{model}`` stands for the ``<name>`` of a
``model-<name>`` record in the request (so a site can only name what the server
named), ``{name}`` for any short kebab-case token.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from enum import StrEnum
from functools import lru_cache
from itertools import product

__all__ = [
    "CENSUS_KEYS",
    "CONFIG_RECORD",
    "COX_COVARIATES",
    "COX_DERIVATIVES_KEYS",
    "EVALUATE",
    "MAX_COX_COVARIATES",
    "MAX_KEY_LENGTH",
    "MAX_RECORD_KEYS",
    "MODEL_RECORD_PREFIX",
    "OUTCOME_STATUS_RECORD",
    "PHASE_CENSUS",
    "PHASE_ENHANCE",
    "PHASE_GAN",
    "PHASE_OUTCOMES",
    "PHASE_REPORT",
    "PHASE_SYNTHESIZE",
    "PHASE_TRAIN",
    "PHASE_VALIDATE",
    "PRIVACY_KEYS",
    "PRIVACY_RECORD",
    "QUERY_CENSUS",
    "QUERY_CROSS_AUDIT",
    "QUERY_ENHANCE_COMPONENTS",
    "QUERY_ENHANCE_EVALUATE",
    "QUERY_GAN_TRAIN",
    "QUERY_OUTCOMES",
    "QUERY_OUTCOME_COX",
    "QUERY_PAIRED",
    "QUERY_RECEIVE_SYNTHETIC",
    "QUERY_SECAGG_KEYS",
    "QUERY_SECAGG_SHARES",
    "QUERY_SECAGG_UNMASK",
    "QUERY_SYNTHESIZE",
    "QUERY_UMAP",
    "QUERY_VALIDATE",
    "REPLY_SPECS",
    "SECAGG_INBOX_RECORD",
    "SECAGG_KEYS_RECORD",
    "SECAGG_MASKED_RECORD",
    "SECAGG_PEERS_RECORD",
    "SECAGG_SHARES_RECORD",
    "SECAGG_SURVIVORS_RECORD",
    "SECAGG_UNMASK_RECORD",
    "SECURE_AGGREGATION_KINDS",
    "SPLITS",
    "SUPPRESSED_KEYS",
    "SUPPRESSED_RECORD",
    "SYNTHETIC_KEYS",
    "SYNTHETIC_RECORD",
    "TASKS",
    "TRAIN",
    "TRAIN_SECAGG",
    "RecordSpec",
    "RecordType",
    "ReplySpec",
    "ValueRule",
    "template_matches",
]

PHASE_CENSUS = "census"
PHASE_TRAIN = "train"
PHASE_VALIDATE = "validate"
PHASE_REPORT = "report"
PHASE_GAN = "gan"
PHASE_SYNTHESIZE = "synthesize"
PHASE_OUTCOMES = "outcomes"
PHASE_ENHANCE = "enhance"

TRAIN = "train"
EVALUATE = "evaluate"
QUERY_CENSUS = "query.census"
QUERY_VALIDATE = "query.validate"
QUERY_PAIRED = "query.paired_components"
QUERY_GAN_TRAIN = "query.gan_train"
QUERY_SYNTHESIZE = "query.synthesize"
QUERY_RECEIVE_SYNTHETIC = "query.receive_synthetic"
QUERY_UMAP = "query.umap"
QUERY_CROSS_AUDIT = "query.cross_audit"
QUERY_OUTCOMES = "query.outcomes"
QUERY_OUTCOME_COX = "query.outcome_cox"
QUERY_ENHANCE_EVALUATE = "query.enhance_evaluate"
QUERY_ENHANCE_COMPONENTS = "query.enhance_components"
# Secure aggregation's four stages (fedbone.federation.secure_aggregation).
QUERY_SECAGG_KEYS = "query.secagg_keys"
QUERY_SECAGG_SHARES = "query.secagg_shares"
TRAIN_SECAGG = "train.secagg"
QUERY_SECAGG_UNMASK = "query.secagg_unmask"
SECURE_AGGREGATION_KINDS = (
    QUERY_SECAGG_KEYS,
    QUERY_SECAGG_SHARES,
    TRAIN_SECAGG,
    QUERY_SECAGG_UNMASK,
)
"""What phase ``train`` sends a site under ``training.secure_aggregation``."""
SECAGG_KEYS_RECORD = "secagg-keys"
SECAGG_PEERS_RECORD = "secagg-peers"
SECAGG_SHARES_RECORD = "secagg-shares"
SECAGG_INBOX_RECORD = "secagg-inbox"
SECAGG_MASKED_RECORD = "secagg-masked"
SECAGG_SURVIVORS_RECORD = "secagg-survivors"
SECAGG_UNMASK_RECORD = "secagg-unmask"

SYNTHETIC_RECORD = "synthetic"
"""ArrayRecord of released synthetic images (``images``) and their ``class-ids``."""
SYNTHETIC_KEYS = ("images", "class-ids")

CONFIG_RECORD = "config"
"""The ConfigRecord every server-to-site message carries (phase, task, run-name)."""

MODEL_RECORD_PREFIX = "model-"
"""Request records named ``model-<name>`` declare the models ``{model}`` can be."""

SUPPRESSED_RECORD = "suppressed"
"""ConfigRecord the guard adds to list small-cell-suppressed keys; never a site's."""

SUPPRESSED_KEYS = "keys"

SPLITS = ("train", "val", "test")
TASKS = ("bm", "ca")

CENSUS_KEYS = frozenset(
    [f"n-{split}" for split in SPLITS]
    + [
        f"n-{split}-{task}-{label}"
        for split, task, label in product(SPLITS, TASKS, ("pos", "neg"))
    ]
)

_NAME_TOKEN = r"[a-z0-9]+(?:[._-][a-z0-9]+)*"
_PLACEHOLDER = re.compile(r"\{(model|name)\}")


class RecordType(StrEnum):
    """The three Flower record types, named as fedbone messages say them."""

    ARRAYS = "ArrayRecord"
    METRICS = "MetricRecord"
    CONFIG = "ConfigRecord"


class ValueRule(StrEnum):
    """What the values of a record must be (enforced by the egress guard)."""

    MIRROR_REQUEST = "mirror-request"
    """Arrays: exactly the keys, shapes and dtypes of the same-named request record."""
    SCALARS = "scalars"
    """Metrics: int or float scalars (nan allowed), never lists."""
    SITE_METRICS = "site-metrics"
    """Metrics: scalars about this site's patients; withheld (counts -1, values
    nan) when the site's class counts ``n-pos``/``n-neg`` are small cells."""
    COUNTS = "counts"
    """Metrics: non-negative int counts; small cells are suppressed."""
    HISTOGRAMS = "histograms"
    """Metrics: list[int] bin counts with at least the guard's minimum of bins."""
    NOISY_HISTOGRAMS = "noisy-histograms"
    """Metrics: list[int] non-negative bin counts of a differentially private
    histogram (coarse on purpose: at least ``MIN_NOISY_BINS`` bins)."""
    SHORT_STRINGS = "short-strings"
    """Config: short str values (identifiers and hashes)."""
    AUDITED_IMAGES = "audited-images"
    """Arrays: ``images`` ``(N, H, W)`` float16 in [0, 1] and ``class-ids`` ``(N,)``
    int64; every image must be in the site's release register (its audit
    passed it) -- the guard checks each image's digest itself."""
    AUDIT_SUMMARY = "audit-summary"
    """Metrics: scalars, plus ``*-histogram`` lists of at most 64 int counts
    over fixed public bins; never per-image or per-patient values."""
    VERDICTS = "verdicts"
    """Arrays: ``passed``, a ``(N,)`` uint8 vector of 0/1 -- one verdict per image
    of the request's ``synthetic`` record, nothing else."""
    SURVIVAL_COUNTS = "survival-counts"
    """Metrics: a grid (``resolution-days``, ``horizon-days``) and per group
    ``at-risk-*`` (int, 0 or at least the small-cell threshold) with
    ``events-*``/``censored-*`` list[int] counts, one per grid interval, that
    add up to it."""
    NOISY_SURVIVAL_COUNTS = "noisy-survival-counts"
    """Metrics: as :attr:`SURVIVAL_COUNTS`, Laplace-noised (so no small-cell
    rule: the noise protects every count)."""
    COX_DERIVATIVES = "cox-derivatives"
    """Metrics: one Cox stratum's ``log-likelihood``, ``gradient`` (list[float]
    of at most ``MAX_COX_COVARIATES``), ``hessian`` (its square, row-major) and
    ``num-patients`` (at least the small-cell threshold), ``num-events``."""
    DENSITY_GRID = "density-grid"
    """Metrics: ``grid-*`` lists of int counts over a coarse 2-D grid (a cell of
    a ``grid-real*`` grid holds 0 or at least the small-cell threshold), plus
    scalars."""
    PUBLIC_KEYS = "public-keys"
    """Config: the round's two X25519 public keys, 32 bytes each."""
    SECAGG_SHARES = "secagg-shares"
    """Arrays: ``ciphertexts``, uint8 ``(n - 1, CIPHERTEXT_BYTES)`` for the
    ``n`` sites of the request's ``secagg-peers``: one sealed pair of shares
    per peer, nothing else."""
    MASKED_INPUT = "masked-input"
    """Arrays: ``masked``, a uint64 vector of exactly the request model's
    floating-point elements plus one (the weight)."""
    UNMASK_SHARES = "unmask-shares"
    """Arrays: ``self-mask-shares`` and ``mask-key-shares``, uint8 rows of
    ``SHARE_BYTES``, one per survivor and per dropped site the request named."""


@dataclass(frozen=True)
class RecordSpec:
    """One record a reply may hold.

    Parameters
    ----------
    name
        Record name or template (``metrics-{model}``).
    record_type
        The Flower record type it must be.
    rule
        The rule its values must pass.
    keys
        Allowed keys or key templates; ignored for :attr:`ValueRule.MIRROR_REQUEST`
        (the request decides the keys).
    """

    name: str
    record_type: RecordType
    rule: ValueRule
    keys: frozenset[str] = frozenset()


@dataclass(frozen=True)
class ReplySpec:
    """Everything a site's reply to one message type may contain.

    Parameters
    ----------
    kind
        The Flower message type (``train``, ``query.census``...).
    records
        The records allowed in the reply; anything else is refused.
    """

    kind: str
    records: tuple[RecordSpec, ...]


@lru_cache(maxsize=256)
def _template_pattern(template: str) -> re.Pattern[str]:
    parts = _PLACEHOLDER.split(template)
    # split() interleaves literal text with the captured placeholder names
    pattern = _NAME_TOKEN.join(re.escape(part) for part in parts[0::2])
    return re.compile(pattern)


def template_matches(template: str, name: str, models: Collection[str]) -> bool:
    """Whether ``name`` is one of the names ``template`` allows.

    Parameters
    ----------
    template
        A record name or key, possibly with ``{model}`` / ``{name}`` slots.
    name
        The concrete name found in a reply.
    models
        The model names the request declared (``model-<name>`` records); a
        ``{model}`` slot only accepts one of these.
    """
    if "{model}" not in template:
        return _template_pattern(template).fullmatch(name) is not None
    slots = template.count("{model}")
    for chosen in product(sorted(models), repeat=slots):
        concrete = template
        for model in chosen:
            concrete = concrete.replace("{model}", model, 1)
        if _template_pattern(concrete).fullmatch(name):
            return True
    return False


_TRAIN_METRICS = frozenset(
    {"num-examples", "train-loss", "val-loss", "val-auc", "epochs", "seconds"}
    | {"dp-epsilon", "dp-delta", "dp-noise-multiplier"}
)
_EVALUATE_METRICS = frozenset({"num-examples", "val-loss", "val-auc", "val-psnr"})
_SITE_KEYS = frozenset(
    {"site-id", "role", "config-sha256", "spec-fingerprint", "cache-hash", "canvas"}
)
_VALIDATION_METRICS = frozenset(
    {"n", "n-pos", "n-neg"}
    | {
        f"{measure}{bound}"
        for measure in ("auc", "sensitivity", "specificity")
        for bound in ("", "-low", "-high")
    }
)
_DELONG_KEYS = frozenset({"difference", "se", "z", "p-value"})
PRIVACY_RECORD = "privacy"
PRIVACY_KEYS = frozenset({"statistics-epsilon", "epsilon-spent", "delta-spent"})
"""What a site says of its budget with a noisy statistic release."""
_GAN_TRAIN_METRICS = frozenset(
    {"d-loss", "g-loss", "ada-p", "images-seen", "steps", "n-real", "dp-epsilon"}
)
_GAN_EVALUATE_METRICS = frozenset({"fd", "kid", "precision", "recall"})
_GAN_RUN_METRICS = frozenset(
    {
        "n-real",
        "n-held-out",
        "seconds",
        "images-seen",
        "best-step",
        "best-intra-fd",
        "{name}-step-{name}",
    }
    | {f"best-{m}" for m in _GAN_EVALUATE_METRICS}
    | {"curation-val-auc", "encoder-seconds", "n-checkpoints", "dp-epsilon"}
    # The selected generator's fidelity per class of the task, next to the
    # real-vs-real reference (fedbone.generative.fidelity.reference).
    | {
        f"{measure}-{source}-{group}"
        for measure in ("fd", "kid", "precision", "recall")
        for source in ("synthetic", "real")
        for group in ("neg", "pos", "all")
    }
)
_PROVENANCE_KEYS = frozenset(
    {
        "site-id",
        "round",
        "spacing-mm",
        "checkpoint-sha256",
        "encoder",
        "encoder-sha256",
        "classifier-sha256",
        "release-signature",
    }
)
_AUDIT_KEYS = frozenset(
    {
        "passed",
        "n-{name}",
        "real-quantile",
        "ms-ssim-ceiling",
        "membership-{name}",
        "threshold-{name}",
        "nearest-mse-{name}",
        "nearest-rank-{name}",
        "unrealistic-quantile",
        "fraction-unrealistic",
        "curation-{name}",
        "different-patient-{name}",
        "same-patient-{name}",
        "closest-pair-{name}",
    }
)
_UMAP_KEYS = frozenset({"grid-real", "grid-synthetic", "{name}"})
_SURVIVAL_KEYS = frozenset(
    {"resolution-days", "horizon-days", "at-risk-{name}", "events-{name}"}
    | {"censored-{name}"}
)
#: Every covariate of the Cox models (mirrors fedbone.outcomes.cohort.COX_MODELS):
#: site fits and PH checks name only these, never a free-form key.
COX_COVARIATES: Mapping[str, tuple[str, ...]] = {
    "crude": ("predicted-positive",),
    "adjusted": ("predicted-positive", "age-per-year", "male"),
}
_ALL_COVARIATES = sorted({c for cs in COX_COVARIATES.values() for c in cs})
_SITE_COX_KEYS = frozenset(
    {f"{part}-{c}" for part in ("coef", "variance") for c in _ALL_COVARIATES}
    | {"num-patients", "num-events"}
)
_PH_KEYS = frozenset(
    {f"{part}-{c}" for part in ("statistic", "p-value") for c in _ALL_COVARIATES}
)
MAX_RECORD_KEYS = 64
"""Most keys any metric or config record of a reply may hold."""
MAX_KEY_LENGTH = 64
"""Longest key (characters) a reply's record may use."""
OUTCOME_STATUS_RECORD = "outcome-status"
"""ConfigRecord of an outcome reply: ``<endpoint>-<part>`` -> status code."""
COX_DERIVATIVES_KEYS = frozenset(
    {"log-likelihood", "gradient", "hessian", "num-patients", "num-events"}
)
MAX_COX_COVARIATES = 8
#: One evaluated image set of phase enhance (``<method>-<level>``): its class
#: counts and sums over its scans of each quality measure, plus the site's FD.
_ENHANCE_QUALITY_KEYS = frozenset(
    {"n", "n-pos", "n-neg", "fd"}
    | {
        f"{part}-{measure}"
        for part in ("sum", "sumsq")
        for measure in ("psnr", "ssim", "ms-ssim", "perceptual")
    }
)
#: Hottest-focus counts against the standard scan, as sums (Bland-Altman, r).
_ENHANCE_AGREEMENT_KEYS = frozenset(
    {"n", "n-pos", "sum-x", "sum-y", "sum-xx", "sum-yy", "sum-xy"}
)

REPLY_SPECS: Mapping[str, ReplySpec] = {
    spec.kind: spec
    for spec in (
        ReplySpec(
            TRAIN,
            (
                RecordSpec("arrays", RecordType.ARRAYS, ValueRule.MIRROR_REQUEST),
                RecordSpec(
                    "metrics",
                    RecordType.METRICS,
                    ValueRule.SCALARS,
                    _TRAIN_METRICS | _GAN_TRAIN_METRICS,
                ),
            ),
        ),
        ReplySpec(
            EVALUATE,
            (
                RecordSpec(
                    "metrics",
                    RecordType.METRICS,
                    ValueRule.SCALARS,
                    _EVALUATE_METRICS | _GAN_EVALUATE_METRICS,
                ),
            ),
        ),
        ReplySpec(
            QUERY_GAN_TRAIN,
            (
                RecordSpec(
                    "metrics", RecordType.METRICS, ValueRule.SCALARS, _GAN_RUN_METRICS
                ),
                RecordSpec(
                    "provenance",
                    RecordType.CONFIG,
                    ValueRule.SHORT_STRINGS,
                    _PROVENANCE_KEYS,
                ),
            ),
        ),
        ReplySpec(
            QUERY_SYNTHESIZE,
            (
                RecordSpec(
                    SYNTHETIC_RECORD, RecordType.ARRAYS, ValueRule.AUDITED_IMAGES
                ),
                RecordSpec(
                    "audit", RecordType.METRICS, ValueRule.AUDIT_SUMMARY, _AUDIT_KEYS
                ),
                RecordSpec(
                    "provenance",
                    RecordType.CONFIG,
                    ValueRule.SHORT_STRINGS,
                    _PROVENANCE_KEYS,
                ),
            ),
        ),
        ReplySpec(
            QUERY_RECEIVE_SYNTHETIC,
            (
                RecordSpec(
                    "stored",
                    RecordType.METRICS,
                    ValueRule.COUNTS,
                    frozenset({"n-received", "n-stored"}),
                ),
                RecordSpec(
                    "pool",
                    RecordType.CONFIG,
                    ValueRule.SHORT_STRINGS,
                    frozenset({"pool-sha256"}),
                ),
            ),
        ),
        ReplySpec(
            QUERY_CROSS_AUDIT,
            (
                # verdict bits only: any distance would make the audit an
                # oracle over the auditor's training scans
                RecordSpec("verdicts", RecordType.ARRAYS, ValueRule.VERDICTS),
            ),
        ),
        ReplySpec(
            QUERY_UMAP,
            (
                RecordSpec(
                    "umap", RecordType.METRICS, ValueRule.DENSITY_GRID, _UMAP_KEYS
                ),
            ),
        ),
        ReplySpec(
            QUERY_CENSUS,
            (
                RecordSpec(
                    "site", RecordType.CONFIG, ValueRule.SHORT_STRINGS, _SITE_KEYS
                ),
                RecordSpec("census", RecordType.METRICS, ValueRule.COUNTS, CENSUS_KEYS),
            ),
        ),
        ReplySpec(
            QUERY_VALIDATE,
            (
                RecordSpec(
                    "metrics-{model}",
                    RecordType.METRICS,
                    ValueRule.SITE_METRICS,
                    _VALIDATION_METRICS,
                ),
                RecordSpec(
                    "histograms-{model}",
                    RecordType.METRICS,
                    ValueRule.HISTOGRAMS,
                    frozenset({"positives", "negatives"}),
                ),
                RecordSpec(
                    "paired-{model}-vs-{model}",
                    RecordType.METRICS,
                    ValueRule.SITE_METRICS,
                    _DELONG_KEYS,
                ),
                RecordSpec(
                    "noisy-histograms-{model}",
                    RecordType.METRICS,
                    ValueRule.NOISY_HISTOGRAMS,
                    frozenset({"positives", "negatives"}),
                ),
                RecordSpec(
                    PRIVACY_RECORD,
                    RecordType.METRICS,
                    ValueRule.SCALARS,
                    PRIVACY_KEYS,
                ),
            ),
        ),
        ReplySpec(
            QUERY_OUTCOMES,
            (
                RecordSpec(
                    "survival-{name}",
                    RecordType.METRICS,
                    ValueRule.SURVIVAL_COUNTS,
                    _SURVIVAL_KEYS,
                ),
                RecordSpec(
                    "noisy-survival-{name}",
                    RecordType.METRICS,
                    ValueRule.NOISY_SURVIVAL_COUNTS,
                    _SURVIVAL_KEYS,
                ),
                RecordSpec(
                    "site-cox-{name}",
                    RecordType.METRICS,
                    ValueRule.SCALARS,
                    _SITE_COX_KEYS,
                ),
                RecordSpec(
                    "ph-{name}",
                    RecordType.METRICS,
                    ValueRule.SCALARS,
                    _PH_KEYS,
                ),
                RecordSpec(
                    OUTCOME_STATUS_RECORD,
                    RecordType.CONFIG,
                    ValueRule.SHORT_STRINGS,
                    frozenset({"{name}"}),
                ),
                RecordSpec(
                    PRIVACY_RECORD,
                    RecordType.METRICS,
                    ValueRule.SCALARS,
                    PRIVACY_KEYS,
                ),
            ),
        ),
        ReplySpec(
            QUERY_OUTCOME_COX,
            (
                RecordSpec(
                    "cox-derivatives",
                    RecordType.METRICS,
                    ValueRule.COX_DERIVATIVES,
                    COX_DERIVATIVES_KEYS,
                ),
            ),
        ),
        ReplySpec(
            QUERY_ENHANCE_EVALUATE,
            (
                # every image set's class counts and quality sums (withheld
                # with the histograms when a class is a small cell)
                RecordSpec(
                    "metrics-{name}",
                    RecordType.METRICS,
                    ValueRule.SITE_METRICS,
                    _ENHANCE_QUALITY_KEYS,
                ),
                RecordSpec(
                    "agreement-{name}",
                    RecordType.METRICS,
                    ValueRule.SITE_METRICS,
                    _ENHANCE_AGREEMENT_KEYS,
                ),
                RecordSpec(
                    "histograms-{name}",
                    RecordType.METRICS,
                    ValueRule.HISTOGRAMS,
                    frozenset({"positives", "negatives"}),
                ),
            ),
        ),
        ReplySpec(
            QUERY_ENHANCE_COMPONENTS,
            (
                RecordSpec(
                    "components-{name}-vs-{name}",
                    RecordType.METRICS,
                    ValueRule.SCALARS,
                    frozenset({"n-pos", "n-neg", "sum-{name}"}),
                ),
            ),
        ),
        ReplySpec(
            QUERY_SECAGG_KEYS,
            (
                RecordSpec(
                    SECAGG_KEYS_RECORD,
                    RecordType.CONFIG,
                    ValueRule.PUBLIC_KEYS,
                    frozenset({"cipher-public-key", "mask-public-key"}),
                ),
            ),
        ),
        ReplySpec(
            QUERY_SECAGG_SHARES,
            (
                RecordSpec(
                    SECAGG_SHARES_RECORD, RecordType.ARRAYS, ValueRule.SECAGG_SHARES
                ),
            ),
        ),
        ReplySpec(
            TRAIN_SECAGG,
            (
                RecordSpec(
                    SECAGG_MASKED_RECORD, RecordType.ARRAYS, ValueRule.MASKED_INPUT
                ),
                # num-examples stays inside the masked vector
                RecordSpec(
                    "metrics",
                    RecordType.METRICS,
                    ValueRule.SCALARS,
                    _TRAIN_METRICS - {"num-examples"},
                ),
            ),
        ),
        ReplySpec(
            QUERY_SECAGG_UNMASK,
            (
                RecordSpec(
                    SECAGG_UNMASK_RECORD, RecordType.ARRAYS, ValueRule.UNMASK_SHARES
                ),
            ),
        ),
        ReplySpec(
            QUERY_PAIRED,
            (
                RecordSpec(
                    "components-{model}-vs-{model}",
                    RecordType.METRICS,
                    ValueRule.SCALARS,
                    frozenset({"n-pos", "n-neg", "sum-{name}"}),
                ),
            ),
        ),
    )
}
"""Reply rules per message type; a message type missing here is refused."""
