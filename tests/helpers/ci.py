"""The one rule for a test that cannot run on this machine: it skips, except under ``CI=true``,
where it fails, so that CI never passes by skipping what it was meant to run."""

from __future__ import annotations

import os
from typing import NoReturn

import pytest


def skip_or_fail(reason: str) -> NoReturn:
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(reason, pytrace=False)
    pytest.skip(reason)
