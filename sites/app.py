"""fedbone's Flower ClientApp: one hospital's site.

Every handler is thin: unpack the records, call the fedbone library, pack the
reply. The egress guard is the first mod, so every reply (and every refusal) is
screened and logged in the site's egress log before it can leave; the replay
mod after it makes the site's work exactly-once across a centre's restart.
"""

from __future__ import annotations

import os
from pathlib import Path

from flwr.app import ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from fedbone.classifier.dp_rounds import train_round_dp
from fedbone.classifier.rounds import evaluate_round, train_round
from fedbone.classifier.runtime import torch_threads
from fedbone.config.privacy import DpPhaseSettings
from fedbone.config.site import SiteConfig
from fedbone.data.cache import SiteCache
from fedbone.data.census import take_census
from fedbone.federation.egress.guard import egress_mod
from fedbone.federation.kinds import CONFIG_RECORD, PHASE_GAN, SYNTHETIC_RECORD
from fedbone.federation.outcome_messages import (
    COX_DERIVATIVES_RECORD,
    OutcomeRequest,
    counts_record,
    derivatives_record,
    outcome_reply,
)
from fedbone.federation.records import arrays_to_record, record_to_arrays
from fedbone.federation.replay import replay_mod
from fedbone.federation.site_context import (
    guard_and_log_for,
    load_site_for,
    open_site_cache,
    release_register_of,
)
from fedbone.federation.study_messages import (
    classifier_spec_from,
    config_bool,
    config_float,
    config_floats,
    config_int,
    config_str,
    dp_gan_from,
    dp_round_from,
    dp_statistics_from,
    local_state_from,
    local_state_to,
    metric_record,
    models_from,
    pairs_from,
    pooled_histograms_from,
    train_spec_from,
)
from fedbone.federation.synthetic_messages import (
    gan_settings_from,
    synthesis_settings_from,
)
from fedbone.generative.audit.cross_audit import cross_audit_at_site
from fedbone.generative.federated_gan import (
    evaluate_federated_gan,
    federated_gan_round,
    install_federated_generator,
    site_seed,
)
from fedbone.generative.site_gan import train_site_generator
from fedbone.generative.site_synthesis import (
    mixed_training_view,
    store_received_pool,
    synthesize_at_site,
    umap_at_site,
)
from fedbone.outcomes.cohort import OutcomeCohort, cohort_path, score_outcome_cohort
from fedbone.outcomes.private_counts import release_noisy_survival_counts
from fedbone.outcomes.release import cohort_derivatives, outcome_release
from fedbone.outcomes.survival_grid import TimeGrid
from fedbone.privacy.ledger import PrivacyLedger
from fedbone.privacy.site_spending import open_site_ledger, refuse_without_dp
from fedbone.validation.private import DpStatisticsSpec, release_private_histograms
from fedbone.validation.site import paired_components, validate_models

__all__ = ["app"]


def _work_dir(message: Message, context: Context) -> Path:
    return load_site_for(message, context).work_dir


# The guard comes first so that every reply, replayed ones too, is screened
# and logged; the replay mod answers a repeated request (a restarted centre
# resending the round in flight) from the reply the site already made.
app = ClientApp(mods=[egress_mod(guard_and_log_for), replay_mod(_work_dir)])

_ARRAYS = "arrays"
_GENERATOR = "generator"


def _request(message: Message, context: Context) -> tuple[SiteConfig, ConfigRecord]:
    """Return the site's config and the request's ``config`` record."""
    return load_site_for(message, context), message.content.config_records[
        CONFIG_RECORD
    ]


def _site(message: Message, context: Context) -> tuple[ConfigRecord, SiteCache]:
    site, config = _request(message, context)
    return config, open_site_cache(site)


@app.query("census")
def census(message: Message, context: Context) -> Message:
    """Report the site's identity and counts (small cells suppressed on egress)."""
    site = load_site_for(message, context)
    result = take_census(
        open_site_cache(site),
        site_id=site.site_id,
        role=site.role.value,
        config_sha256=site.file_sha256(),
    )
    identity = ConfigRecord(
        {
            "site-id": result.site_id,
            "role": result.role,
            "config-sha256": result.config_sha256,
            "spec-fingerprint": result.spec_fingerprint,
            "cache-hash": result.cache_hash,
            "canvas": result.canvas,
        }
    )
    content = RecordDict({"site": identity, "census": metric_record(result.counts)})
    return Message(content, reply_to=message)


@app.train()
def train(message: Message, context: Context) -> Message:
    """Train the received global model on the site's data for one round.

    With ``synthetic-ratio`` or ``synthetic-only`` set, the run's received
    synthetic pool is mixed into the training split.
    """
    site, config = _request(message, context)
    if config_str(config, "phase") == PHASE_GAN:
        return _federated_gan_round(message, site, config)
    task = config_str(config, "task")
    dp_round = dp_round_from(config)
    if dp_round is None:
        refuse_without_dp(site)
    cache = mixed_training_view(
        open_site_cache(site),
        task,
        ratio=config_float(config, "synthetic-ratio", 0.0),
        synthetic_only=config_bool(config, "synthetic-only", False),
        work_dir=site.work_dir,
        run_name=config_str(config, "run-name"),
        seed=config_int(config, "seed", 0),
    )
    arrays = record_to_arrays(message.content.array_records[_ARRAYS])
    if dp_round is not None:
        result = train_round_dp(
            cache,
            task,
            classifier_spec_from(config),
            train_spec_from(config),
            arrays,
            dp_round,
            open_site_ledger(site, len(cache.indices("train"))),
            run_name=config_str(config, "run-name"),
            phase=config_str(config, "phase"),
        )
    else:
        result = train_round(
            cache,
            task,
            classifier_spec_from(config),
            train_spec_from(config),
            arrays,
            fedbn=config_bool(config, "fedbn", False),
            local_state=local_state_from(context),
        )
        local_state_to(context, result.local_state)
    content = RecordDict(
        {
            _ARRAYS: arrays_to_record(result.arrays),
            "metrics": metric_record(result.metrics),
        }
    )
    return Message(content, reply_to=message)


def _gan_privacy(
    site: SiteConfig, config: ConfigRecord
) -> tuple[DpPhaseSettings | None, PrivacyLedger | None]:
    """Return the GAN's DP request and the site's ledger (or refuse non-DP)."""
    dp = dp_gan_from(config)
    if dp is None:
        refuse_without_dp(site)
        return None, None
    n_training = len(open_site_cache(site).indices("train"))
    return dp, open_site_ledger(site, n_training)


def _federated_gan_round(
    message: Message, site: SiteConfig, config: ConfigRecord
) -> Message:
    """Train the received global GAN for one round (phase ``gan``, federated)."""
    dp, ledger = _gan_privacy(site, config)
    with torch_threads(os.cpu_count()):
        result = federated_gan_round(
            open_site_cache(site),
            config_str(config, "task"),
            gan_settings_from(config),
            classifier_spec_from(config),
            train_spec_from(config),
            record_to_arrays(message.content.array_records[_ARRAYS]),
            work_dir=site.work_dir,
            run_name=config_str(config, "run-name"),
            seed=site_seed(config_int(config, "seed"), site.site_id),
            device=site.device.value,
            dp=dp,
            ledger=ledger,
        )
    content = RecordDict(
        {
            _ARRAYS: arrays_to_record(result.arrays),
            "metrics": metric_record(result.metrics),
        }
    )
    return Message(content, reply_to=message)


@app.evaluate()
def evaluate(message: Message, context: Context) -> Message:
    """Score the received model on the site's validation split.

    In phase ``gan`` (federated) the model is the global GAN, scored by FD,
    KID and precision/recall on the site's held-out scans.
    """
    site, config = _request(message, context)
    if config_str(config, "phase") == PHASE_GAN:
        with torch_threads(os.cpu_count()):
            fidelity = evaluate_federated_gan(
                open_site_cache(site),
                gan_settings_from(config),
                record_to_arrays(message.content.array_records[_ARRAYS]),
                work_dir=site.work_dir,
                run_name=config_str(config, "run-name"),
                seed=config_int(config, "seed"),
                device=site.device.value,
            )
        return Message(
            RecordDict({"metrics": metric_record(fidelity)}), reply_to=message
        )
    cache = open_site_cache(site)
    metrics = evaluate_round(
        cache,
        config_str(config, "task"),
        classifier_spec_from(config),
        record_to_arrays(message.content.array_records[_ARRAYS]),
        fedbn=config_bool(config, "fedbn", False),
        local_state=local_state_from(context),
    )
    return Message(RecordDict({"metrics": metric_record(metrics)}), reply_to=message)


@app.query("validate")
def validate(message: Message, context: Context) -> Message:
    """Score every model on the validation split: metrics and histograms.

    Under the study's ``dp.statistics`` the reply is only noisy histograms,
    charged to the site's ledger, plus what the site has spent.
    """
    site, config = _request(message, context)
    cache = open_site_cache(site)
    dp = dp_statistics_from(config)
    if dp is not None:
        return _validate_privately(message, site, cache, config, dp)
    records = validate_models(
        cache,
        config_str(config, "task"),
        classifier_spec_from(config),
        models_from(message.content),
        split=config_str(config, "split"),
        bins=config_int(config, "bins"),
        n_bootstrap=config_int(config, "n-bootstrap"),
        threshold=config_float(config, "threshold"),
        pairs=pairs_from(config),
    )
    content = RecordDict(
        {name: metric_record(values) for name, values in records.items()}
    )
    return Message(content, reply_to=message)


def _validate_privately(
    message: Message,
    site: SiteConfig,
    cache: SiteCache,
    config: ConfigRecord,
    dp: DpStatisticsSpec,
) -> Message:
    n_scans = len(cache.indices("train")) or len(cache)
    release = release_private_histograms(
        cache,
        config_str(config, "task"),
        classifier_spec_from(config),
        models_from(message.content),
        split=config_str(config, "split"),
        dp=dp,
        ledger=open_site_ledger(site, n_scans),
        run=config_str(config, "run-name"),
        phase=config_str(config, "phase"),
    )
    content = RecordDict()
    for name, histograms in release.histograms.items():
        content[f"noisy-histograms-{name}"] = metric_record(histograms.to_dict())
    content["privacy"] = MetricRecord(
        {
            "statistics-epsilon": release.epsilon,
            "epsilon-spent": release.epsilon_spent,
            "delta-spent": release.delta_spent,
        }
    )
    return Message(content, reply_to=message)


@app.query("paired_components")
def paired(message: Message, context: Context) -> Message:
    """Reply with sums of DeLong components against the pooled distributions."""
    config, cache = _site(message, context)
    records = paired_components(
        cache,
        config_str(config, "task"),
        classifier_spec_from(config),
        models_from(message.content),
        pooled_histograms_from(message.content),
        split=config_str(config, "split"),
        pairs=pairs_from(config),
    )
    content = RecordDict(
        {name: metric_record(values) for name, values in records.items()}
    )
    return Message(content, reply_to=message)


@app.query("gan_train")
def gan_train(message: Message, context: Context) -> Message:
    """Train this site's GAN (and its encoder and curation classifier) here."""
    site, config = _request(message, context)
    dp, ledger = _gan_privacy(site, config)
    with torch_threads(os.cpu_count()):  # the GAN runs alone at its site
        outcome = train_site_generator(
            open_site_cache(site),
            config_str(config, "task"),
            gan_settings_from(config),
            classifier_spec_from(config),
            train_spec_from(config),
            work_dir=site.work_dir,
            run_name=config_str(config, "run-name"),
            seed=config_int(config, "seed"),
            device=site.device.value,
            dp=dp,
            ledger=ledger,
        )
    provenance = ConfigRecord({"site-id": site.site_id, **outcome.provenance})
    content = RecordDict(
        {"metrics": metric_record(outcome.metrics), "provenance": provenance}
    )
    return Message(content, reply_to=message)


@app.query("synthesize")
def synthesize(message: Message, context: Context) -> Message:
    """Generate, curate and audit; reply with the released images only.

    With a ``generator`` record (federated GAN), the received generator is
    first checked against its announced digest and installed as this site's
    selected checkpoint.
    """
    site, config = _request(message, context)
    seed = config_int(config, "seed")
    if _GENERATOR in message.content.array_records:
        # Every site holds the same federated generator: draw different latents.
        seed = site_seed(seed, site.site_id)
        install_federated_generator(
            open_site_cache(site),
            gan_settings_from(config),
            record_to_arrays(message.content.array_records[_GENERATOR]),
            expected_sha256=config_str(config, "generator-sha256"),
            round_number=config_int(config, "generator-round"),
            work_dir=site.work_dir,
            run_name=config_str(config, "run-name"),
            device=site.device.value,
        )
    release = synthesize_at_site(
        open_site_cache(site),
        config_str(config, "task"),
        synthesis_settings_from(config),
        classifier_spec_from(config),
        site.privacy.audit,
        work_dir=site.work_dir,
        run_name=config_str(config, "run-name"),
        register=release_register_of(site),
        seed=seed,
        device=site.device.value,
    )
    content = RecordDict(
        {
            SYNTHETIC_RECORD: arrays_to_record(
                {"images": release.images, "class-ids": release.class_ids}
            ),
            "audit": metric_record(release.summary),
            "provenance": ConfigRecord({"site-id": site.site_id, **release.provenance}),
        }
    )
    return Message(content, reply_to=message)


@app.query("receive_synthetic")
def receive_synthetic(message: Message, context: Context) -> Message:
    """Store the server's synthetic pool for this run; acknowledge its digest."""
    site, config = _request(message, context)
    arrays = record_to_arrays(message.content.array_records[SYNTHETIC_RECORD])
    digest = config_str(config, "pool-sha256")
    stored = store_received_pool(
        arrays["images"],
        arrays["class-ids"],
        expected_sha256=digest,
        work_dir=site.work_dir,
        run_name=config_str(config, "run-name"),
    )
    content = RecordDict(
        {
            "stored": metric_record(
                {"n-received": len(arrays["images"]), "n-stored": stored}
            ),
            "pool": ConfigRecord({"pool-sha256": digest}),
        }
    )
    return Message(content, reply_to=message)


@app.query("umap")
def umap(message: Message, context: Context) -> Message:
    """Reply with coarse UMAP density grids of real vs released synthetic images."""
    site, config = _request(message, context)
    view = umap_at_site(
        open_site_cache(site),
        gan_settings_from(config),
        work_dir=site.work_dir,
        run_name=config_str(config, "run-name"),
        min_cell=site.privacy.small_cell_threshold,
        seed=config_int(config, "seed"),
        device=site.device.value,
    )
    return Message(
        RecordDict({"umap": metric_record(view.to_record())}), reply_to=message
    )


@app.query("cross_audit")
def cross_audit(message: Message, context: Context) -> Message:
    """Audit images another site released against this site's training scans."""
    site, _ = _request(message, context)
    images = record_to_arrays(message.content.array_records[SYNTHETIC_RECORD])
    result = cross_audit_at_site(
        open_site_cache(site),
        images["images"],
        site.privacy.audit,
        device=site.device.value,
    )
    content = RecordDict(
        {
            "verdicts": arrays_to_record({"passed": result.passed}),
            "audit": metric_record(result.summary),
        }
    )
    return Message(content, reply_to=message)


@app.query("outcomes")
def outcomes(message: Message, context: Context) -> Message:
    """Score the outcome cohort with the final model; reply with aggregates.

    The scored cohort stays in the site's work folder for the Cox rounds.
    """
    site, config = _request(message, context)
    request = OutcomeRequest.from_config(config)
    models = models_from(message.content)
    (arrays,) = models.values()
    cohort = score_outcome_cohort(
        open_site_cache(site),
        classifier_spec_from(config),
        arrays,
        split=request.split,
        threshold=request.threshold,
        endpoints=request.endpoints,
    )
    cohort.save(cohort_path(site.work_dir, config_str(config, "run-name")))
    dp = dp_statistics_from(config)
    releases = outcome_release(
        cohort,
        request.endpoints,
        TimeGrid(request.resolution_days, request.horizon_days),
        min_patients=site.privacy.small_cell_threshold,
        ties=request.ties,
        counts_only=dp is not None,
    )
    if dp is None:
        return Message(RecordDict(dict(outcome_reply(releases))), reply_to=message)
    ledger = open_site_ledger(site, cohort.n_patients)
    exact = {e: r.counts for e, r in releases.items() if r.counts is not None}
    content = RecordDict(dict(outcome_reply(releases, counts=False)))
    epsilon = 0.0
    if exact:
        release = release_noisy_survival_counts(
            exact,
            dp,
            ledger,
            run=config_str(config, "run-name"),
            phase=config_str(config, "phase"),
        )
        epsilon = release.epsilon
        for endpoint, counts in release.counts.items():
            content[f"noisy-survival-{endpoint}"] = counts_record(counts)
    spent = ledger.spent()
    content["privacy"] = MetricRecord(
        {
            "statistics-epsilon": epsilon,
            "epsilon-spent": spent.epsilon,
            "delta-spent": spent.delta,
        }
    )
    return Message(content, reply_to=message)


@app.query("outcome_cox")
def outcome_cox(message: Message, context: Context) -> Message:
    """One Newton step: this site's stratum's log-likelihood and derivatives."""
    site, config = _request(message, context)
    run_name = config_str(config, "run-name")
    cohort = OutcomeCohort.load(cohort_path(site.work_dir, run_name))
    derivatives = cohort_derivatives(
        cohort,
        config_str(config, "endpoint"),
        config_str(config, "cox-model"),
        config_floats(config, "beta"),
        ties=config_str(config, "ties"),
        min_patients=site.privacy.small_cell_threshold,
    )
    content = RecordDict({COX_DERIVATIVES_RECORD: derivatives_record(derivatives)})
    return Message(content, reply_to=message)
