"""DP-SGD settings, model compatibility and privacy accounting over Opacus.

A site that trains with DP-SGD needs three things before its first step: valid
settings (:class:`DpSgdSpec`), a model whose every layer supports per-sample
gradients (:func:`make_dp_compatible`), and the privacy it has already spent
on this stream of releases (:class:`AccountantState`). The accounting is a thin
layer over Opacus' own accountants, so the ε a site reports is exactly the one
Opacus computes for the same ``(noise_multiplier, sample_rate, steps)`` history.
"""

from __future__ import annotations

import json
import math
import types
from dataclasses import dataclass
from typing import Any

import torch
from monai.networks.nets.resnet import ResNetBlock, ResNetBottleneck
from opacus.accountants import create_accountant
from opacus.accountants.utils import get_noise_multiplier
from opacus.validators import ModuleValidator
from torch import nn

from fedbone.errors import Problem
from fedbone.privacy.errors import PrivacyError

__all__ = [
    "ACCOUNTANTS",
    "CLIPPING_MODES",
    "AccountantState",
    "DpSgdSpec",
    "default_delta",
    "epsilon_after",
    "make_dp_compatible",
    "noise_for_target",
    "prepare_for_dp_hooks",
]

#: Opacus accountants a site may choose. Opacus' ``gdp`` is left out: it is
#: only an asymptotic (central-limit) approximation and may under-report ε.
ACCOUNTANTS = ("rdp", "prv")
#: ``ghost``: Opacus' fast gradient clipping (ghost norms where a layer has
#: one); ``hooks``: classic per-sample gradients.
CLIPPING_MODES = ("ghost", "hooks")

#: One accountant entry: ``(noise_multiplier, sample_rate, steps)``.
HistoryEntry = tuple[float, float, int]


def default_delta(n_training: int) -> float:
    """Return the default δ of a site with ``n_training`` training scans, 1/(10·n)."""
    return 1.0 / (10.0 * max(1, n_training))


@dataclass(frozen=True, kw_only=True)
class DpSgdSpec:
    """How a site trains with DP-SGD.

    Parameters
    ----------
    noise_multiplier
        Gaussian noise std over the clipping norm; give this or
        ``target_epsilon``, not both.
    target_epsilon
        ε the whole planned run must reach at ``delta``; the noise is then
        derived from it (see :func:`noise_for_target`).
    max_grad_norm
        Per-sample gradient clipping norm.
    delta
        δ of every ε reported (:func:`default_delta` gives the site default).
    accountant
        ``rdp`` or ``prv`` (Opacus' accountants).
    clipping
        ``ghost`` (fast gradient / ghost clipping, falls back to ``hooks``
        with a warning where Opacus cannot wrap the model) or ``hooks``.
    poisson_sampling
        Uniform Poisson sampling of each batch, which the accountants assume;
        turning it off voids the ε guarantee and is meant for benchmarks only.

    Raises
    ------
    PrivacyError
        Listing every invalid setting.
    """

    noise_multiplier: float | None = None
    target_epsilon: float | None = None
    max_grad_norm: float = 1.0
    delta: float
    accountant: str = "rdp"
    clipping: str = "ghost"
    poisson_sampling: bool = True

    def __post_init__(self) -> None:
        problems: list[Problem] = []
        if (self.noise_multiplier is None) == (self.target_epsilon is None):
            problems.append(
                Problem(
                    "noise-or-target",
                    "give exactly one of noise_multiplier and target_epsilon",
                    "noise_multiplier",
                )
            )
        for name in ("noise_multiplier", "target_epsilon", "max_grad_norm"):
            value = getattr(self, name)
            if value is not None and not (math.isfinite(value) and value > 0):
                problems.append(
                    Problem("not-positive", f"got {value!r}; expected > 0", name)
                )
        if not 0.0 < self.delta < 1.0:
            problems.append(
                Problem(
                    "bad-delta",
                    f"got {self.delta!r}; expected 0 < delta < 1, usually "
                    "1/(10 n) for n training scans",
                    "delta",
                )
            )
        for name, choices in (
            ("accountant", ACCOUNTANTS),
            ("clipping", CLIPPING_MODES),
        ):
            if getattr(self, name) not in choices:
                problems.append(
                    Problem(
                        f"unknown-{name}",
                        f"{getattr(self, name)!r}; choose one of: {', '.join(choices)}",
                        name,
                    )
                )
        PrivacyError.raise_if_any("DP-SGD spec", problems)


def _fix_hint(message: str) -> str:
    if "BatchNorm" in message:
        return "build it with classifier.norm: group (or call with fix=True)"
    return "replace the module by one Opacus supports (or call with fix=True)"


def _validator_problems(model: nn.Module) -> list[Problem]:
    # Opacus also refuses a model in eval mode; that is a state, not a layer
    # problem, and the training loop switches it to training anyway.
    was_training = model.training
    model.train()
    errors = ModuleValidator.validate(model, strict=False)
    model.train(was_training)
    problems = []
    for error in errors:
        message = str(error)
        problems.append(
            Problem("dp-unsupported-module", f"{message}; {_fix_hint(message)}")
        )
    return problems


def make_dp_compatible(model: nn.Module, *, fix: bool) -> nn.Module:
    """Return ``model`` if Opacus can train it with DP-SGD, fixed if asked.

    Parameters
    ----------
    model
        The network to check.
    fix
        Apply Opacus' ``ModuleValidator.fix`` (batch norm becomes group norm,
        which changes the weight keys) and check again. Prefer building the
        model DP-ready with ``ClassifierSpec(norm="group")``, which keeps the
        keys every site agrees on.

    Returns
    -------
    nn.Module
        ``model`` itself when valid, else the fixed module.

    Raises
    ------
    PrivacyError
        Listing every offending module and how to fix it.
    """
    problems = _validator_problems(model)
    if problems and fix:
        model = ModuleValidator.fix(model)
        problems = _validator_problems(model)
    PrivacyError.raise_if_any("model for DP-SGD", problems)
    return model


def _residual_block_forward(block: Any, x: torch.Tensor) -> torch.Tensor:
    out = block.act(block.bn1(block.conv1(x)))
    out = block.bn2(block.conv2(out))
    residual = x if block.downsample is None else block.downsample(x)
    return block.act(out + residual)


def _bottleneck_forward(block: Any, x: torch.Tensor) -> torch.Tensor:
    out = block.act(block.bn1(block.conv1(x)))
    out = block.act(block.bn2(block.conv2(out)))
    out = block.bn3(block.conv3(out))
    residual = x if block.downsample is None else block.downsample(x)
    return block.act(out + residual)


def prepare_for_dp_hooks(model: nn.Module) -> None:
    """Make ``model`` run under Opacus' backward hooks; weights and results unchanged.

    Opacus wraps each layer's output so that autograd reports it to a hook;
    autograd then refuses to modify that output in place. Two in-place habits
    of the networks fedbone builds hit this: in-place activations (switched
    off here) and MONAI's residual blocks adding the shortcut with ``+=``
    (those blocks get the same computation out of place). Only memory use
    changes.
    """
    for module in model.modules():
        if getattr(module, "inplace", False) is True:
            module.inplace = False  # type: ignore[assignment]
        if isinstance(module, ResNetBlock):
            module.forward = types.MethodType(  # type: ignore[method-assign]
                _residual_block_forward, module
            )
        elif isinstance(module, ResNetBottleneck):
            module.forward = types.MethodType(  # type: ignore[method-assign]
                _bottleneck_forward, module
            )


def noise_for_target(
    target_epsilon: float,
    delta: float,
    sample_rate: float,
    steps: int,
    accountant: str,
) -> float:
    """Return the noise multiplier that spends ``target_epsilon`` in ``steps``.

    Opacus' ``get_noise_multiplier``: the result reaches the target within its
    tolerance (0.01) without exceeding it.

    Parameters
    ----------
    target_epsilon
        ε the whole run may spend.
    delta
        δ at which ``target_epsilon`` is measured.
    sample_rate
        Poisson sampling rate of each step (batch size over training scans).
    steps
        DP-SGD steps the target is spread over.
    accountant
        ``rdp`` or ``prv``.
    """
    return float(
        get_noise_multiplier(
            target_epsilon=target_epsilon,
            target_delta=delta,
            sample_rate=sample_rate,
            steps=steps,
            accountant=accountant,
        )
    )


def epsilon_after(
    history: list[HistoryEntry] | tuple[HistoryEntry, ...],
    delta: float,
    accountant: str,
) -> float:
    """Return Opacus' ε at ``delta`` after ``(noise, sample_rate, steps)`` entries.

    An empty history has spent nothing (ε = 0).

    Parameters
    ----------
    history
        ``(noise_multiplier, sample_rate, steps)`` entries, oldest first.
    delta
        δ at which ε is reported.
    accountant
        ``rdp`` or ``prv``.
    """
    if not history:
        return 0.0
    opacus_accountant = create_accountant(mechanism=accountant)
    opacus_accountant.history = [(float(n), float(q), int(s)) for n, q, s in history]
    return float(opacus_accountant.get_epsilon(delta=delta))


@dataclass(frozen=True)
class AccountantState:
    """The privacy history of one stream of DP releases (one model, one site).

    It must outlive a process: the site stores :meth:`to_json` after every
    call and restores it with :meth:`from_json`, across rounds and restarts.

    Attributes
    ----------
    accountant
        ``rdp`` or ``prv``.
    history
        ``(noise_multiplier, sample_rate, steps)`` entries, as Opacus keeps
        them: consecutive steps at the same noise and rate share one entry.
    """

    accountant: str = "rdp"
    history: tuple[HistoryEntry, ...] = ()

    def __post_init__(self) -> None:
        if self.accountant not in ACCOUNTANTS:
            raise PrivacyError(
                "accountant state",
                [
                    Problem(
                        "unknown-accountant",
                        f"{self.accountant!r}; choose one of: {', '.join(ACCOUNTANTS)}",
                        "accountant",
                    )
                ],
            )

    @property
    def steps(self) -> int:
        """Return the number of DP-SGD steps taken so far."""
        return sum(entry[2] for entry in self.history)

    def extended(
        self, noise_multiplier: float, sample_rate: float, steps: int
    ) -> AccountantState:
        """Return the state after ``steps`` more steps at this noise and rate.

        Parameters
        ----------
        noise_multiplier
            Gaussian noise std over the clipping norm of these steps.
        sample_rate
            Poisson sampling rate of these steps.
        steps
            Steps taken; 0 or fewer returns the state unchanged. Steps at the
            last entry's noise and rate are added to that entry.
        """
        history = list(self.history)
        if steps <= 0:
            return self
        if history and history[-1][:2] == (noise_multiplier, sample_rate):
            history[-1] = (noise_multiplier, sample_rate, history[-1][2] + steps)
        else:
            history.append((noise_multiplier, sample_rate, steps))
        return AccountantState(self.accountant, tuple(history))

    def epsilon(self, delta: float) -> float:
        """Return the ε spent so far at ``delta``."""
        return epsilon_after(self.history, delta, self.accountant)

    def to_json(self) -> str:
        """Return the state as a JSON text."""
        return json.dumps(
            {"accountant": self.accountant, "history": [list(e) for e in self.history]}
        )

    @classmethod
    def from_json(cls, text: str) -> AccountantState:
        """Read a state written by :meth:`to_json`.

        Raises
        ------
        PrivacyError
            When the text is not such a state.
        """
        try:
            data: Any = json.loads(text)
            history = tuple((float(n), float(q), int(s)) for n, q, s in data["history"])
            accountant = str(data["accountant"])
        except (ValueError, KeyError, TypeError) as error:
            raise PrivacyError(
                "accountant state",
                [
                    Problem(
                        "bad-accountant-state",
                        f"cannot read it ({error}); expected the JSON written by "
                        "AccountantState.to_json; restore it from the site's backup",
                    )
                ],
            ) from error
        return cls(accountant, history)
