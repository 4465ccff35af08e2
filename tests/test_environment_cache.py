"""The environment cache's record of use (image_build/environment_cache.py): the time of the
last re-tag, else the image's own; and how many unused environments it keeps."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from mlflow_docker_target.image_build import environment_cache


def _image(created: str, tagged: str | None) -> object:
    return SimpleNamespace(attrs={"Created": created,
                                  **({"Metadata": {"LastTagTime": tagged}} if tagged else {})})


@pytest.mark.parametrize(("created", "tagged", "seconds"), [
    ("2026-12-04T20:00:00Z", "2026-12-04T22:08:19.45280233Z", 1796422099.452802),
    ("2026-12-04T20:00:00.5Z", "0001-01-01T00:00:00Z", 1796414400.5),  # never re-tagged
    ("2026-12-04T20:00:00Z", None, 1796414400.0),
])
def test_last_use_is_the_last_tag_in_utc(created: str, tagged: str | None,
                                         seconds: float) -> None:
    assert environment_cache.last_use(_image(created, tagged)) == pytest.approx(seconds)


def test_how_many_unused_environments_stay(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(environment_cache.KEEP_ENV, raising=False)
    assert environment_cache.keep() == 5
    monkeypatch.setenv(environment_cache.KEEP_ENV, "1")
    assert environment_cache.keep() == 1
