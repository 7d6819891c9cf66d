"""fedbone's Flower ClientApp: one hospital's site.

Every handler is thin: decode the request, call the site's
:class:`~fedbone.site.Site` (built once per site config), pack the reply. The
egress guard is the first mod, so every reply (and every refusal) is screened
and logged in the site's egress log before it can leave; the replay mod after
it makes the site's work exactly-once across a centre's restart.
"""

from __future__ import annotations

from pathlib import Path

from flwr.app import (
    ArrayRecord,
    ConfigRecord,
    Context,
    Message,
    MetricRecord,
    RecordDict,
)
from flwr.clientapp import ClientApp

from fedbone.classifier.rounds import RoundResult
from fedbone.federation.approval_mod import study_approval_mod
from fedbone.federation.egress.guard import egress_mod
from fedbone.federation.kinds import SYNTHETIC_RECORD
from fedbone.federation.outcome_messages import (
    COX_DERIVATIVES_RECORD,
    counts_record,
    derivatives_record,
    outcome_reply,
)
from fedbone.federation.records import arrays_to_record
from fedbone.federation.replay import replay_mod
from fedbone.federation.requests import (
    ARRAYS_RECORD,
    cox_request,
    cross_audit_request,
    enhance_components_request,
    enhance_validate_request,
    evaluate_request,
    gan_request,
    model_arrays,
    outcomes_request,
    paired_request,
    receive_synthetic_request,
    synthesize_request,
    train_request,
    umap_request,
    validate_request,
)
from fedbone.federation.site_context import guard_and_log_for, load_site_for, site_for
from fedbone.federation.study_messages import local_state_to, metric_record
from fedbone.site import OutcomesResult, StatisticsSpend, ValidationResult
from fedbone.site.progress_log import show_site_progress
from sites.secure_aggregation import add_secure_aggregation

__all__ = ["app"]

show_site_progress()


def _work_dir(message: Message, context: Context) -> Path:
    return site_for(message, context).work_dir


# The guard comes first so that every reply, replayed ones too, is screened
# and logged; the approval mod then refuses a study the site has not approved
# (before any work or replay); the replay mod answers a repeated request (a
# restarted centre resending the round in flight) from the reply already made.
app = ClientApp(
    mods=[
        egress_mod(guard_and_log_for),
        study_approval_mod(load_site_for),
        replay_mod(_work_dir),
    ]
)
add_secure_aggregation(app)

Records = dict[str, ArrayRecord | ConfigRecord | MetricRecord]


def _reply(message: Message, records: Records) -> Message:
    return Message(RecordDict(records), reply_to=message)


@app.query("census")
def census(message: Message, context: Context) -> Message:
    """Report the site's identity and counts (small cells suppressed on egress)."""
    result = site_for(message, context).census()
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
    return _reply(message, {"site": identity, "census": metric_record(result.counts)})


@app.train()
def train(message: Message, context: Context) -> Message:
    """Train the received global model (classifier or, in phase gan, the GAN).

    With ``synthetic-ratio`` or ``synthetic-only`` set, the run's received
    synthetic pool is mixed into the training split.
    """
    request = train_request(message, context)
    result = site_for(message, context).train(request, model_arrays(message))
    local_state_to(context, result.local_state)
    return _reply(message, _round_records(result))


def _round_records(result: RoundResult) -> Records:
    return {
        ARRAYS_RECORD: arrays_to_record(result.arrays),
        "metrics": metric_record(result.metrics),
    }


@app.evaluate()
def evaluate(message: Message, context: Context) -> Message:
    """Score the received model on the site's validation split.

    In phase ``gan`` (federated) the model is the global GAN, scored by FD,
    KID and precision/recall on the site's held-out scans.
    """
    request = evaluate_request(message, context)
    metrics = site_for(message, context).evaluate(request, model_arrays(message))
    return _reply(message, {"metrics": metric_record(metrics)})


@app.query("validate")
def validate(message: Message, context: Context) -> Message:
    """Score every model on the validation split: metrics and histograms.

    Under the study's ``dp.statistics`` the reply is only noisy histograms,
    charged to the site's ledger, plus what the site has spent.
    """
    result = site_for(message, context).validate(validate_request(message))
    return _reply(message, _validation_records(result))


def _validation_records(result: ValidationResult) -> Records:
    if result.spend is None:
        return {name: metric_record(values) for name, values in result.metrics.items()}
    records: Records = {
        f"noisy-histograms-{name}": metric_record(histograms.to_dict())
        for name, histograms in result.noisy_histograms.items()
    }
    records["privacy"] = _privacy_record(result.spend)
    return records


def _privacy_record(spend: StatisticsSpend) -> MetricRecord:
    return MetricRecord(
        {
            "statistics-epsilon": spend.epsilon,
            "epsilon-spent": spend.epsilon_spent,
            "delta-spent": spend.delta_spent,
        }
    )


@app.query("paired_components")
def paired(message: Message, context: Context) -> Message:
    """Reply with sums of DeLong components against the pooled distributions."""
    records = site_for(message, context).paired(paired_request(message))
    return _reply(
        message, {name: metric_record(values) for name, values in records.items()}
    )


@app.query("gan_train")
def gan_train(message: Message, context: Context) -> Message:
    """Train this site's GAN (and its encoder and curation classifier) here."""
    site = site_for(message, context)
    outcome = site.train_gan(gan_request(message))
    provenance = ConfigRecord({"site-id": site.site_id, **outcome.provenance})
    return _reply(
        message, {"metrics": metric_record(outcome.metrics), "provenance": provenance}
    )


@app.query("synthesize")
def synthesize(message: Message, context: Context) -> Message:
    """Generate, curate and audit; reply with the released images only.

    With a ``generator`` record (federated GAN), the received generator is
    first checked against its announced digest and installed as this site's
    selected checkpoint.
    """
    site = site_for(message, context)
    release = site.synthesize(synthesize_request(message))
    pool = {"images": release.images, "class-ids": release.class_ids}
    provenance = ConfigRecord({"site-id": site.site_id, **release.provenance})
    return _reply(
        message,
        {
            SYNTHETIC_RECORD: arrays_to_record(pool),
            "audit": metric_record(release.summary),
            "provenance": provenance,
        },
    )


@app.query("receive_synthetic")
def receive_synthetic(message: Message, context: Context) -> Message:
    """Store the server's synthetic pool for this run; acknowledge its digest."""
    request = receive_synthetic_request(message)
    stored = site_for(message, context).receive_synthetic(request)
    counts = {"n-received": stored.n_received, "n-stored": stored.n_stored}
    return _reply(
        message,
        {
            "stored": metric_record(counts),
            "pool": ConfigRecord({"pool-sha256": stored.pool_sha256}),
        },
    )


@app.query("umap")
def umap(message: Message, context: Context) -> Message:
    """Reply with coarse UMAP density grids of real vs released synthetic images."""
    view = site_for(message, context).umap(umap_request(message))
    return _reply(message, {"umap": metric_record(view.to_record())})


@app.query("cross_audit")
def cross_audit(message: Message, context: Context) -> Message:
    """Audit a peer's signed release against this site's scans: verdict bits only."""
    result = site_for(message, context).cross_audit(cross_audit_request(message))
    return _reply(message, {"verdicts": arrays_to_record({"passed": result.passed})})


@app.query("outcomes")
def outcomes(message: Message, context: Context) -> Message:
    """Score the outcome cohort with the final model; reply with aggregates.

    The scored cohort stays in the site's work folder for the Cox rounds.
    """
    result = site_for(message, context).outcomes(outcomes_request(message))
    return _reply(message, _outcome_records(result))


def _outcome_records(result: OutcomesResult) -> Records:
    if result.spend is None:
        return {**outcome_reply(result.releases)}
    records: Records = {**outcome_reply(result.releases, counts=False)}
    for endpoint, counts in result.noisy_counts.items():
        records[f"noisy-survival-{endpoint}"] = counts_record(counts)
    records["privacy"] = _privacy_record(result.spend)
    return records


@app.query("outcome_cox")
def outcome_cox(message: Message, context: Context) -> Message:
    """One Newton step: this site's stratum's log-likelihood and derivatives."""
    derivatives = site_for(message, context).outcome_cox(cox_request(message))
    return _reply(message, {COX_DERIVATIVES_RECORD: derivatives_record(derivatives)})


@app.query("enhance_evaluate")
def enhance_evaluate(message: Message, context: Context) -> Message:
    """Evaluate every enhancer at every level: per-image-set sums and histograms.

    Per-scan values and the scores for the DeLong components stay in the
    site's run folder.
    """
    records = site_for(message, context).enhance_evaluate(
        enhance_validate_request(message)
    )
    return _reply(
        message, {name: metric_record(values) for name, values in records.items()}
    )


@app.query("enhance_components")
def enhance_components(message: Message, context: Context) -> Message:
    """Reply with sums of DeLong components of enhanced vs standard scans."""
    records = site_for(message, context).enhance_components(
        enhance_components_request(message)
    )
    return _reply(
        message, {name: metric_record(values) for name, values in records.items()}
    )
