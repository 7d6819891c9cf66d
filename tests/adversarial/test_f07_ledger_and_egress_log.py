"""Issue #17, finding 7 (and 12): the privacy ledger and egress log under attack.

The attacker can write the site's folder (ledger, egress log) but cannot read
the site secret, which is kept, with the heads it seals, in its own folder
(``keys/``), as a deployment keeps it. Every attack must be refused with a
typed error code, and a refused release must spend nothing.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from fedbone.cli.main import main
from fedbone.config.site import SiteConfig, load_site_config
from fedbone.federation.egress.log import EgressLog
from fedbone.privacy.errors import LedgerTampered
from fedbone.privacy.ledger import PrivacyLedger
from fedbone.privacy.site_spending import (
    open_site_ledger,
    open_site_secret_for,
    plan_sgd_release,
    sgd_history,
)
from fedbone.security.errors import PkiError

N_TRAINING = 1000
NOISE, RATE, STEPS = 1.0, 0.01, 10
DIGEST = "cd" * 32


def _site(root: Path, site_id: str = "vienna") -> SiteConfig:
    """A site folder with a budget; its secret lives in ``<root>/keys``."""
    folder = root / site_id
    folder.mkdir(parents=True)
    (folder / "manifest.csv").write_text("scan_id\n")
    path = folder / "site.yaml"
    path.write_text(
        f"site: {{id: {site_id}}}\n"
        "data: {manifest: manifest.csv}\n"
        "privacy:\n"
        "  budget: {epsilon: 50.0, delta: 1.0e-3}\n"
        "  ledger: privacy-ledger.jsonl\n"
        f"  secret: ../keys/{site_id}-secret.key\n"
        "egress_log: logs/egress.jsonl\n"
    )
    return load_site_config(path)


def _release(site: SiteConfig) -> None:
    """One DP-SGD release, planned and committed as a site makes it."""
    ledger = open_site_ledger(site, N_TRAINING)
    plan_sgd_release(ledger, NOISE, RATE, STEPS).commit(
        run="study-1", phase="train", kind="classifier-round"
    )


def _site_with_releases(root: Path, site_id: str = "vienna") -> SiteConfig:
    site = _site(root, site_id)
    for _ in range(3):
        _release(site)
    return site


def _refused_and_nothing_spent(site: SiteConfig) -> list[str]:
    """Try one more release; return the refusal's codes; check nothing moved."""
    ledger_path = site.privacy.ledger
    before = ledger_path.read_bytes() if ledger_path.exists() else None
    with pytest.raises(LedgerTampered) as caught:
        _release(site)
    after = ledger_path.read_bytes() if ledger_path.exists() else None
    assert after == before
    return caught.value.codes


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _write_lines(path: Path, entries: list[dict]) -> None:
    path.write_text("".join(json.dumps(e) + "\n" for e in entries))


def _sha256(entry: dict) -> str:
    content = {k: v for k, v in entry.items() if k != "sha256"}
    text = json.dumps(content, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def _rechain(entries: list[dict]) -> list[dict]:
    """Re-hash and re-link every entry, as someone without the key can."""
    prev = "0" * 64
    for seq, entry in enumerate(entries):
        entry["seq"], entry["prev"] = seq, prev
        entry["sha256"] = prev = _sha256(entry)
    return entries


def test_truncated_ledger_with_a_rewritten_head_is_refused(tmp_path: Path) -> None:
    # Prepare
    site = _site_with_releases(tmp_path)
    ledger_path = site.privacy.ledger
    head_path = open_site_ledger(site, N_TRAINING).head_path
    first = _lines(ledger_path)[0]
    head = json.loads(head_path.read_text())

    # Execute: keep one release, write a head that says so (old MAC kept)
    _write_lines(ledger_path, [first])
    head_path.write_text(json.dumps({**head, "count": 1, "sha256": first["sha256"]}))

    # Assert
    assert _refused_and_nothing_spent(site) == ["head-mac-invalid"]


@pytest.mark.parametrize(
    ("rewrite_head", "code"),
    [(False, "entry-mac-invalid"), (True, "head-mac-invalid")],
)
def test_a_chain_recomputed_without_the_key_is_refused(
    tmp_path: Path, rewrite_head: bool, code: str
) -> None:
    # Prepare
    site = _site_with_releases(tmp_path)
    head_path = open_site_ledger(site, N_TRAINING).head_path
    entries = _lines(site.privacy.ledger)

    # Execute: every release at a tenth of its steps, re-hashed and re-chained
    for entry in entries:
        entry["details"]["steps"] = 1
        entry["epsilon"] /= 10
        entry["stream_epsilon"] /= 10
    _write_lines(site.privacy.ledger, _rechain(entries))
    if rewrite_head:
        head = json.loads(head_path.read_text())
        head.update(count=3, sha256=entries[-1]["sha256"])
        head_path.write_text(json.dumps(head))

    # Assert
    assert code in _refused_and_nothing_spent(site)


def test_a_deleted_ledger_and_head_are_refused_not_reset(tmp_path: Path) -> None:
    # Prepare
    site = _site_with_releases(tmp_path)
    ledger_path = site.privacy.ledger

    # Execute: delete the ledger and every file beside it named after it
    for path in ledger_path.parent.glob(ledger_path.name + "*"):
        path.unlink()

    # Assert: the head beside the secret still records three releases
    assert _refused_and_nothing_spent(site) == ["ledger-missing"]
    assert not ledger_path.exists()


def test_a_deleted_secret_is_refused_not_made_anew(tmp_path: Path) -> None:
    # Prepare
    site = _site_with_releases(tmp_path)
    secret_path = site.secret_file

    # Execute
    secret_path.unlink()

    # Assert
    with pytest.raises(PkiError) as caught:
        _release(site)
    assert caught.value.codes == ["missing-secret"]
    assert not secret_path.exists()
    assert len(_lines(site.privacy.ledger)) == 3


def _forged(last: dict, epsilon: float, stream_epsilon: float) -> dict:
    entry = {**last, "seq": last["seq"] + 1, "prev": last["sha256"]}
    entry.update(epsilon=epsilon, stream_epsilon=stream_epsilon)
    entry["sha256"] = _sha256(entry)
    return entry


@pytest.mark.parametrize(
    ("epsilon", "stream_epsilon", "code"),
    [
        (0.0, 0.0, "entry-mac-invalid"),  # resets the stream to 0
        (-1.0, 0.0, "invalid-value"),
        (float("nan"), float("nan"), "invalid-value"),
    ],
    ids=["epsilon-0", "negative", "nan"],
)
def test_an_appended_zero_negative_or_nan_entry_is_a_typed_refusal(
    tmp_path: Path, epsilon: float, stream_epsilon: float, code: str
) -> None:
    # Prepare
    site = _site_with_releases(tmp_path)
    entries = _lines(site.privacy.ledger)

    # Execute: a chained line beyond the head, as a crash would leave one
    forged = _forged(entries[-1], epsilon, stream_epsilon)
    _write_lines(site.privacy.ledger, [*entries, forged])

    # Assert
    assert set(_refused_and_nothing_spent(site)) == {code}


@pytest.mark.parametrize("with_head", [False, True])
def test_another_sites_ledger_swapped_in_is_refused(
    tmp_path: Path, with_head: bool
) -> None:
    # Prepare: a second site with fewer releases (less spent)
    site = _site_with_releases(tmp_path)
    other = _site(tmp_path, "graz")
    _release(other)
    own_head = open_site_ledger(site, N_TRAINING).head_path
    other_head = open_site_ledger(other, N_TRAINING).head_path

    # Execute
    site.privacy.ledger.write_bytes(other.privacy.ledger.read_bytes())
    if with_head:
        own_head.write_bytes(other_head.read_bytes())

    # Assert
    codes = _refused_and_nothing_spent(site)
    assert codes == (["head-mac-invalid"] if with_head else ["entry-mac-invalid"])


def test_80_concurrent_commits_are_each_charged(tmp_path: Path) -> None:
    # Prepare: 80 requests plan at once, before any commits
    site = _site(tmp_path)
    plans = [
        plan_sgd_release(open_site_ledger(site, N_TRAINING), NOISE, RATE, STEPS)
        for _ in range(80)
    ]
    barrier = threading.Barrier(len(plans))
    failures: list[BaseException] = []

    def commit(index: int) -> None:
        barrier.wait()
        try:
            plans[index].commit(run="study-1", phase="train", kind="classifier-round")
        except BaseException as error:  # reported below
            failures.append(error)

    # Execute
    threads = [threading.Thread(target=commit, args=(i,)) for i in range(80)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    # Assert: none charged 0; the increments add up to 80 releases composed
    assert failures == []
    ledger = open_site_ledger(site, N_TRAINING)
    entries = ledger.entries()
    expected = sgd_history(entries).epsilon(ledger.budget.delta)
    sequential = plans[0].before
    for _ in range(80):
        sequential = sequential.extended(NOISE, RATE, STEPS)
    assert len(entries) == 80
    assert all(e.epsilon > 0 for e in entries)
    assert sum(e.epsilon for e in entries) == pytest.approx(expected)
    assert entries[-1].stream_epsilon == pytest.approx(expected)
    assert expected == pytest.approx(sequential.epsilon(ledger.budget.delta))


def test_80_concurrent_pure_epsilon_releases_sum_to_80_times_epsilon(
    tmp_path: Path,
) -> None:
    # Prepare: a pure-ε stream, each release adding 0.1 to what it reads
    site = _site(tmp_path)
    secret = open_site_secret_for(site)
    ledger = PrivacyLedger(
        site.privacy.ledger, open_site_ledger(site, 1).budget, secret
    )
    barrier = threading.Barrier(80)

    def release() -> None:
        mine = PrivacyLedger(ledger.path, ledger.budget, secret)
        barrier.wait()
        mine.record_composed(
            run="study-1",
            phase="validate",
            kind="statistic",
            mechanism="laplace",
            stream="statistics",
            stream_epsilon_of=lambda entries: 0.1 + sum(e.epsilon for e in entries),
            delta=0.0,
        )

    # Execute
    threads = [threading.Thread(target=release) for _ in range(80)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    # Assert
    entries = ledger.entries()
    assert len(entries) == 80
    assert sum(e.epsilon for e in entries) == pytest.approx(80 * 0.1)
    assert ledger.spent().epsilon == pytest.approx(8.0)


def _egress_site(root: Path) -> SiteConfig:
    site = _site(root)
    log = EgressLog(site.egress_log, open_site_secret_for(site))
    for verdict in ("passed", "refused", "passed", "error"):
        log.append(
            run_id=1,
            run_name="study-1",
            phase="train",
            kind="train",
            n_bytes=100,
            sha256=DIGEST,
            verdict=verdict,
            reason=verdict,
        )
    return site


def _edit(entries: list[dict]) -> list[dict]:
    entries[1]["verdict"] = "passed"  # hide a refusal
    return entries


def _delete(entries: list[dict]) -> list[dict]:
    return [entries[0], *entries[2:]]


def _reorder(entries: list[dict]) -> list[dict]:
    return [entries[0], entries[2], entries[1], entries[3]]


def _truncate(entries: list[dict]) -> list[dict]:
    return entries[:3]


def _edit_and_rechain(entries: list[dict]) -> list[dict]:
    entries[1]["verdict"] = "passed"
    prev = "0" * 64
    for seq, entry in enumerate(entries):
        entry.update(seq=seq, prev=prev)
        prev = hashlib.sha256(json.dumps(entry).encode()).hexdigest()
    return entries


def _egress_log_command(site: SiteConfig, capsys: pytest.CaptureFixture[str]):
    code = main(["site", "egress-log", "--config", str(site.source), "--json"])
    return code, json.loads(capsys.readouterr().out)


@pytest.mark.parametrize(
    ("tamper", "expected"),
    [
        (_edit, {"entry-mac-invalid", "chain-broken"}),
        (_delete, {"chain-broken", "sequence-gap", "head-mismatch"}),
        (_reorder, {"chain-broken", "sequence-gap"}),
        (_truncate, {"head-mismatch"}),
        (_edit_and_rechain, {"entry-mac-invalid"}),
    ],
    ids=["edited", "deleted", "reordered", "truncated", "rechained"],
)
def test_a_tampered_egress_log_fails_fedbone_site_egress_log(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    tamper: Callable[[list[dict]], list[dict]],
    expected: set[str],
) -> None:
    # Prepare
    site = _egress_site(tmp_path)
    assert _egress_log_command(site, capsys)[0] == 0

    # Execute
    _write_lines(site.egress_log, tamper(_lines(site.egress_log)))
    code, document = _egress_log_command(site, capsys)

    # Assert
    assert code == 1
    assert document["verified"] is False and document["keyed"] is True
    assert expected <= {p["code"] for p in document["problems"]}
