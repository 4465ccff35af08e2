"""The ``volume`` sink: JSON Lines files in the deployment's volume, shared by its replicas.

Every worker appends to a file of its own, named
``<UTC start, 20261205T134501Z>-<replica>-<pid>-<n>.jsonl``, so names sort by time and say
who wrote them. A file is closed at the hour's turn and when it reaches a sixteenth of
``payload_log_max_size``; at each new file (and every minute) a writer removes files older than
``payload_log_retention``, then the oldest until the volume's total fits the size. Another
writer may remove the file this one is writing: the writer sees its file unlinked and starts a
new one, so nothing is written into a file no one can read.
"""

from __future__ import annotations

import os
import re
import time
from pathlib import Path
from typing import BinaryIO

from serving_image.contract import PAYLOAD_SINK_UNREACHABLE
from serving_image.payload_log.records import Exchange, Source, json_line

SUFFIX = ".jsonl"
MIN_FILE = 4096  # bytes: the smallest size a file is closed at
SWEEP_EVERY = 60.0  # seconds between sweeps of old files, besides one at each new file
BUFFER = 1 << 20  # bytes: the open file's write buffer
ACTIVE = 5.0  # seconds: a file written this recently by another writer is not removed


def file_name(started: float, replica: str, pid: int, number: int) -> str:
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(started))
    return f"{stamp}-{re.sub(r'[^A-Za-z0-9_.-]', '-', replica)}-{pid}-{number:04d}{SUFFIX}"


class VolumeSink:
    def __init__(self, directory: str, source: Source, max_size: int, retention: float) -> None:
        self.directory = Path(directory)
        self.source = source
        self.max_size = max_size
        self.retention = retention
        self.file_size = max(MIN_FILE, max_size // 16)
        self.file: BinaryIO | None = None
        self.path: Path | None = None
        self.hour = -1
        self.written = 0
        self.number = 0
        self.swept = 0.0

    def check(self) -> str | None:
        if not os.access(self.directory, os.W_OK):
            return (f"{PAYLOAD_SINK_UNREACHABLE}: {self.directory} is not writable by this "
                    f"user (uid {os.getuid()}); records are dropped.")
        return None

    def write(self, exchanges: list[Exchange]) -> None:
        """Each line into the file's buffer as it is made, then one flush: at 100 rows, half
        the cost of joining the batch's lines first (a few MB made and copied again)."""
        now = time.time()
        file = self._file(now)
        source, file_size, written = self.source, self.file_size, self.written
        for exchange in exchanges:
            line = json_line(exchange, source)
            if written and written + len(line) > file_size:
                file, written = self._next_file(now), 0
            file.write(line)
            written += len(line)
        self.written = written
        file.flush()
        if now - self.swept >= SWEEP_EVERY:
            self.sweep(now)

    def close(self) -> None:
        if self.file is not None:
            self.file.close()
            self.file = None

    def _file(self, now: float) -> BinaryIO:
        """The file for this batch: a new one at the hour's turn, or when another writer's
        sweep removed this one."""
        file = self.file
        if (file is None or int(now // 3600) != self.hour
                or os.fstat(file.fileno()).st_nlink == 0):
            return self._next_file(now)
        return file

    def _next_file(self, now: float) -> BinaryIO:
        self.close()
        self.number += 1
        self.path = self.directory / file_name(now, self.source.replica, os.getpid(),
                                               self.number)
        # kept open across batches; the buffer is flushed at each batch's end, and a full one
        # is written at a line's end (a line longer than it is written whole, by itself)
        file = self.file = open(self.path, "ab", buffering=BUFFER)  # noqa: SIM115
        self.hour, self.written = int(now // 3600), 0
        self.sweep(now)
        return file

    def sweep(self, now: float) -> None:
        """Remove files past the retention, then the oldest beyond the volume's size."""
        self.swept = now
        files = []
        for path in sorted(self.directory.glob(f"*{SUFFIX}")):
            try:
                stat = path.stat()
            except FileNotFoundError:  # another writer's sweep took it
                continue
            files.append((path, stat.st_size, stat.st_mtime))
        total = sum(size for _, size, _ in files)
        for path, size, modified in files:  # oldest first: names sort by time
            if path == self.path or now - modified < ACTIVE:  # being written
                continue
            if now - modified > self.retention or total > self.max_size:
                path.unlink(missing_ok=True)
                total -= size
