"""Decode a message to a site, once, into the typed request :class:`Site` works on.

Each function reads a message's ``config`` record (and its array records) with
the readers of :mod:`fedbone.federation.study_messages`, so a missing or
mistyped setting
is a :class:`~fedbone.federation.study_messages.StudyMessageError` naming the
key. The wire format (record names, config keys, values) is the one the server
writes; nothing here changes it.
"""

from __future__ import annotations

import numpy as np
from flwr.app import ConfigRecord, Context, Message

from fedbone.config.enhance import EnhanceSettings
from fedbone.errors import Problem
from fedbone.federation.kinds import (
    CONFIG_RECORD,
    PHASE_ENHANCE,
    PHASE_GAN,
    SYNTHETIC_RECORD,
)
from fedbone.federation.outcome_messages import OutcomeRequest
from fedbone.federation.records import record_to_arrays
from fedbone.federation.study_messages import (
    StudyMessageError,
    classifier_spec_from,
    config_bool,
    config_float,
    config_floats,
    config_int,
    config_str,
    dp_gan_from,
    dp_round_from,
    dp_statistics_from,
    enhance_settings_from,
    fold_from,
    gan_settings_from,
    local_state_from,
    models_from,
    pairs_from,
    pooled_histograms_from,
    synthesis_settings_from,
    train_spec_from,
)
from fedbone.safe_names import check_safe_name
from fedbone.site.requests import (
    ClassifierEvaluateRequest,
    ClassifierTrainRequest,
    CoxRequest,
    CrossAuditRequest,
    EnhanceComponentsRequest,
    EnhanceEvaluateRequest,
    EnhanceTrainRequest,
    EnhanceValidateRequest,
    EvaluateRequest,
    GanEvaluateRequest,
    GanRequest,
    OutcomesRequest,
    PairedRequest,
    ReceivedGenerator,
    ReceiveSyntheticRequest,
    SynthesizeRequest,
    TrainRequest,
    UmapRequest,
    ValidateRequest,
)

__all__ = [
    "ARRAYS_RECORD",
    "GENERATOR_RECORD",
    "cox_request",
    "cross_audit_request",
    "enhance_components_request",
    "enhance_validate_request",
    "evaluate_request",
    "gan_request",
    "model_arrays",
    "outcomes_request",
    "paired_request",
    "receive_synthetic_request",
    "synthesize_request",
    "train_request",
    "umap_request",
    "validate_request",
]

ARRAYS_RECORD = "arrays"
"""The global model sent with ``train`` and ``evaluate`` (and the reply's)."""
ENHANCER_RECORD_PREFIX = "enhancer-"
"""Request records ``enhancer-<method>``: a trained enhancer's arrays."""
GENERATOR_RECORD = "generator"
"""The federated generator sent with ``query.synthesize``."""


def _run_name(config: ConfigRecord) -> str:
    """Return the request's ``run-name``, refused unless a safe folder name.

    A site keeps each run's state in ``<work_dir>/<area>/<run-name>/``: a
    name the centre sends is checked before it can name a path.
    """
    return check_safe_name(config_str(config, "run-name"), "run-name")


def _config(message: Message) -> ConfigRecord:
    return message.content.config_records[CONFIG_RECORD]


def _is_gan_phase(config: ConfigRecord) -> bool:
    return config_str(config, "phase") == PHASE_GAN


def _is_enhance_phase(config: ConfigRecord) -> bool:
    return config_str(config, "phase") == PHASE_ENHANCE


def _enhancer(method: str, settings: EnhanceSettings) -> str:
    """Return ``method`` if the study's ``enhance.methods`` lists it; refuse it else.

    Checked before any work, so a made-up method is a clear refusal, not a
    failure after the pairs were built.
    """
    if method not in settings.methods:
        raise StudyMessageError(
            "enhancer",
            [
                Problem(
                    "unknown-enhancer",
                    f"{method!r} is not one of the study's methods "
                    f"({', '.join(settings.methods)})",
                    "enhancer",
                )
            ],
        )
    return method


def model_arrays(message: Message) -> dict[str, np.ndarray]:
    """Return the global model a ``train`` or ``evaluate`` message carries."""
    return record_to_arrays(message.content.array_records[ARRAYS_RECORD])


def gan_request(message: Message) -> GanRequest:
    """Decode GAN training: a federated round (phase ``gan``) or ``gan_train``."""
    config = _config(message)
    return GanRequest(
        task=config_str(config, "task"),
        run_name=_run_name(config),
        gan=gan_settings_from(config),
        classifier=classifier_spec_from(config),
        training=train_spec_from(config),
        seed=config_int(config, "seed"),
        dp=dp_gan_from(config),
    )


def train_request(message: Message, context: Context) -> TrainRequest:
    """Decode ``train``: a classifier round, or in phase ``gan`` a GAN round.

    The site's FedBN layers from earlier rounds come from ``context.state``.
    """
    config = _config(message)
    if _is_gan_phase(config):
        return gan_request(message)
    if _is_enhance_phase(config):
        settings = enhance_settings_from(config)
        return EnhanceTrainRequest(
            task=config_str(config, "task"),
            run_name=_run_name(config),
            method=_enhancer(config_str(config, "enhancer"), settings),
            enhance=settings,
            seed=config_int(config, "seed"),
        )
    return ClassifierTrainRequest(
        task=config_str(config, "task"),
        run_name=_run_name(config),
        phase=config_str(config, "phase"),
        classifier=classifier_spec_from(config),
        training=train_spec_from(config),
        dp=dp_round_from(config),
        fedbn=config_bool(config, "fedbn", False),
        local_state=local_state_from(context),
        synthetic_ratio=config_float(config, "synthetic-ratio", 0.0),
        synthetic_only=config_bool(config, "synthetic-only", False),
        seed=config_int(config, "seed", 0),
        fold=fold_from(config),
    )


def evaluate_request(message: Message, context: Context) -> EvaluateRequest:
    """Decode ``evaluate``: a classifier, or in phase ``gan`` the global GAN."""
    config = _config(message)
    if _is_gan_phase(config):
        return GanEvaluateRequest(
            gan=gan_settings_from(config),
            run_name=_run_name(config),
            seed=config_int(config, "seed"),
        )
    if _is_enhance_phase(config):
        settings = enhance_settings_from(config)
        return EnhanceEvaluateRequest(
            run_name=_run_name(config),
            method=_enhancer(config_str(config, "enhancer"), settings),
            enhance=settings,
            seed=config_int(config, "seed"),
        )
    return ClassifierEvaluateRequest(
        task=config_str(config, "task"),
        classifier=classifier_spec_from(config),
        fedbn=config_bool(config, "fedbn", False),
        local_state=local_state_from(context),
        fold=fold_from(config),
    )


def validate_request(message: Message) -> ValidateRequest:
    """Decode ``query.validate`` (its ``model-<name>`` records too)."""
    config = _config(message)
    return ValidateRequest(
        task=config_str(config, "task"),
        run_name=_run_name(config),
        phase=config_str(config, "phase"),
        classifier=classifier_spec_from(config),
        models=models_from(message.content),
        split=config_str(config, "split"),
        bins=config_int(config, "bins"),
        n_bootstrap=config_int(config, "n-bootstrap"),
        threshold=config_float(config, "threshold"),
        pairs=pairs_from(config),
        dp=dp_statistics_from(config),
    )


def paired_request(message: Message) -> PairedRequest:
    """Decode ``query.paired_components`` (models and pooled histograms)."""
    config = _config(message)
    return PairedRequest(
        task=config_str(config, "task"),
        classifier=classifier_spec_from(config),
        models=models_from(message.content),
        pooled=pooled_histograms_from(message.content),
        split=config_str(config, "split"),
        pairs=pairs_from(config),
    )


def synthesize_request(message: Message) -> SynthesizeRequest:
    """Decode ``query.synthesize``, with the federated generator if one is sent."""
    config = _config(message)
    generator = None
    if GENERATOR_RECORD in message.content.array_records:
        generator = ReceivedGenerator(
            gan=gan_settings_from(config),
            arrays=record_to_arrays(message.content.array_records[GENERATOR_RECORD]),
            sha256=config_str(config, "generator-sha256"),
            round_number=config_int(config, "generator-round"),
        )
    return SynthesizeRequest(
        task=config_str(config, "task"),
        run_name=_run_name(config),
        settings=synthesis_settings_from(config),
        classifier=classifier_spec_from(config),
        seed=config_int(config, "seed"),
        generator=generator,
    )


def receive_synthetic_request(message: Message) -> ReceiveSyntheticRequest:
    """Decode ``query.receive_synthetic``: the pool and its announced digest."""
    config = _config(message)
    pool = record_to_arrays(message.content.array_records[SYNTHETIC_RECORD])
    return ReceiveSyntheticRequest(
        run_name=_run_name(config),
        images=pool["images"],
        class_ids=pool["class-ids"],
        pool_sha256=config_str(config, "pool-sha256"),
    )


def umap_request(message: Message) -> UmapRequest:
    """Decode ``query.umap``."""
    config = _config(message)
    return UmapRequest(
        run_name=_run_name(config),
        gan=gan_settings_from(config),
        seed=config_int(config, "seed"),
    )


def cross_audit_request(message: Message) -> CrossAuditRequest:
    """Decode ``query.cross_audit``: the images another site released."""
    config = _config(message)
    arrays = record_to_arrays(message.content.array_records[SYNTHETIC_RECORD])
    return CrossAuditRequest(
        images=arrays["images"],
        class_ids=arrays.get("class-ids", np.zeros(0, dtype=np.int64)),
        released_by=config_str(config, "released-by"),
        run_name=_run_name(config),
        signature=config_str(config, "release-signature", ""),
    )


def outcomes_request(message: Message) -> OutcomesRequest:
    """Decode ``query.outcomes``: its settings and the one final model."""
    config = _config(message)
    settings = OutcomeRequest.from_config(config)
    (model,) = models_from(message.content).values()
    return OutcomesRequest(
        run_name=_run_name(config),
        phase=config_str(config, "phase"),
        classifier=classifier_spec_from(config),
        model=model,
        endpoints=settings.endpoints,
        split=settings.split,
        threshold=settings.threshold,
        resolution_days=settings.resolution_days,
        horizon_days=settings.horizon_days,
        ties=settings.ties,
        dp=dp_statistics_from(config),
    )


def cox_request(message: Message) -> CoxRequest:
    """Decode ``query.outcome_cox``: one Newton step's coefficients."""
    config = _config(message)
    return CoxRequest(
        run_name=_run_name(config),
        endpoint=config_str(config, "endpoint"),
        cox_model=config_str(config, "cox-model"),
        beta=config_floats(config, "beta"),
        ties=config_str(config, "ties"),
    )


def enhance_validate_request(message: Message) -> EnhanceValidateRequest:
    """Decode ``query.enhance_evaluate``: the enhancers and the classifier."""
    config = _config(message)
    settings = enhance_settings_from(config)
    (model,) = models_from(message.content).values()
    enhancers = {
        _enhancer(name.removeprefix(ENHANCER_RECORD_PREFIX), settings): (
            record_to_arrays(record)
        )
        for name, record in message.content.array_records.items()
        if name.startswith(ENHANCER_RECORD_PREFIX)
    }
    return EnhanceValidateRequest(
        task=config_str(config, "task"),
        run_name=_run_name(config),
        enhance=settings,
        enhancers=enhancers,
        classifier=classifier_spec_from(config),
        model=model,
        split=config_str(config, "split"),
        bins=config_int(config, "bins"),
        seed=config_int(config, "seed"),
    )


def enhance_components_request(message: Message) -> EnhanceComponentsRequest:
    """Decode ``query.enhance_components``: pooled histograms and the pairs."""
    config = _config(message)
    return EnhanceComponentsRequest(
        run_name=_run_name(config),
        pooled=pooled_histograms_from(message.content),
        pairs=pairs_from(config),
    )
