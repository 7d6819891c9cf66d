"""What each reply rule means: checks of a reply against its request.

:mod:`fedbone.federation.kinds` says which records a reply of each kind may
hold and which :class:`~fedbone.federation.kinds.ValueRule` their values obey;
this module turns that table into :class:`~fedbone.errors.Problem` lists. The
messages name records, keys, shapes and types, never values: a refusal is sent
to the server as the error reply.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any

from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict

from fedbone.errors import Problem
from fedbone.federation.egress.outcome_rules import (
    cox_derivative_problems,
    survival_count_problems,
)
from fedbone.federation.egress.secagg_rules import (
    public_key_problems,
    secagg_array_problems,
)
from fedbone.federation.egress.synthetic_rules import (
    ReleaseCheck,
    audit_summary_problems,
    audited_image_problems,
    density_grid_problems,
    verdict_problems,
)
from fedbone.federation.kinds import (
    CONFIG_RECORD,
    COX_COVARIATES,
    MAX_KEY_LENGTH,
    MAX_RECORD_KEYS,
    MODEL_RECORD_PREFIX,
    OUTCOME_STATUS_RECORD,
    PRIVACY_RECORD,
    QUERY_ENHANCE_COMPONENTS,
    QUERY_ENHANCE_EVALUATE,
    QUERY_OUTCOME_COX,
    QUERY_OUTCOMES,
    QUERY_PAIRED,
    QUERY_VALIDATE,
    REPLY_SPECS,
    SUPPRESSED_RECORD,
    SYNTHETIC_RECORD,
    RecordSpec,
    RecordType,
    ValueRule,
    template_matches,
)
from fedbone.federation.records import (
    ArraySignature,
    array_signature,
    payload_signature,
)
from fedbone.validation.histograms import MIN_NOISY_BINS

__all__ = ["RequestSnapshot", "reply_problems"]

_MAX_STRING = 128


@dataclass(frozen=True)
class RequestSnapshot:
    """What the guard needs from a request, captured before a handler runs.

    Handlers may consume the request's arrays (``keep_input=False``), so
    :func:`fedbone.federation.egress.guard.egress_mod` snapshots them first.

    Parameters
    ----------
    kind
        The message type.
    run_id, run_name, phase
        For the egress log (``run-name`` and ``phase`` from the ``config`` record).
    arrays
        Signature of each ArrayRecord the request carried, by record name.
    models
        The ``<name>`` of every ``model-<name>`` record in the request.
    private_statistics
        Whether the request asked for noisy statistics (``dp-stat-epsilon``).
    """

    kind: str
    run_id: int
    run_name: str
    phase: str
    arrays: Mapping[str, Mapping[str, ArraySignature]]
    models: frozenset[str]
    private_statistics: bool = False
    cox_model: str = ""

    @classmethod
    def of(cls, message: Message) -> RequestSnapshot:
        """Snapshot an incoming message."""
        content = message.content if message.has_content() else RecordDict()
        config = content.config_records.get(CONFIG_RECORD, ConfigRecord())
        return cls(
            kind=message.metadata.message_type,
            run_id=message.metadata.run_id,
            run_name=str(config.get("run-name", "")),
            phase=str(config.get("phase", "")),
            arrays={
                name: array_signature(record)
                for name, record in content.array_records.items()
            },
            models=frozenset(
                name.removeprefix(MODEL_RECORD_PREFIX)
                for name in content
                if name.startswith(MODEL_RECORD_PREFIX)
            ),
            private_statistics=_positive(config.get("dp-stat-epsilon", 0.0)),
            cox_model=str(config.get("cox-model", "")),
        )


def _positive(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and value > 0


#: Per kind: the records of a reply under ``dp.statistics`` (by prefix), and
#: those allowed in either mode.
_NOISY_RECORDS: Mapping[str, tuple[str, ...]] = {
    QUERY_VALIDATE: ("noisy-histograms-", PRIVACY_RECORD),
    QUERY_OUTCOMES: ("noisy-survival-", PRIVACY_RECORD),
}
_EITHER_MODE: Mapping[str, tuple[str, ...]] = {
    QUERY_OUTCOMES: (OUTCOME_STATUS_RECORD,),
}


def _statistics_mode_problems(
    request: RequestSnapshot, content: RecordDict
) -> list[Problem]:
    """Exact and noisy statistics must not mix, nor come unasked."""
    prefixes = _NOISY_RECORDS.get(request.kind)
    if prefixes is None:
        return []
    either = _EITHER_MODE.get(request.kind, ())
    noisy = [n for n in content if n.startswith(prefixes)]
    exact = [n for n in content if not n.startswith(prefixes) and n not in either]
    if not request.private_statistics:
        return [
            Problem(
                "noisy-without-request",
                "the request did not ask for noisy statistics (dp.statistics); "
                "send the exact records",
                name,
            )
            for name in noisy
        ]
    problems = [
        Problem(
            "exact-statistic-under-dp",
            "the request asked for noisy statistics only (dp.statistics); an "
            "exact record would void their differential privacy",
            name,
        )
        for name in exact
    ]
    if PRIVACY_RECORD not in content:
        problems.append(
            Problem(
                "missing-privacy-record",
                "a noisy-statistics reply must say what the site spent "
                f"(a {PRIVACY_RECORD!r} record)",
                PRIVACY_RECORD,
            )
        )
    return problems


def _describe(signature: ArraySignature) -> str:
    shape, dtype = signature
    return f"shape {shape} {dtype}"


def _check_mirrored_arrays(
    name: str, record: ArrayRecord, request: RequestSnapshot
) -> list[Problem]:
    expected = request.arrays.get(name)
    if expected is None:
        return [
            Problem(
                "unexpected-arrays",
                "the request carried no ArrayRecord of this name, so there is no "
                "model to return; only the received model's arrays may go back",
                name,
            )
        ]
    problems = []
    for key, declared in array_signature(record).items():
        where = f"{name}/{key}"
        try:
            actual = payload_signature(record[key])
        except ValueError as exc:
            problems.append(Problem("array-payload-mismatch", str(exc), where))
            continue
        if actual != declared:
            problems.append(
                Problem(
                    "array-payload-mismatch",
                    f"declares {_describe(declared)} but its bytes hold "
                    f"{_describe(actual)}; build arrays with Array(ndarray)",
                    where,
                )
            )
        elif key not in expected:
            problems.append(
                Problem(
                    "extra-array",
                    f"an array ({_describe(actual)}) the server did not send; a "
                    "reply may return only the received model's arrays, never "
                    "images or other data",
                    where,
                )
            )
        elif actual[0] != expected[key][0]:
            problems.append(
                Problem(
                    "array-shape-mismatch",
                    f"shape {actual[0]} but the server sent {expected[key][0]}; "
                    "return the model with the architecture it was sent",
                    where,
                )
            )
        elif actual[1] != expected[key][1]:
            problems.append(
                Problem(
                    "array-dtype-mismatch",
                    f"dtype {actual[1]} but the server sent {expected[key][1]}; "
                    "cast back to the received dtype",
                    where,
                )
            )
    problems += [
        Problem(
            "missing-array",
            "the server sent this array but the reply lacks it; return every "
            "received key",
            f"{name}/{key}",
        )
        for key in expected
        if key not in record
    ]
    return problems


def _value_type(value: Any) -> str:
    if isinstance(value, list):
        inner = type(value[0]).__name__ if value else "empty"
        return f"list[{inner}] of length {len(value)}"
    return type(value).__name__


@dataclass(frozen=True)
class _Limits:
    min_histogram_bins: int
    small_cell_threshold: int
    release_check: ReleaseCheck | None
    max_histogram_bins: int = 100_000
    require_private_statistics: bool = False


def _check_metric_value(
    where: str, key: str, value: Any, rule: ValueRule, limits: _Limits
) -> list[Problem]:
    if isinstance(value, list) and value and isinstance(value[0], float):
        return [
            Problem(
                "per-patient-values",
                f"a {_value_type(value)} looks like per-patient values, which "
                "never leave a site; send aggregates (scalars or histograms)",
                where,
            )
        ]
    if rule is ValueRule.AUDIT_SUMMARY:
        return audit_summary_problems(where, key, value)
    if rule is ValueRule.DENSITY_GRID:
        return density_grid_problems(where, key, value, limits.small_cell_threshold)
    min_bins = limits.min_histogram_bins
    if rule is ValueRule.NOISY_HISTOGRAMS:
        min_bins = MIN_NOISY_BINS
    if rule in (ValueRule.HISTOGRAMS, ValueRule.NOISY_HISTOGRAMS):
        if not isinstance(value, list):
            return [
                Problem(
                    "not-a-histogram",
                    f"expected list[int] bin counts, got {_value_type(value)}",
                    where,
                )
            ]
        if rule is ValueRule.HISTOGRAMS and len(value) > limits.max_histogram_bins:
            return [
                Problem(
                    "long-histogram",
                    f"{len(value)} bins, more than the {limits.max_histogram_bins} "
                    "this site allows (policy.max_histogram_bins): finer bins "
                    "would locate each patient's score",
                    where,
                )
            ]
        if len(value) < min_bins:
            return [
                Problem(
                    "short-histogram",
                    f"{len(value)} bins, fewer than the {min_bins} required so "
                    "that bins cannot single out patients; use more bins",
                    where,
                )
            ]
        if any(count < 0 for count in value):
            return [Problem("not-a-count", "histogram bins must be >= 0", where)]
        return []
    if isinstance(value, list):
        return [
            Problem(
                "list-not-allowed",
                f"a {_value_type(value)}; only histograms-* records may hold "
                "lists, everything else must be a scalar",
                where,
            )
        ]
    if rule is ValueRule.COUNTS and not (isinstance(value, int) and value >= 0):
        return [
            Problem(
                "not-a-count",
                f"expected a non-negative int count, got {_value_type(value)}",
                where,
            )
        ]
    return []


def _check_keys(
    name: str, record: Collection[str], spec: RecordSpec, models: Collection[str]
) -> list[Problem]:
    most = MAX_AUDIT_KEYS if spec.rule is ValueRule.AUDIT_SUMMARY else MAX_RECORD_KEYS
    if len(record) > most:
        # keys are content too: many keys could spell out per-patient values
        return [
            Problem(
                "too-many-keys",
                f"{len(record)} keys, more than the {most} a {spec.name!r} "
                "record may hold; send aggregates",
                name,
            )
        ]
    allowed = ", ".join(sorted(spec.keys))
    problems = [
        Problem(
            "long-key",
            f"a key of {len(key)} characters, more than {MAX_KEY_LENGTH}",
            f"{name}/{key[:MAX_KEY_LENGTH]}...",
        )
        for key in record
        if len(key) > MAX_KEY_LENGTH
    ]
    return problems + [
        Problem(
            "unexpected-key",
            f"not a key a {spec.name!r} record may hold; allowed: {allowed}",
            f"{name}/{key}",
        )
        for key in record
        if len(key) <= MAX_KEY_LENGTH
        and not any(template_matches(t, key, models) for t in spec.keys)
    ]


#: An audit summary holds a few dozen figures per class and image group.
MAX_AUDIT_KEYS = 256

_STATUS_CODE = re.compile(r"[a-z]+(?:-[a-z]+)*")  # letters only: no ids
_MAX_STATUS = 40


def _check_status_value(where: str, value: Any) -> list[Problem]:
    """Refuse an outcome status that is not a short kebab-case code."""
    if (
        isinstance(value, str)
        and len(value) <= _MAX_STATUS
        and _STATUS_CODE.fullmatch(value)
    ):
        return []
    return [
        Problem(
            "not-a-status-code",
            "expected a kebab-case status code of letters and hyphens, at most "
            f"{_MAX_STATUS} characters (included, too-few-patients...)",
            where,
        )
    ]


def _check_config_value(where: str, value: Any) -> list[Problem]:
    if not isinstance(value, str):
        return [
            Problem(
                "not-a-short-string",
                f"expected a str of at most {_MAX_STRING} characters, got "
                f"{_value_type(value)}",
                where,
            )
        ]
    if len(value) > _MAX_STRING:
        return [
            Problem(
                "not-a-short-string",
                f"{len(value)} characters, more than {_MAX_STRING}; send an "
                "identifier or a hash",
                where,
            )
        ]
    return []


def _check_record(
    name: str,
    record: ArrayRecord | MetricRecord | ConfigRecord,
    spec: RecordSpec | None,
    request: RequestSnapshot,
    limits: _Limits,
) -> list[Problem]:
    actual_type = RecordType(type(record).__name__)
    if spec is None or spec.record_type is not actual_type:
        allowed = [
            f"{r.record_type} {r.name!r}" for r in REPLY_SPECS[request.kind].records
        ]
        if any("{model}" in r for r in allowed):
            models = ", ".join(sorted(request.models)) or "none"
            allowed.append(f"where {{model}} is a model the request sent ({models})")
        arrays = actual_type is RecordType.ARRAYS
        code = "unexpected-arrays" if arrays else "unexpected-record"
        return [
            Problem(
                code,
                f"a {actual_type} a reply to {request.kind!r} may not carry; "
                f"allowed: {', '.join(allowed)}",
                name,
            )
        ]
    if isinstance(record, ArrayRecord):
        if spec.rule is ValueRule.AUDITED_IMAGES:
            return audited_image_problems(name, record, limits.release_check)
        if spec.rule is ValueRule.VERDICTS:
            images = request.arrays.get(SYNTHETIC_RECORD, {}).get("images")
            return verdict_problems(name, record, None if images is None else images[0])
        if spec.rule in _SECAGG_ARRAYS:
            return secagg_array_problems(name, record, spec.rule, request.arrays)
        return _check_mirrored_arrays(name, record, request)
    problems = _check_keys(name, record, spec, request.models)
    if spec.rule is ValueRule.PUBLIC_KEYS and isinstance(record, ConfigRecord):
        return problems + public_key_problems(name, record)
    if spec.rule in (ValueRule.SURVIVAL_COUNTS, ValueRule.NOISY_SURVIVAL_COUNTS):
        return problems + survival_count_problems(
            name,
            record,
            small_cell_threshold=limits.small_cell_threshold,
            noisy=spec.rule is ValueRule.NOISY_SURVIVAL_COUNTS,
        )
    if spec.rule is ValueRule.COX_DERIVATIVES:
        return (
            problems
            + cox_derivative_problems(
                name, record, small_cell_threshold=limits.small_cell_threshold
            )
            + _cox_size_problems(name, record, request.cox_model)
        )
    if problems and any(p.code == "too-many-keys" for p in problems):
        return problems
    for key, value in record.items():
        where = f"{name}/{key}"
        if isinstance(record, MetricRecord):
            problems += _check_metric_value(where, key, value, spec.rule, limits)
        elif name == OUTCOME_STATUS_RECORD:
            problems += _check_status_value(where, value)
        else:
            problems += _check_config_value(where, value)
    return problems


_SECAGG_ARRAYS = (
    ValueRule.SECAGG_SHARES,
    ValueRule.MASKED_INPUT,
    ValueRule.UNMASK_SHARES,
)


def _cox_size_problems(name: str, record: Any, cox_model: str) -> list[Problem]:
    """Tie the derivatives' size to the requested model; events within patients."""
    problems = []
    covariates = COX_COVARIATES.get(cox_model)
    gradient = record.get("gradient")
    if covariates is None:
        problems.append(
            Problem(
                "unknown-cox-model",
                f"the request named no Cox model this site fits ({cox_model!r})",
                name,
            )
        )
    elif isinstance(gradient, list) and len(gradient) != len(covariates):
        problems.append(
            Problem(
                "bad-gradient",
                f"{len(gradient)} values; the {cox_model} model has "
                f"{len(covariates)} covariates",
                f"{name}/gradient",
            )
        )
    patients, events = record.get("num-patients"), record.get("num-events")
    if isinstance(patients, int) and isinstance(events, int) and events > patients:
        problems.append(
            Problem("bad-count", "more events than patients", f"{name}/num-events")
        )
    return problems


def _histogram_count_problems(
    content: RecordDict, *, same_patients: bool = True
) -> list[Problem]:
    """Exact histograms add up to the reply's own class counts, for every model.

    Every model is scored on the same patients, so each ``histograms-<model>``
    must hold exactly ``n-pos`` positives and ``n-neg`` negatives, the counts
    of its ``metrics-<model>`` record; anything else is not a histogram of
    this site's patients.
    """
    problems: list[Problem] = []
    counts: set[tuple[object, object]] = set()
    for name, record in content.metric_records.items():
        if not name.startswith("histograms-"):
            continue
        model = name.removeprefix("histograms-")
        metrics = content.metric_records.get(f"metrics-{model}")
        if metrics is None:
            problems.append(
                Problem(
                    "histogram-without-counts",
                    "a score histogram leaves only with its model's metrics "
                    "(n-pos, n-neg) to check it against",
                    name,
                )
            )
            continue
        expected = (metrics.get("n-pos"), metrics.get("n-neg"))
        counts.add(expected)
        found = tuple(
            sum(v) if isinstance(v, list) else None
            for v in (record.get("positives"), record.get("negatives"))
        )
        if found != expected:
            problems.append(
                Problem(
                    "histogram-count-mismatch",
                    "the histogram's bins do not add up to the site's n-pos and "
                    "n-neg for this model",
                    name,
                )
            )
    if same_patients and len(counts) > 1:
        problems.append(
            Problem(
                "inconsistent-counts",
                "models scored on the same patients report different class counts",
                "metrics-*",
            )
        )
    return problems


#: Replies that carry exact statistics about the site's patients.
_EXACT_STATISTICS = (
    QUERY_VALIDATE,
    QUERY_OUTCOMES,
    QUERY_OUTCOME_COX,
    QUERY_PAIRED,
    QUERY_ENHANCE_EVALUATE,
    QUERY_ENHANCE_COMPONENTS,
)


def _required_privacy_problems(request: RequestSnapshot) -> list[Problem]:
    if request.private_statistics or request.kind not in _EXACT_STATISTICS:
        return []
    return [
        Problem(
            "dp-statistics-required",
            "this site lets statistics about its patients out only under "
            "differential privacy (privacy.require_dp_statistics)",
            request.kind,
        )
    ]


def reply_problems(
    request: RequestSnapshot,
    content: RecordDict,
    *,
    min_histogram_bins: int,
    small_cell_threshold: int = 5,
    release_check: ReleaseCheck | None = None,
    max_histogram_bins: int = 100_000,
    require_private_statistics: bool = False,
) -> list[Problem]:
    """Every way ``content`` breaks the reply rules for ``request``'s kind.

    Parameters
    ----------
    request
        Snapshot of the message being answered.
    content
        The records a handler wants to send.
    min_histogram_bins
        Fewest bins a ``histograms-*`` list may have.
    small_cell_threshold
        Density-grid cells must be 0 or at least this.
    release_check
        Finds images the site's audit did not release; without it no image
        may leave.
    max_histogram_bins
        Most bins a ``histograms-*`` list may have (the site's policy).
    require_private_statistics
        Refuse every exact statistic about the site's patients.
    """
    limits = _Limits(
        min_histogram_bins,
        small_cell_threshold,
        release_check,
        max_histogram_bins,
        require_private_statistics,
    )
    spec = REPLY_SPECS.get(request.kind)
    if spec is None:
        known = ", ".join(sorted(REPLY_SPECS))
        return [
            Problem(
                "unknown-kind",
                f"no egress rules for message type {request.kind!r} (known: "
                f"{known}); add a ReplySpec to fedbone.federation.kinds",
            )
        ]
    problems: list[Problem] = []
    for name, record in content.items():
        if name == SUPPRESSED_RECORD:
            problems.append(
                Problem(
                    "reserved-record",
                    "only the egress guard writes this record; drop it",
                    name,
                )
            )
            continue
        record_spec = next(
            (r for r in spec.records if template_matches(r.name, name, request.models)),
            None,
        )
        problems += _check_record(name, record, record_spec, request, limits)
    if limits.require_private_statistics:
        problems += _required_privacy_problems(request)
    if request.kind == QUERY_VALIDATE:
        problems += _histogram_count_problems(content)
    elif request.kind == QUERY_ENHANCE_EVALUATE:
        # image sets of real fast scans cover a subset of the patients
        problems += _histogram_count_problems(content, same_patients=False)
    return problems + _statistics_mode_problems(request, content)
