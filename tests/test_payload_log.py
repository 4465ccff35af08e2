"""The inference log's parts without a server: records, sampling, the volume sink's files and
the writer's queue (tests/test_payload_log_server.py runs them in server processes)."""

from __future__ import annotations

import base64
import json
import os
import threading
import time
import uuid
from pathlib import Path

import pytest

from serving_image import metrics
from serving_image.payload_log import capture, records
from serving_image.payload_log.http_sink import HttpSink
from serving_image.payload_log.records import Exchange, Source
from serving_image.payload_log.volume_sink import VolumeSink, file_name
from serving_image.payload_log.writer import GATHER, Writer

SOURCE = Source("fraud", None, "models:/fraud/3", "3", "mlflow-fraud-abc123")


def exchange(**changes: object) -> Exchange:
    found = Exchange(str(uuid.uuid4()), time.time(), "/invocations", "mlflow",
                     "application/json", {}, [b'{"inputs": [1]}'], 15, 200, 0.002,
                     "application/json", [b'{"predictions": [0]}'], 20)
    for name, value in changes.items():
        setattr(found, name, value)
    found.kept = sum(map(len, found.request_chunks)) + sum(map(len, found.response_chunks))
    return found


def test_bodies_are_kept_as_what_they_are() -> None:
    assert records.body("application/json", b'{"a": [1]}', 10)["body"] == {"a": [1]}
    csv = records.body("text/csv", b"x,y\n1,2\n", 8)
    assert (csv["encoding"], csv["body"]) == ("text", "x,y\n1,2\n")
    parquet = records.body("application/vnd.apache.parquet", b"PAR1\x00\xff", 6)
    assert parquet["encoding"] == "base64"
    assert base64.b64decode(parquet["body"]) == b"PAR1\x00\xff"
    cut = records.body("application/json", '{"a": "é'.encode()[:-1], 100)
    assert (cut["encoding"], cut["truncated"], cut["size"]) == ("text", True, 100)
    assert cut["body"] == '{"a": "'  # the half character dropped
    events = records.body("text/event-stream", b'data: {"i": 0}\n\ndata: [DONE]\n\n', 30)
    assert (events["encoding"], events["body"]) == ("events", [{"i": 0}, "[DONE]"])
    broken = records.body("application/json", b"{not json", 9)
    assert (broken["encoding"], broken["body"]) == ("text", "{not json")


def test_request_ids_are_the_clients_when_usable() -> None:
    assert records.request_id("abc-123") == "abc-123"
    for unusable in (None, "", "x" * 201, "bad\nid"):
        assert uuid.UUID(records.request_id(unusable))


def test_new_ids_are_unique_and_differ_in_a_forked_worker() -> None:
    ids = [records.request_id(None) for _ in range(1000)]
    assert len(set(ids)) == 1000 and all(uuid.UUID(i).version == 4 for i in ids)
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # a worker forked from a preloaded parent
        os.write(write, records.request_id(None).encode())
        os._exit(0)
    os.waitpid(pid, 0)
    child = os.read(read, 100).decode()
    assert uuid.UUID(child).version == 4 and child[:24] != records.request_id(None)[:24]


def test_sampling_is_decided_by_the_id_alike_everywhere() -> None:
    ids = [str(uuid.uuid4()) for _ in range(20_000)]
    chosen = [records.sampled(i, 0.1) for i in ids]
    assert abs(sum(chosen) / len(ids) - 0.1) < 0.01
    assert chosen == [records.sampled(i, 0.1) for i in ids]  # the same decision again
    assert all(records.sampled(i, 1) for i in ids[:100])
    assert not any(records.sampled(i, 0) for i in ids[:100])


def test_a_record_holds_the_source_and_both_bodies() -> None:
    found = json.loads(records.json_line(exchange(request_headers={"user-agent": "t"}), SOURCE))
    assert found["deployment"] == "fraud" and found["model_version"] == "3"
    assert found["replica"] == "mlflow-fraud-abc123" and found["stream"] is False
    assert found["request"]["body"] == {"inputs": [1]}
    assert found["request"]["headers"] == {"user-agent": "t"}
    assert found["response"]["body"] == {"predictions": [0]}
    assert found["latency_ms"] == 2.0 and found["time"].endswith("Z")


def test_files_rotate_by_size_and_hour_and_sort_by_time(tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    now = [1_780_000_000.0]  # within an hour
    monkeypatch.setattr(time, "time", lambda: now[0])
    sink = VolumeSink(str(tmp_path), SOURCE, max_size=64 * 1024 * 16, retention=86400)
    line = len(records.json_line(exchange(), SOURCE))
    count = 2 * 64 * 1024 // line + 1  # past two files' worth
    for start in range(0, count, 7):  # batches that cross a file's end
        sink.write([exchange() for _ in range(min(7, count - start))])
    now[0] += 3600  # the hour turns
    sink.write([exchange()])
    sink.close()
    names = sorted(p.name for p in tmp_path.glob("*.jsonl"))
    assert len(names) == 4  # three by size, one by the hour
    assert all(os.path.getsize(tmp_path / name) <= 64 * 1024 for name in names)
    hours = [time.strftime("%Y%m%dT%H", time.gmtime(t)) for t in (now[0] - 3600, now[0])]
    assert [name[:11] for name in names] == [hours[0]] * 3 + [hours[1]]
    assert all("-mlflow-fraud-abc123-" in name for name in names)
    lines = [json.loads(line) for name in names for line in (tmp_path / name).open()]
    assert len(lines) == count + 1 and len((tmp_path / names[-1]).read_text().splitlines()) == 1


def test_old_files_go_first_and_a_removed_file_is_replaced(tmp_path: Path) -> None:
    old = tmp_path / file_name(time.time() - 40 * 86400, "other", 1, 1)
    old.write_text("{}\n")
    os.utime(old, (time.time() - 40 * 86400,) * 2)
    big = [tmp_path / file_name(time.time() - 3600 + i, "other", 1, i) for i in range(4)]
    for path in big:
        path.write_bytes(b"x" * 3000)
        os.utime(path, (time.time() - 600,) * 2)
    sink = VolumeSink(str(tmp_path), SOURCE, max_size=8000, retention=30 * 86400)
    sink.write([exchange()])
    assert not old.exists()  # past the retention
    assert [p.exists() for p in big] == [False, False, True, True]  # the oldest, to fit
    assert sink.path is not None
    sink.path.unlink()  # another writer's sweep took it
    sink.write([exchange()])
    assert sink.path.exists() and len(sink.path.read_text().splitlines()) == 1


class SlowSink:
    def __init__(self, fail: bool = False) -> None:
        self.fail = fail
        self.gate = threading.Event()
        self.written: list[Exchange] = []

    def check(self) -> str | None:
        return None

    def write(self, exchanges: list[Exchange]) -> None:
        self.gate.wait(5)
        if self.fail:
            raise ConnectionRefusedError("refused")
        self.written += exchanges

    def close(self) -> None:
        pass


def _count(name: str, labels: str = "") -> float:
    text = metrics.generate_latest(metrics.REGISTRY).decode()
    for line in text.splitlines():
        if line.startswith(f"{name}{labels} "):
            return float(line.split()[-1])
    return 0.0


def test_a_full_queue_drops_and_counts_and_close_flushes() -> None:
    sink = SlowSink()
    writer = Writer(sink, size=10)
    writer.start()
    dropped = _count("mlflow_server_payload_log_dropped_total", '{reason="queue_full"}')
    started = time.perf_counter()
    for _ in range(50):
        writer.put(exchange())
    assert time.perf_counter() - started < 0.5  # never waits for the sink
    after = _count("mlflow_server_payload_log_dropped_total", '{reason="queue_full"}')
    assert after - dropped >= 30  # 10 queued, and what the thread took before it blocked
    sink.gate.set()
    writer.close(5)
    assert len(sink.written) + after - dropped == 50 and not writer.thread.is_alive()


def test_the_queue_is_bounded_by_the_bytes_of_its_bodies_too() -> None:
    """Records with big bodies fill the queue long before its count does: 2,048 records of
    64 kB bodies would be 256 MB held in a worker while the sink is slow."""
    sink = SlowSink()
    sink.gate.set()
    writer = Writer(sink, size=100, max_bytes=1_000_000)  # not started: nothing leaves the queue
    body = b'{"inputs": "' + b"x" * 299_980 + b'"}'
    dropped = _count("mlflow_server_payload_log_dropped_total", '{reason="queue_full"}')
    for _ in range(5):
        writer.put(exchange(request_chunks=[body], request_size=len(body)))
    assert len(writer.queue) == 3  # 3 x 300 kB fit under 1 MB; a fourth does not
    assert _count("mlflow_server_payload_log_dropped_total",
                  '{reason="queue_full"}') - dropped == 2
    writer.put(exchange())  # a small one still fits
    assert len(writer.queue) == 4
    writer._flush(ending=False, pause=0.0)  # what the thread does: room again
    writer.put(exchange(request_chunks=[body], request_size=len(body)))
    assert len(writer.queue) == 1 and writer.bytes_in - writer.bytes_out == len(body) + 20
    writer._flush(ending=False, pause=0.0)
    huge = b'"' + b"x" * 1_999_998 + b'"'  # a payload_log_max_body above the bound
    writer.put(exchange(request_chunks=[huge], request_size=len(huge)))
    assert len(writer.queue) == 1  # an empty queue takes any one record


def test_a_failing_sink_is_counted_and_retried() -> None:
    sink = SlowSink(fail=True)
    sink.gate.set()
    writer = Writer(sink, size=100)
    writer.start()
    before = _count("mlflow_server_payload_log_dropped_total", '{reason="sink_error"}')
    writer.put(exchange())
    deadline = time.monotonic() + 5
    while _count("mlflow_server_payload_log_dropped_total", '{reason="sink_error"}') == before:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    sink.fail = False
    writer.put(exchange())
    writer.close(5)
    assert len(sink.written) == 1


def test_the_pause_grows_while_the_sink_keeps_failing_and_ends_with_a_success() -> None:
    """The thread's own loop, run in the test with its clock replaced: each wait records the
    pause asked for, and a record comes in while it waits."""
    sink = SlowSink(fail=True)
    sink.gate.set()
    writer = Writer(sink, size=100)
    pauses: list[float] = []

    def wait(timeout: float) -> bool:
        pauses.append(timeout)
        if len(pauses) == 8:
            sink.fail = False
        writer.put(exchange())
        return len(pauses) == 10

    writer.ending.wait = wait  # type: ignore[method-assign]
    writer._run()
    assert pauses == [GATHER, 0.5, 1.0, 2.0, 4.0, 8.0, 10.0, 10.0, GATHER, GATHER]
    assert len(sink.written) == 3  # the records that came after the sink recovered


def test_an_unreachable_sink_at_start_is_a_warning(tmp_path: Path) -> None:
    reason = HttpSink("http://127.0.0.1:9/x", None, SOURCE).check()
    assert reason and reason.startswith("Inference log sink unreachable")
    assert VolumeSink(str(tmp_path / "missing"), SOURCE, 1, 1).check()


def test_a_line_is_one_valid_json_object_whatever_the_bodies() -> None:
    """Bodies the server parsed go in as they came, unless they hold what JSON lacks (Python's
    NaN, which MLflow's path takes) or line breaks; a record is always one line of JSON."""
    cases = [(b'{"inputs": [1.5]}', "json"), (b'{"inputs": [NaN]}', "text"),
             (b'{\n  "inputs": [1]\n}', "json"), (b'{"inputs": [-Infinity]}', "text")]
    for data, encoding in cases:
        line = records.json_line(exchange(request_chunks=[data],
                                          request_size=len(data)), SOURCE)
        assert line.count(b"\n") == 1 and line.endswith(b"\n")
        found = json.loads(line, parse_constant=_refuse)  # strict: no NaN
        assert found["request"]["encoding"] == encoding, data
        if encoding == "json":
            assert found["request"]["body"] == json.loads(data)
        assert found["response"]["body"] == {"predictions": [0]}


def _refuse(constant: str) -> None:
    raise ValueError(f"not JSON: {constant}")


def test_a_body_in_chunks_is_kept_up_to_the_limit_without_copies() -> None:
    chunks, kept, size, weight = [b"abcd", b"efgh", b"ijkl", b"mnop"], [], 0, 0
    for chunk in chunks:
        weight += capture._keep(kept, chunk, size, 10)
        size += len(chunk)
    assert kept == [b"abcd", b"efgh", b"ij"] and weight == 10  # what the queue counts
    assert kept[0] is chunks[0] and kept[1] is chunks[1]  # whole chunks are not copied
    found = exchange(request_chunks=kept, request_size=size, request_type="text/csv")
    assert json.loads(records.json_line(found, SOURCE))["request"] == {
        "headers": {}, "content_type": "text/csv", "size": 16, "truncated": True,
        "encoding": "text", "body": "abcdefghij"}
