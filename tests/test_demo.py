from pathlib import Path

import pytest

from fedbone.cli import main
from fedbone.data.cache import SiteCache


def test_demo_writes_and_prepares_every_phantom_site(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "demo"

    code = main(
        [
            "demo",
            "--out",
            str(out),
            "--scale",
            "0.0005",
            "--min-scans",
            "8",
            "--workers",
            "1",
        ]
    )

    printed = capsys.readouterr().out
    assert code == 0
    for site in "ABCDEF":
        cache = SiteCache.open(out / f"site-{site}" / "cache", verify=True)
        assert len(cache) >= 8
        assert cache.images.shape[1:] == (256, 64)
        assert (out / f"site-{site}" / "site.yaml").is_file()
        assert f"\n{site} " in printed
    assert "demo finished" in printed
