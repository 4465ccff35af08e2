"""Reading the front's log after a reload: only lines stamped after the mark count."""

from __future__ import annotations

from mlflow_docker_target.runtimes.container.fronts import stamp as _stamp


def test_stamps_compare_by_time_though_rfc3339_drops_trailing_zeros() -> None:
    # Docker writes nanoseconds without trailing zeros: .9456436 is .945643600
    earlier = _stamp(b"2026-11-22T18:23:22.9456436Z [NOTICE] Loading success.")
    later = _stamp(b"2026-11-22T18:23:22.945643601Z [NOTICE] Reloading HAProxy")
    assert earlier < later
    assert _stamp(b"2026-11-22T18:23:22.5Z x") > _stamp(b"2026-11-22T18:23:22.45Z x")
    assert _stamp(b"2026-11-22T18:23:23Z x") > _stamp(b"2026-11-22T18:23:22.999999999Z x")
    assert _stamp(b"2026-11-22T18:23:22.9456436Z") == ("2026-11-22T18:23:22", "945643600")
