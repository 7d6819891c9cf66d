"""One hospital's site: everything the study may ask of it, without Flower.

A :class:`Site` is built once from the site's :class:`SiteConfig` and keeps
what every piece of work needs: the prepared cache (opened lazily, and opened
again when the site prepares it anew), the release register, the device and
the work folder. Each capability is one method taking a typed request
(:mod:`fedbone.site.requests`) and returning a typed result, in the spirit of
MONAI's framework-neutral ``ClientAlgo``; the Flower ClientApp only decodes a
message into a request, calls the method and packs the reply.

The privacy contract lives here too: a site with a privacy budget releases
weights and statistics only under differential privacy
(:func:`~fedbone.privacy.site_spending.refuse_without_dp`), and every DP
release is charged to its ledger before the result is returned.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import replace
from functools import cached_property
from pathlib import Path

from fedbone.classifier.errors import TrainingError
from fedbone.classifier.folds import FoldView
from fedbone.classifier.rounds import (
    Arrays,
    RoundResult,
    evaluate_round,
    train_round,
    train_round_dp,
)
from fedbone.classifier.runtime import TrainingImages, torch_threads
from fedbone.config.privacy import DpPhaseSettings
from fedbone.config.site import SiteConfig
from fedbone.data.cache import META_FILE, SiteCache
from fedbone.data.census import SiteCensus, take_census
from fedbone.enhance.site_enhance import SiteEnhancement
from fedbone.errors import Problem
from fedbone.generative.audit.cross_audit import CrossAudit, cross_audit_at_site
from fedbone.generative.federated_gan import (
    evaluate_federated_gan,
    federated_gan_round,
    install_federated_generator,
    site_seed,
)
from fedbone.generative.fidelity.umap_view import UmapView
from fedbone.generative.release_register import ReleaseRegister
from fedbone.generative.release_signature import sign_release
from fedbone.generative.site_gan import SiteGanOutcome, train_site_generator
from fedbone.generative.site_synthesis import (
    SiteRelease,
    mixed_training_view,
    store_received_pool,
    synthesize_at_site,
    umap_at_site,
)
from fedbone.outcomes.cohort import OutcomeCohort, cohort_path, score_outcome_cohort
from fedbone.outcomes.private_counts import release_noisy_survival_counts
from fedbone.outcomes.release import cohort_derivatives, outcome_release
from fedbone.outcomes.release_log import OutcomeReleaseLog, cohort_key
from fedbone.outcomes.stratified_cox import CoxDerivatives
from fedbone.outcomes.survival_grid import TimeGrid
from fedbone.privacy.ledger import PrivacyLedger
from fedbone.privacy.site_spending import open_site_ledger, refuse_without_dp
from fedbone.security.site_secret import SiteSecret, open_site_secret
from fedbone.site.policy import (
    approved_encoder_path,
    check_histogram_bins,
    check_release_provenance,
    require_noisy_statistics,
    resolve_encoder,
)
from fedbone.site.requests import (
    CoxRequest,
    CrossAuditRequest,
    EnhanceComponentsRequest,
    EnhanceEvaluateRequest,
    EnhanceTrainRequest,
    EnhanceValidateRequest,
    EvaluateRequest,
    FoldRequest,
    GanEvaluateRequest,
    GanRequest,
    OutcomesRequest,
    PairedRequest,
    ReceiveSyntheticRequest,
    SynthesizeRequest,
    TrainRequest,
    UmapRequest,
    ValidateRequest,
)
from fedbone.site.results import (
    OutcomesResult,
    StatisticsSpend,
    StoredPool,
    ValidationResult,
)
from fedbone.validation.histograms import ScoreHistograms
from fedbone.validation.private import DpStatisticsSpec, release_private_histograms
from fedbone.validation.site import paired_components, validate_models

__all__ = ["RELEASE_REGISTER_FILE", "Site"]

RELEASE_REGISTER_FILE = "release-register.jsonl"
OUTCOME_RELEASES_FILE = "outcome-releases.jsonl"


class Site:
    """One site's data, state and capabilities.

    Parameters
    ----------
    config
        The site's configuration, loaded once.
    """

    def __init__(self, config: SiteConfig) -> None:
        self.config = config
        self._cache: SiteCache | None = None
        self._cache_stamp = 0

    @property
    def site_id(self) -> str:
        """The site's id, as the study names it."""
        return self.config.site_id

    @property
    def work_dir(self) -> Path:
        """Site-local state: GANs, checkpoints, received pools, replies."""
        return self.config.work_dir

    @property
    def device(self) -> str:
        """The torch device the site trains on (``auto``, ``cpu``, ``cuda``)."""
        return self.config.device.value

    @property
    def cache(self) -> SiteCache:
        """The site's prepared cache, opened once while it is unchanged.

        Every request needs the cache; re-reading a large site's index for each
        one would cost more than the exchange. A re-prepared cache rewrites its
        ``meta.json``, so a new modification time opens it again at once.
        """
        cache_dir = self.config.data.cache_dir.resolve()
        meta = cache_dir / META_FILE
        stamp = meta.stat().st_mtime_ns if meta.is_file() else -1
        if self._cache is None or stamp != self._cache_stamp:
            self._cache = SiteCache.open(cache_dir)
            self._cache_stamp = stamp
        return self._cache

    @cached_property
    def release_register(self) -> ReleaseRegister:
        """The register of audit-released images (in the work folder)."""
        return ReleaseRegister(self.work_dir / RELEASE_REGISTER_FILE)

    @cached_property
    def outcome_release_log(self) -> OutcomeReleaseLog:
        """The outcome groupings this site released (no differencing)."""
        return OutcomeReleaseLog(
            self.work_dir / OUTCOME_RELEASES_FILE,
            max_releases=self.config.policy.max_outcome_releases,
            min_difference=self.config.privacy.small_cell_threshold,
        )

    def secret(self) -> SiteSecret:
        """Open the site's secret (made on first use at a site that sealed nothing)."""
        return open_site_secret(
            self.config.secret_file,
            sealed=[self.config.privacy.ledger, self.config.egress_log],
        )

    def ledger(self, n_protected: int) -> PrivacyLedger:
        """Open the site's privacy ledger afresh (its hash chain is verified).

        Parameters
        ----------
        n_protected
            Records the budget protects (scans or patients): sets its δ.

        Raises
        ------
        PrivacyError
            ``no-privacy-budget`` when the site config sets no budget.
        """
        return open_site_ledger(self.config, n_protected)

    @cached_property
    def enhancement(self) -> SiteEnhancement:
        """The site's fast-scan enhancement work (pairs and encoder kept)."""
        privacy = self.config.privacy
        return SiteEnhancement(
            site_id=self.site_id,
            work_dir=self.work_dir,
            fast_manifest=self.config.data.fast_manifest,
            device=self.device,
            min_class=max(
                privacy.small_cell_threshold, self.config.policy.min_patients_per_class
            ),
            encoder_file=lambda sha256: approved_encoder_path(self.config, sha256),
        )

    def enhance_evaluate(
        self, request: EnhanceValidateRequest
    ) -> dict[str, dict[str, float | int | list[int]]]:
        """Evaluate every enhancer on the validation split; aggregates only.

        Raises
        ------
        PolicyRefused
            When the histogram bins exceed the site's policy, or the site lets
            statistics out only under differential privacy.
        """
        check_histogram_bins(self.config, request.bins)
        require_noisy_statistics(self.config, "enhancement evaluation", noisy=False)
        # every site evaluates at once: keep the worker's own thread count
        return self.enhancement.evaluate(self.cache, request)

    def enhance_components(
        self, request: EnhanceComponentsRequest
    ) -> dict[str, dict[str, float | int]]:
        """DeLong components of enhanced vs standard scans (pooled histograms)."""
        require_noisy_statistics(
            self.config, "enhancement DeLong components", noisy=False
        )
        _check_pooled_bins(self.config, request.pooled)
        return self.enhancement.components(
            run_name=request.run_name, pooled=request.pooled, pairs=request.pairs
        )

    def census(self) -> SiteCensus:
        """Report the site's identity and counts (small cells suppressed on egress)."""
        return take_census(
            self.cache,
            site_id=self.site_id,
            role=self.config.role.value,
            config_sha256=self.config.file_sha256(),
        )

    def train(self, request: TrainRequest, arrays: Arrays) -> RoundResult:
        """Train the received global model (classifier or GAN) for one round.

        Parameters
        ----------
        request
            A classifier round (plain or DP-SGD), or a federated GAN round.
        arrays
            The received global model's full state.

        Raises
        ------
        PrivacyError
            ``dp-required`` for non-DP work at a site with a privacy budget.
        BudgetExceeded
            When a DP round would take the site over its budget.
        """
        if isinstance(request, GanRequest):
            return self._federated_gan_round(request, arrays)
        if isinstance(request, EnhanceTrainRequest):
            # no DP-SGD for enhancers: a site with a privacy budget refuses
            refuse_without_dp(
                self.config,
                fix="enhancers have no DP training in this version, so the study "
                "cannot train them here",
            )
            # the train sites train at once: the worker's own thread count
            return self.enhancement.train_round(
                self.cache,
                arrays,
                method=request.method,
                settings=request.enhance,
                run_name=request.run_name,
                seed=request.seed,
            )
        if request.dp is None:
            refuse_without_dp(self.config)
        if request.fold is not None:
            if request.synthetic_ratio or request.synthetic_only:
                raise TrainingError(
                    "cross-validation fold",
                    [
                        Problem(
                            "fold-with-synthetic",
                            "a fold model trains on the site's real scans only; "
                            "do not mix synthetic images into an ensemble",
                        )
                    ],
                )
            cache: TrainingImages = self.fold_view(request.task, request.fold)
        else:
            cache = mixed_training_view(
                self.cache,
                request.task,
                ratio=request.synthetic_ratio,
                synthetic_only=request.synthetic_only,
                work_dir=self.work_dir,
                run_name=request.run_name,
                seed=request.seed,
            )
        if request.dp is not None:
            return train_round_dp(
                cache,
                request.task,
                request.classifier,
                request.training,
                arrays,
                request.dp,
                self.ledger(len(cache.indices("train"))),
                run_name=request.run_name,
                phase=request.phase,
            )
        return train_round(
            cache,
            request.task,
            request.classifier,
            request.training,
            arrays,
            fedbn=request.fedbn,
            local_state=request.local_state,
        )

    def fold_view(self, task: str, fold: FoldRequest) -> FoldView:
        """Return the site's scans with one cross-validation fold held out as ``val``.

        Folds smaller than the site's small-cell rule (or
        ``policy.min_patients_per_class``, if larger) are refused.
        """
        cache = self.cache
        return FoldView(
            cache,
            [record.patient_id for record in cache.index],
            task,
            fold=fold.fold,
            folds=fold.folds,
            seed=fold.seed,
            min_patients=max(
                self.config.privacy.small_cell_threshold,
                self.config.policy.min_patients_per_class,
            ),
        )

    def _gan_ledger(self, dp: DpPhaseSettings | None) -> PrivacyLedger | None:
        """Return the ledger a DP GAN is charged to; refuse a non-DP one."""
        if dp is None:
            refuse_without_dp(self.config)
            return None
        return self.ledger(len(self.cache.indices("train")))

    def _federated_gan_round(self, request: GanRequest, arrays: Arrays) -> RoundResult:
        request = replace(request, gan=resolve_encoder(self.config, request.gan))
        ledger = self._gan_ledger(request.dp)
        with torch_threads(os.cpu_count()):
            result = federated_gan_round(
                self.cache,
                request.task,
                request.gan,
                request.classifier,
                request.training,
                arrays,
                work_dir=self.work_dir,
                run_name=request.run_name,
                seed=site_seed(request.seed, self.site_id),
                device=self.device,
                dp=request.dp,
                ledger=ledger,
            )
        return RoundResult(result.arrays, {**result.metrics}, None)

    def evaluate(
        self, request: EvaluateRequest, arrays: Arrays
    ) -> dict[str, float | int]:
        """Score the received model on the site's held-out scans.

        A classifier is scored by loss and AUC on the validation split; the
        federated GAN (phase ``gan``) by FD, KID and precision/recall.
        """
        if isinstance(request, EnhanceEvaluateRequest):
            return self.enhancement.evaluate_round(
                self.cache,
                arrays,
                method=request.method,
                settings=request.enhance,
                seed=request.seed,
            )
        if isinstance(request, GanEvaluateRequest):
            request = replace(request, gan=resolve_encoder(self.config, request.gan))
            with torch_threads(os.cpu_count()):
                fidelity = evaluate_federated_gan(
                    self.cache,
                    request.gan,
                    arrays,
                    work_dir=self.work_dir,
                    run_name=request.run_name,
                    seed=request.seed,
                    device=self.device,
                )
            return {**fidelity}
        cache: TrainingImages = self.cache
        if request.fold is not None:
            cache = self.fold_view(request.task, request.fold)
        return evaluate_round(
            cache,
            request.task,
            request.classifier,
            arrays,
            fedbn=request.fedbn,
            local_state=request.local_state,
        )

    def validate(self, request: ValidateRequest) -> ValidationResult:
        """Score every model on a split: exact metrics, or noisy histograms.

        Under the study's ``dp.statistics`` only noisy histograms are made,
        charged to the site's ledger.
        """
        check_histogram_bins(self.config, request.bins)
        require_noisy_statistics(
            self.config, "score histograms", noisy=request.dp is not None
        )
        if request.dp is not None:
            return self._validate_privately(request, request.dp)
        metrics = validate_models(
            self.cache,
            request.task,
            request.classifier,
            request.models,
            split=request.split,
            bins=request.bins,
            n_bootstrap=request.n_bootstrap,
            threshold=request.threshold,
            pairs=request.pairs,
        )
        return ValidationResult(metrics, {}, None)

    def _validate_privately(
        self, request: ValidateRequest, dp: DpStatisticsSpec
    ) -> ValidationResult:
        cache = self.cache
        n_scans = len(cache.indices("train")) or len(cache)
        release = release_private_histograms(
            cache,
            request.task,
            request.classifier,
            request.models,
            split=request.split,
            dp=dp,
            ledger=self.ledger(n_scans),
            run=request.run_name,
            phase=request.phase,
        )
        spend = StatisticsSpend(
            release.epsilon, release.epsilon_spent, release.delta_spent
        )
        return ValidationResult({}, release.histograms, spend)

    def paired(self, request: PairedRequest) -> dict[str, dict[str, float | int]]:
        """Sum DeLong components against the pooled distributions, by pair."""
        require_noisy_statistics(self.config, "paired DeLong components", noisy=False)
        _check_pooled_bins(self.config, request.pooled)
        return paired_components(
            self.cache,
            request.task,
            request.classifier,
            request.models,
            request.pooled,
            split=request.split,
            pairs=request.pairs,
        )

    def train_gan(self, request: GanRequest) -> SiteGanOutcome:
        """Train this site's own GAN (with its encoder and curation classifier).

        Raises
        ------
        PrivacyError
            ``dp-required`` for a non-DP GAN at a site with a privacy budget.
        """
        request = replace(request, gan=resolve_encoder(self.config, request.gan))
        ledger = self._gan_ledger(request.dp)
        with torch_threads(os.cpu_count()):  # the GAN runs alone at its site
            return train_site_generator(
                self.cache,
                request.task,
                request.gan,
                request.classifier,
                request.training,
                work_dir=self.work_dir,
                run_name=request.run_name,
                seed=request.seed,
                device=self.device,
                dp=request.dp,
                ledger=ledger,
            )

    def synthesize(self, request: SynthesizeRequest) -> SiteRelease:
        """Generate, curate and audit; return the released images only.

        A received federated generator is first checked against its announced
        digest and installed as this site's selected checkpoint.
        """
        seed = request.seed
        generator = request.generator
        if generator is not None:
            generator = replace(
                generator, gan=resolve_encoder(self.config, generator.gan)
            )
            # Every site holds the same federated generator: draw other latents.
            seed = site_seed(seed, self.site_id)
            install_federated_generator(
                self.cache,
                generator.gan,
                generator.arrays,
                expected_sha256=generator.sha256,
                round_number=generator.round_number,
                work_dir=self.work_dir,
                run_name=request.run_name,
                device=self.device,
            )
        release = synthesize_at_site(
            self.cache,
            request.task,
            request.settings,
            request.classifier,
            self.config.privacy.audit,
            work_dir=self.work_dir,
            run_name=request.run_name,
            register=self.release_register,
            seed=seed,
            device=self.device,
        )
        signature = sign_release(
            self.secret(),
            self.site_id,
            request.run_name,
            release.images,
            release.class_ids,
        )
        provenance = {**release.provenance, "release-signature": signature}
        return replace(release, provenance=provenance)

    def receive_synthetic(self, request: ReceiveSyntheticRequest) -> StoredPool:
        """Store the server's synthetic pool for this run, checked by its digest."""
        stored = store_received_pool(
            request.images,
            request.class_ids,
            expected_sha256=request.pool_sha256,
            work_dir=self.work_dir,
            run_name=request.run_name,
        )
        return StoredPool(len(request.images), stored, request.pool_sha256)

    def umap(self, request: UmapRequest) -> UmapView:
        """Coarse UMAP density grids of real vs released synthetic images."""
        return umap_at_site(
            self.cache,
            resolve_encoder(self.config, request.gan),
            work_dir=self.work_dir,
            run_name=request.run_name,
            min_cell=self.config.privacy.small_cell_threshold,
            seed=request.seed,
            device=self.device,
        )

    def cross_audit(self, request: CrossAuditRequest) -> CrossAudit:
        """Audit images another site released against this site's training scans.

        Only a batch signed by a peer this site lists in
        ``policy.cross_audit_peers`` is audited (any other image would make
        the audit a distance oracle over this site's scans); only the verdict
        bits leave.

        Raises
        ------
        PolicyRefused
            ``unknown-peer`` or ``unverified-images``.
        """
        check_release_provenance(
            self.config,
            request.released_by,
            request.signature,
            run_name=request.run_name,
            images=request.images,
            class_ids=request.class_ids,
        )
        return cross_audit_at_site(
            self.cache, request.images, self.config.privacy.audit, device=self.device
        )

    def outcomes(self, request: OutcomesRequest) -> OutcomesResult:
        """Score the outcome cohort with the final model; return its aggregates.

        The scored cohort stays in the work folder for the Cox rounds. Under
        the study's ``dp.statistics`` the survival counts are released noisy,
        charged to the site's ledger, instead of exactly.
        """
        require_noisy_statistics(
            self.config, "survival statistics", noisy=request.dp is not None
        )
        path = cohort_path(self.work_dir, request.run_name)
        cohort = score_outcome_cohort(
            self.cache,
            request.classifier,
            request.model,
            split=request.split,
            threshold=request.threshold,
            endpoints=request.endpoints,
        )
        self.outcome_release_log.admit(
            cohort_key(self.cache.content_hash, request.split),
            cohort,
            request.endpoints,
            run=request.run_name,
        )
        cohort.save(path)
        releases = outcome_release(
            cohort,
            request.endpoints,
            TimeGrid(request.resolution_days, request.horizon_days),
            min_patients=self.config.privacy.small_cell_threshold,
            ties=request.ties,
            counts_only=request.dp is not None,
        )
        if request.dp is None:
            return OutcomesResult(releases, {}, None)
        ledger = self.ledger(cohort.n_patients)
        exact = {e: r.counts for e, r in releases.items() if r.counts is not None}
        noisy = {}
        epsilon = 0.0
        if exact:
            release = release_noisy_survival_counts(
                exact, request.dp, ledger, run=request.run_name, phase=request.phase
            )
            noisy, epsilon = release.counts, release.epsilon
        spent = ledger.spent()
        spend = StatisticsSpend(epsilon, spent.epsilon, spent.delta)
        return OutcomesResult(releases, noisy, spend)

    def outcome_cox(self, request: CoxRequest) -> CoxDerivatives:
        """One Newton step: this site's stratum's log-likelihood and derivatives."""
        require_noisy_statistics(self.config, "Cox fits", noisy=False)
        cohort = OutcomeCohort.load(cohort_path(self.work_dir, request.run_name))
        return cohort_derivatives(
            cohort,
            request.endpoint,
            request.cox_model,
            request.beta,
            ties=request.ties,
            min_patients=self.config.privacy.small_cell_threshold,
        )


def _check_pooled_bins(
    config: SiteConfig, pooled: Mapping[str, ScoreHistograms]
) -> None:
    """Refuse pooled histograms finer than the site's own bin limit.

    The centre's pooled histograms shape the component sums a site returns:
    crafted fine bins would turn the sums into counts of patients above any
    chosen score.
    """
    for histograms in pooled.values():
        check_histogram_bins(config, len(histograms.to_dict()["positives"]))
