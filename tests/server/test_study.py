import time
from pathlib import Path

from flwr.app import Error, Message, Metadata, RecordDict
from server_messages import reply
from test_strategies import _TwoNodes

from fedbone.config.study import StudyConfig
from server.study_run import SiteInfo, StudyRun


def _request_to(node: int) -> Message:
    metadata = Metadata(
        run_id=1,
        message_id=f"q-{node}",
        src_node_id=0,
        dst_node_id=node,
        reply_to_message_id="",
        group_id="1",
        created_at=time.time(),
        ttl=60.0,
        message_type="query.census",
    )
    return Message(content=RecordDict(), metadata=metadata)


class _OneFails(_TwoNodes):
    def send_and_receive(self, messages, *, timeout=None):  # type: ignore[no-untyped-def]
        failed = Message(
            Error(code=3, reason="SiteTaskError"), reply_to=_request_to(12)
        )
        return [reply(11, {}, 1, message_type="query.census"), failed]


def test_a_failing_site_is_logged_and_left_out_not_fatal(tmp_path: Path) -> None:
    run = StudyRun(StudyConfig(name="s"), _OneFails(), tmp_path)
    run.sites[12] = SiteInfo(12, "B", "train", {}, "", "", "")

    good = run.query("census", [11, 12], RecordDict())

    assert [m.metadata.src_node_id for m in good] == [11]
    assert run.results["site-errors"] == [
        {"site": "B", "action": "census", "reason": "SiteTaskError"}
    ]


def test_config_carries_study_identity_and_simulated_site_paths(tmp_path: Path) -> None:
    run = StudyRun(
        StudyConfig(name="s"),
        _TwoNodes(),
        tmp_path / "run-1",
        sim_site_configs=["/a/site.yaml", "/b/site.yaml"],
    )

    config = run.config("train", {"lr": 0.1})

    assert config["phase"] == "train" and config["lr"] == 0.1
    assert config["run-name"] == "run-1"
    assert config["study-sha256"] == StudyConfig(name="s").sha256()
    assert list(config["sim-site-configs"]) == ["/a/site.yaml", "/b/site.yaml"]
