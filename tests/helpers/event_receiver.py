"""A small CloudEvents receiver for the inference log's HTTP sink: it keeps every POST it gets
(headers and body), and can be told to refuse (503) or to hang."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass(frozen=True)
class Event:
    headers: dict[str, str]  # names lower-cased
    body: bytes

    @property
    def type(self) -> str:
        return self.headers.get("ce-type", "")


class Receiver:
    def __init__(self) -> None:
        self.events: list[Event] = []
        self.mode = "ok"  # ok, refuse, hang
        self.lock = threading.Lock()

    def wait_for(self, count: int, seconds: float = 30) -> list[Event]:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            with self.lock:
                if len(self.events) >= count:
                    return list(self.events)
            time.sleep(0.05)
        with self.lock:
            return list(self.events)


@contextmanager
def receiver(host: str = "127.0.0.1", port: int = 0) -> Iterator[tuple[Receiver, str]]:
    """A receiver on ``port`` of ``host`` (0: a free one), and its URL."""
    state = Receiver()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as the sink uses it

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length", 0)))
            if state.mode == "hang":
                time.sleep(30)
            if state.mode == "refuse":
                self.send_response(503)
            else:
                with state.lock:
                    state.events.append(Event({k.lower(): v for k, v in self.headers.items()},
                                              body))
                self.send_response(200)
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state, f"http://{host}:{server.server_address[1]}/events"
    finally:
        server.shutdown()
        server.server_close()
