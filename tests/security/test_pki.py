import argparse
import ipaddress
import shutil
import socket
import ssl
import stat
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID
from cryptography.x509.verification import PolicyBuilder, Store, VerificationError

from fedbone.cli.pki import add_pki_parser, run_pki
from fedbone.security import (
    PkiError,
    StudyPki,
    add_site_keys,
    check_server_certificate,
    create_study_pki,
)

HOSTS = ["superlink.example.org", "localhost", "127.0.0.1", "::1"]


def _create(root: Path, **overrides: object) -> StudyPki:
    arguments: dict = {
        "study": "bone-study",
        "server_hosts": HOSTS,
        "sites": ["A", "B"],
    }
    arguments.update(overrides)
    return create_study_pki(root, **arguments)


def _certificate(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> StudyPki:
    return _create(tmp_path_factory.mktemp("pki") / "study")


@pytest.fixture(scope="module")
def other_pki(tmp_path_factory: pytest.TempPathFactory) -> StudyPki:
    return _create(tmp_path_factory.mktemp("other") / "study", sites=[])


# --- layout and contents ---------------------------------------------------------


def test_writes_the_layout_with_owner_only_private_keys(pki: StudyPki) -> None:
    private = [pki.ca_key, pki.server_key]
    private += [pki.site_private_key(s) for s in ("A", "B")]
    public = [pki.ca_certificate, pki.server_certificate]
    public += [pki.site_public_key(s) for s in ("A", "B")]

    assert pki == StudyPki.at(pki.root)
    assert pki.site_private_key("A") == pki.root / "sites" / "A" / "A.key"
    assert pki.site_public_key("B") == pki.root / "sites" / "B" / "B.pub"
    assert [_mode(p) for p in private] == [0o600] * 4
    assert all(p.is_file() and not _mode(p) & 0o022 for p in public)
    assert pki.sites() == ("A", "B")
    assert not list(pki.root.rglob(".*.tmp"))


def test_created_folders_are_owner_only_and_an_open_one_is_warned_about(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Prepare: an existing root others can enter; the rest is created here.
    root = tmp_path / "study"
    root.mkdir()
    root.chmod(0o755)

    # Execute
    with caplog.at_level("WARNING", logger="fedbone.security.pki"):
        pki = _create(root)

    # Assert
    created = [root / "sites", pki.site_folder("A"), pki.site_folder("B")]
    assert [_mode(f) for f in created] == [0o700] * 3
    assert _mode(root) == 0o755
    assert [r.getMessage() for r in caplog.records if "chmod 700" in r.message] == [
        f"PKI folder {root} is mode 755: other users can list the study's key "
        f"files; run `chmod 700 {root}`"
    ]


def test_server_certificate_names_every_host_and_is_for_servers(
    pki: StudyPki,
) -> None:
    ca = _certificate(pki.ca_certificate)
    server = _certificate(pki.server_certificate)
    sans = server.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    usages = server.extensions.get_extension_for_class(x509.ExtendedKeyUsage)
    constraints = ca.extensions.get_extension_for_class(x509.BasicConstraints)
    lifetime = server.not_valid_after_utc - server.not_valid_before_utc

    assert sans.value.get_values_for_type(x509.DNSName) == [
        "superlink.example.org",
        "localhost",
    ]
    assert sans.value.get_values_for_type(x509.IPAddress) == [
        ipaddress.ip_address("127.0.0.1"),
        ipaddress.ip_address("::1"),
    ]
    assert ExtendedKeyUsageOID.SERVER_AUTH in usages.value
    assert constraints.critical and constraints.value.ca
    assert timedelta(days=365) <= lifetime <= timedelta(days=365, minutes=10)
    assert "bone-study" in ca.subject.rfc4514_string()


def test_loopback_names_are_added_unless_refused(tmp_path: Path) -> None:
    with_loopback = _create(tmp_path / "with", server_hosts=["10.1.2.3"], sites=[])
    without = _create(
        tmp_path / "without", server_hosts=["10.1.2.3"], sites=[], loopback=False
    )

    check_server_certificate(with_loopback, "127.0.0.1")
    check_server_certificate(with_loopback, "::1")
    check_server_certificate(with_loopback, "localhost")
    check_server_certificate(without, "10.1.2.3")
    with pytest.raises(PkiError) as refused:
        check_server_certificate(without, "127.0.0.1")
    assert refused.value.codes == ["host-not-in-certificate"]


@pytest.mark.parametrize(
    "name",
    [
        x509.DNSName("superlink.example.org"),
        x509.DNSName("localhost"),
        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
    ],
)
def test_chain_verifies_for_each_host_with_cryptography(
    pki: StudyPki, name: x509.DNSName | x509.IPAddress
) -> None:
    store = Store([_certificate(pki.ca_certificate)])
    verifier = PolicyBuilder().store(store).build_server_verifier(name)

    chain = verifier.verify(_certificate(pki.server_certificate), [])

    assert chain[-1] == _certificate(pki.ca_certificate)


def test_chain_does_not_verify_against_another_ca(
    pki: StudyPki, other_pki: StudyPki
) -> None:
    store = Store([_certificate(other_pki.ca_certificate)])
    verifier = (
        PolicyBuilder().store(store).build_server_verifier(x509.DNSName("localhost"))
    )

    with pytest.raises(VerificationError):
        verifier.verify(_certificate(pki.server_certificate), [])


def test_flower_loads_the_site_keys_the_way_supernode_and_register_do(
    pki: StudyPki,
) -> None:
    from flwr.cli.supernode.register import try_load_public_key
    from flwr.supercore.primitives.asymmetric import public_key_to_bytes
    from flwr.supernode.cli.flower_supernode import (
        _try_setup_client_authentication,
    )

    args = argparse.Namespace(
        auth_supernode_private_key=str(pki.site_private_key("A")),
        auth_supernode_public_key=None,
    )

    loaded = _try_setup_client_authentication(args)
    registered = try_load_public_key(pki.site_public_key("A"))
    other_site = try_load_public_key(pki.site_public_key("B"))

    assert loaded is not None
    assert public_key_to_bytes(loaded[1]) == registered
    assert registered != other_site


# --- TLS as the SuperLink serves it (uvicorn) and a SuperNode checks it -----------


@pytest.fixture
def tls_port(pki: StudyPki) -> Iterator[int]:
    from uvicorn.config import create_ssl_context

    # Exactly how `flower-superlink --ssl-certfile/--ssl-keyfile` (uvicorn) loads them.
    context = create_ssl_context(
        pki.server_certificate, pki.server_key, None, ssl.PROTOCOL_TLS_SERVER,
        ssl.CERT_NONE, None, None,
    )  # fmt: skip
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.2)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                connection, _ = listener.accept()
            except TimeoutError:
                continue
            connection.settimeout(5)
            try:
                with context.wrap_socket(connection, server_side=True):
                    pass
            except (ssl.SSLError, OSError):
                connection.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1]
    finally:
        stop.set()
        thread.join(5)
        listener.close()


def _handshake(port: int, root_certificate: Path, server_name: str) -> bool:
    # The SuperNode's client context (flwr.supercore.protobuf.client): the study
    # CA as the only trust anchor, hostname checked against the SANs.
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.load_verify_locations(cadata=root_certificate.read_text())
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        try:
            with context.wrap_socket(raw, server_hostname=server_name):
                return True
        except ssl.SSLCertVerificationError:
            return False


def test_a_supernode_completes_tls_with_the_server_certificate(
    pki: StudyPki, other_pki: StudyPki, tls_port: int
) -> None:
    by_ip = _handshake(tls_port, pki.ca_certificate, "127.0.0.1")
    by_name = _handshake(tls_port, pki.ca_certificate, "superlink.example.org")
    other_ca = _handshake(tls_port, other_pki.ca_certificate, "127.0.0.1")
    wrong_name = _handshake(tls_port, pki.ca_certificate, "wrong.example.org")

    assert by_ip and by_name
    assert not other_ca
    assert not wrong_name


# --- refusing to overwrite ---------------------------------------------------------


def test_init_refuses_to_overwrite_and_names_every_file(tmp_path: Path) -> None:
    pki = _create(tmp_path)
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}

    with pytest.raises(PkiError) as refused:
        _create(tmp_path, sites=["A"])

    assert set(refused.value.codes) == {"exists"}
    assert len(refused.value.problems) == 6
    assert "--force" in str(refused.value)
    assert str(pki.ca_key) in str(refused.value)
    assert {p: p.read_bytes() for p in before} == before


def test_init_with_force_replaces_the_files(tmp_path: Path) -> None:
    pki = _create(tmp_path)
    old_ca = pki.ca_certificate.read_bytes()
    old_site_key = pki.site_private_key("A").read_bytes()

    _create(tmp_path, force=True)

    assert pki.ca_certificate.read_bytes() != old_ca
    assert pki.site_private_key("A").read_bytes() != old_site_key
    assert _mode(pki.site_private_key("A")) == 0o600
    check_server_certificate(pki, "localhost")


def test_add_site_creates_only_new_sites_and_refuses_existing(
    tmp_path: Path,
) -> None:
    pki = _create(tmp_path, sites=["A"])
    key_a = pki.site_private_key("A").read_bytes()

    add_site_keys(tmp_path, ["C"])
    with pytest.raises(PkiError) as refused:
        add_site_keys(tmp_path, ["A", "D"])

    assert pki.sites() == ("A", "C")
    assert _mode(pki.site_private_key("C")) == 0o600
    assert pki.site_private_key("A").read_bytes() == key_a
    assert refused.value.codes == ["exists", "exists"]
    assert not pki.site_folder("D").exists()


def test_add_site_needs_an_existing_pki(tmp_path: Path) -> None:
    with pytest.raises(PkiError) as refused:
        add_site_keys(tmp_path, ["A"])

    assert refused.value.codes == ["no-pki"]
    assert "fedbone pki init" in str(refused.value)


def test_invalid_arguments_are_all_reported_and_nothing_written(
    tmp_path: Path,
) -> None:
    with pytest.raises(PkiError) as refused:
        _create(
            tmp_path,
            study=" ",
            server_hosts=["https://superlink:9092", "ok.example.org"],
            sites=["A", "A", "../evil"],
            days=0,
        )

    assert sorted(refused.value.codes) == [
        "bad-days",
        "bad-server-host",
        "bad-site-id",
        "duplicate-site",
        "missing-study",
    ]
    assert not any(tmp_path.iterdir())


# --- checking the server certificate ------------------------------------------------


def test_check_passes_for_every_named_host(pki: StudyPki) -> None:
    for host in HOSTS:
        check_server_certificate(pki, host)


def test_check_reports_expired_and_not_yet_valid(pki: StudyPki) -> None:
    later = datetime.now(UTC) + timedelta(days=400)
    earlier = datetime.now(UTC) - timedelta(days=1)

    with pytest.raises(PkiError) as expired:
        check_server_certificate(pki, "localhost", now=later)
    with pytest.raises(PkiError) as early:
        check_server_certificate(pki, "localhost", now=earlier)

    assert expired.value.codes == ["ca-expired", "expired"]
    assert early.value.codes == ["ca-not-yet-valid", "not-yet-valid"]


def test_check_reports_a_host_not_in_the_certificate(pki: StudyPki) -> None:
    with pytest.raises(PkiError) as wrong:
        check_server_certificate(pki, "10.0.0.7")

    assert wrong.value.codes == ["host-not-in-certificate"]
    assert "--server-host 10.0.0.7" in str(wrong.value)


def test_check_reports_every_problem_of_a_mixed_up_folder(
    tmp_path: Path, pki: StudyPki, other_pki: StudyPki
) -> None:
    mixed = StudyPki.at(tmp_path)
    shutil.copy(pki.ca_certificate, mixed.ca_certificate)
    shutil.copy(other_pki.server_certificate, mixed.server_certificate)
    shutil.copy(pki.server_key, mixed.server_key)
    later = datetime.now(UTC) + timedelta(days=400)

    with pytest.raises(PkiError) as mixed_up:
        check_server_certificate(mixed, "wrong.example.org", now=later)

    assert mixed_up.value.codes == [
        "ca-expired",
        "expired",
        "not-signed-by-ca",
        "host-not-in-certificate",
        "key-mismatch",
    ]


def test_check_reports_missing_and_unreadable_files(tmp_path: Path) -> None:
    broken = StudyPki.at(tmp_path)
    broken.ca_certificate.write_text("not a certificate")

    with pytest.raises(PkiError) as missing:
        check_server_certificate(broken, "localhost")
    broken.server_certificate.write_text("garbage")
    broken.server_key.write_text("garbage")
    with pytest.raises(PkiError) as unreadable:
        check_server_certificate(broken, "localhost")

    assert missing.value.codes == ["missing-file", "missing-file"]
    assert unreadable.value.codes == [
        "unreadable-certificate",
        "unreadable-certificate",
        "unreadable-key",
    ]


# --- the command ------------------------------------------------------------------


def _parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="fedbone")
    add_pki_parser(parser.add_subparsers(dest="command"))
    return parser.parse_args(["pki", *argv])


def test_cli_init_add_site_and_check(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = str(tmp_path / "pki")
    init = _parse(
        "init", "--out", out, "--study", "s1", "--server-host", "localhost",
        "--server-host", "127.0.0.1", "--site", "A", "--days", "30",
    )  # fmt: skip

    init_code = run_pki(init)
    add_code = run_pki(_parse("add-site", "--out", out, "--site", "B"))
    ok_code = run_pki(_parse("check", "--out", out, "--server-host", "127.0.0.1"))
    bad_code = run_pki(_parse("check", "--out", out, "--server-host", "example.org"))
    printed = capsys.readouterr().out

    assert (init_code, add_code, ok_code, bad_code) == (0, 0, 0, 1)
    assert init.func is run_pki
    assert StudyPki.at(Path(out)).sites() == ("A", "B")
    assert "sha256" in printed and "SHA256:" in printed
    assert "ok   127.0.0.1" in printed
    assert "FAIL example.org" in printed and "host-not-in-certificate" in printed
    assert "PRIVATE KEY" not in printed and "AAAA" not in printed


def test_cli_init_refuses_an_existing_pki_without_force(tmp_path: Path) -> None:
    argv = ["--out", str(tmp_path), "--study", "s1", "--server-host", "localhost"]
    run_pki(_parse("init", *argv))

    with pytest.raises(PkiError, match="--force"):
        run_pki(_parse("init", *argv))
    forced = run_pki(_parse("init", *argv, "--force"))

    assert forced == 0
