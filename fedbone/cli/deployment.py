"""The ``fedbone server`` and ``fedbone site`` commands (deployment runtime).

``fedbone server start`` and ``fedbone site start`` check their inputs, then
replace themselves with ``flower-superlink`` / ``flower-supernode`` so that a
container's stop signal reaches Flower directly. ``register`` and ``run`` talk
to a running SuperLink through the ``flwr`` CLI with a throw-away
``FLWR_HOME``, so nothing is read from or written to the user's home.
"""

from __future__ import annotations

import argparse
import logging
import os
import tempfile
from pathlib import Path

from fedbone.cli.approvals import add_approval_parsers
from fedbone.cli.egress_log import add_egress_log_parser
from fedbone.cli.site_init import add_site_init_parser

__all__ = ["add_server_parser", "add_site_parser", "run_server", "run_site"]

_DEFAULT_SUPERLINK = "127.0.0.1:9093"
#: The project folder (holds the ``pyproject.toml`` with ``[tool.flwr.app]``).
_PROJECT_DIR = Path(__file__).resolve().parents[2]


def add_server_parser(sub: argparse._SubParsersAction) -> None:
    """Add ``fedbone server {start,register,run}`` to the subparsers."""
    server = sub.add_parser(
        "server",
        help="run the coordinating centre (Flower SuperLink) and submit studies",
        description=(
            "Run the centre's SuperLink with TLS, SuperNode authentication, a "
            "persistent state database and no run-time dependency installation; "
            "register the sites' public keys; submit a study."
        ),
    )
    actions = server.add_subparsers(
        dest="server_command", required=True, metavar="ACTION"
    )
    start = actions.add_parser("start", help="run the SuperLink (foreground)")
    start.add_argument("--pki", type=Path, required=True, help="study PKI folder")
    start.add_argument(
        "--address",
        default=_DEFAULT_SUPERLINK,
        help=f"HOST:PORT to bind (default {_DEFAULT_SUPERLINK}); the server "
        "certificate must name HOST",
    )
    start.add_argument(
        "--state", type=Path, required=True, help="SQLite state database file"
    )
    register = actions.add_parser("register", help="register sites' public keys")
    _add_connection(register)
    register.add_argument(
        "--site", action="append", required=True, help="site id (repeatable)"
    )
    run = actions.add_parser("run", help="submit a study and wait for it to end")
    _add_connection(run)
    run.add_argument("study", type=Path, help="study YAML on this machine")
    run.add_argument("--stream", action="store_true", help="print the run's log")
    run.add_argument(
        "--log", type=Path, default=None, help="also keep the output in this file"
    )
    run.add_argument(
        "--resume",
        type=Path,
        default=None,
        metavar="RUN_DIR",
        help="continue this interrupted run folder (on the centre) from its "
        "checkpoint, e.g. after the centre was restarted",
    )
    server.set_defaults(func=run_server)


def _add_connection(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--pki", type=Path, required=True, help="study PKI folder")
    parser.add_argument(
        "--superlink",
        default=_DEFAULT_SUPERLINK,
        help=f"SuperLink HOST:PORT (default {_DEFAULT_SUPERLINK})",
    )


def add_site_parser(sub: argparse._SubParsersAction) -> None:
    """Add ``fedbone site {start,egress-log,init,approve,revoke,status}``."""
    site = sub.add_parser(
        "site",
        help="run a hospital's site (Flower SuperNode)",
        description=(
            "Run this hospital's SuperNode: TLS to the centre with the study CA, "
            "authenticated with the site's private key, serving the ClientApp "
            "for the site YAML. Nothing is downloaded or installed at run time."
        ),
    )
    actions = site.add_subparsers(dest="site_command", required=True, metavar="ACTION")
    start = actions.add_parser("start", help="run the SuperNode (foreground)")
    start.add_argument("--config", type=Path, required=True, help="site YAML")
    start.add_argument("--superlink", required=True, help="centre's HOST:PORT")
    start.add_argument(
        "--pki-ca", type=Path, required=True, help="the study CA certificate (ca.crt)"
    )
    start.add_argument(
        "--key", type=Path, required=True, help="the site's private key (<site>.key)"
    )
    start.add_argument(
        "--runtime-address",
        default="127.0.0.1:9094",
        help="HOST:PORT of the local API the site's ClientApps use (distinct per "
        "SuperNode on one machine)",
    )
    start.add_argument(
        "--activation-retry-s",
        type=float,
        default=180.0,
        metavar="SECONDS",
        help="keep retrying this long while the SuperLink refuses the site "
        "(after a crash it holds the old connection for up to 60 s; default 180)",
    )
    start.set_defaults(func=run_site)
    add_egress_log_parser(actions)
    add_site_init_parser(actions)
    add_approval_parsers(actions)


def run_server(args: argparse.Namespace) -> int:
    """Run ``fedbone server ACTION``; return the exit code."""
    if args.server_command == "start":
        return _server_start(args)
    if args.server_command == "register":
        return _server_register(args)
    if args.server_command == "run":
        return _server_run(args)
    raise ValueError(f"unknown server action {args.server_command!r}")


def _server_start(args: argparse.Namespace) -> int:
    from fedbone.federation.deployment.runtime import (
        SuperLinkSpec,
        flower_env,
        split_address,
        superlink_arguments,
    )
    from fedbone.security.pki import StudyPki, check_server_certificate

    pki = StudyPki.at(args.pki)
    host, _ = split_address(args.address)
    check_server_certificate(pki, host)
    args.state.parent.mkdir(parents=True, exist_ok=True)
    spec = SuperLinkSpec(
        address=args.address,
        certificate=pki.server_certificate,
        key=pki.server_key,
        ca_certificate=pki.ca_certificate,
        database=args.state,
    )
    argv = superlink_arguments(spec)
    home = args.state.parent / "flwr-home"
    env = flower_env(home)
    os.execvpe(argv[0], argv, env)


def _server_register(args: argparse.Namespace) -> int:
    from fedbone.federation.deployment.control import register_site_keys
    from fedbone.federation.deployment.runtime import write_connection_config
    from fedbone.security.pki import StudyPki

    pki = StudyPki.at(args.pki)
    with tempfile.TemporaryDirectory(prefix="fedbone-flwr-") as home:
        write_connection_config(Path(home), args.superlink, pki.ca_certificate)
        keys = {site: pki.site_public_key(site) for site in args.site}
        node_ids = register_site_keys(Path(home), keys)
    for site, node_id in node_ids.items():
        print(f"site {site}: {node_id}")
    return 0


def _server_run(args: argparse.Namespace) -> int:
    from fedbone.federation.deployment.control import submit_run
    from fedbone.federation.deployment.runtime import write_connection_config
    from fedbone.security.pki import StudyPki

    pki = StudyPki.at(args.pki)
    with tempfile.TemporaryDirectory(prefix="fedbone-flwr-") as home:
        write_connection_config(Path(home), args.superlink, pki.ca_certificate)
        log = args.log or Path(home) / "run.log"
        outcome = submit_run(
            Path(home),
            _PROJECT_DIR,
            args.study,
            log_path=log,
            stream=args.stream,
            on_line=print if args.stream else None,
            resume_run_dir=args.resume,
        )
    print(f"run {outcome.run_id}: {outcome.status}")
    return 0 if outcome.completed else 1


def run_site(args: argparse.Namespace) -> int:
    """Run ``fedbone site start``: check the inputs, then run the SuperNode.

    The SuperNode runs as a child that is started again while the SuperLink
    refuses it (a restart right after a crash); see
    :mod:`fedbone.federation.deployment.supervisor`. Its ClientApps run only
    study apps whose code is byte-identical to the fedbone installed here
    (:mod:`fedbone.federation.deployment.pinned_clientapp`).
    """
    from fedbone.config.site import load_site_config
    from fedbone.errors import Problem
    from fedbone.federation.deployment.pinned_clientapp import (
        write_clientapp_shim,
    )
    from fedbone.federation.deployment.runtime import (
        DeploymentError,
        SuperNodeSpec,
        flower_env,
        supernode_arguments,
    )
    from fedbone.federation.deployment.supervisor import run_supernode

    if args.site_command != "start":
        raise ValueError(f"unknown site action {args.site_command!r}")
    site = load_site_config(args.config)
    if not site.policy.require_study_approval:
        logging.getLogger("fedbone").warning(
            "site %s answers every study: set policy.require_study_approval: true "
            "and approve studies with `fedbone site approve`",
            site.site_id,
        )
    missing = [
        Problem("missing-file", f"{path} does not exist; copy it from the centre", flag)
        for flag, path in (("--pki-ca", args.pki_ca), ("--key", args.key))
        if not path.is_file()
    ]
    if missing:
        raise DeploymentError(f"site {site.site_id}", missing)
    spec = SuperNodeSpec(
        superlink=args.superlink,
        ca_certificate=args.pki_ca,
        private_key=args.key,
        site_config=args.config,
        runtime_address=args.runtime_address,
    )
    env = flower_env(site.work_dir / "flwr-home")
    # Flower's SuperExec starts `flwr-clientapp` by name: ours comes first and
    # installs a study's app only if its code is the code installed here.
    shim = write_clientapp_shim(site.work_dir / "pinned-bin")
    env["PATH"] = os.pathsep.join([str(shim.parent), env["PATH"]])
    return run_supernode(
        supernode_arguments(spec),
        env,
        site=site.site_id,
        retry_s=args.activation_retry_s,
    )
