"""The inference log (``-C payload_log``): every prediction's request and answer, sampled,
recorded without slowing serving.

``capture`` copies each prediction off the wire (the routes the table gives a ``protocol``),
``records`` says what a record holds, ``writer`` queues records to a thread per worker, and
the sinks store them: ``volume_sink`` (JSON Lines files in the deployment's volume) and
``http_sink`` (KServe's logger CloudEvents).
"""

from __future__ import annotations

from serving_image.contract import PAYLOAD_LOG_VOLUME
from serving_image.payload_log.http_sink import HttpSink
from serving_image.payload_log.records import Source
from serving_image.payload_log.volume_sink import VolumeSink
from serving_image.payload_log.writer import Sink, Writer
from serving_image.settings import ServerSettings


def writer(settings: ServerSettings) -> Writer | None:
    """The worker's writer to the configured sink; ``None`` when the log is off."""
    if not settings.payload_log:
        return None
    source = Source.of(settings)
    sink: Sink
    if settings.payload_log == PAYLOAD_LOG_VOLUME:
        sink = VolumeSink(settings.payload_log_dir, source, settings.payload_log_max_size,
                          settings.payload_log_retention)
    else:
        sink = HttpSink(settings.payload_log, settings.payload_log_token, source)
    return Writer(sink)


def flush_budget(settings: ServerSettings) -> float:
    """Seconds the queue may take to flush at shutdown: the stop timeout, less the drain and
    a second for the server's own ending."""
    return max(0.5, settings.stop_timeout - settings.drain_seconds - 1)
