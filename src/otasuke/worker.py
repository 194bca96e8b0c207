"""The in-process worker: runs the pipeline after acceptance, in a thread of the server.

Loading the rules takes seconds, so it happens in the worker, not at server
start: the console answers at once, and accepted events wait safely in the
database until the detector is ready.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from otasuke.detect.correlation_file import keep_state, save_state
from otasuke.eventstore.export import EventExporter
from otasuke.eventstore.layout import events_root
from otasuke.health import SensorWatch
from otasuke.pipeline import Pipeline, ProcessResult

log = logging.getLogger(__name__)


class BackgroundWorker:
    def __init__(self, make_pipeline: Callable[[], Pipeline], poll_seconds: float = 0.5) -> None:
        self._make_pipeline = make_pipeline
        self._poll = poll_seconds
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.ready = threading.Event()
        self.pipeline: Pipeline | None = None
        self.last_result: ProcessResult | None = None
        self.last_error: str | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="otasuke-worker", daemon=True)
        self._thread.start()

    def wake(self) -> None:
        self._wake.set()

    def stop(self, timeout: float = 10) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _run(self) -> None:
        try:
            self.pipeline = self._make_pipeline()
        except Exception as exc:  # the server keeps accepting; the error is shown in status
            log.exception("worker could not start")
            self.last_error = f"{exc.__class__.__name__}: {exc}"
            return
        settings = self.pipeline.settings
        keep_state(self.pipeline.detector, settings, "serve")  # correlation across restarts
        self.ready.set()
        watch = SensorWatch(self.pipeline.db, interval_seconds=settings.sensor_check_seconds)
        exporter = EventExporter(
            self.pipeline.db,
            events_root(settings),
            interval_seconds=settings.event_export_interval_seconds,
        )
        while not self._stop.is_set():
            try:
                self.last_result = self.pipeline.process_pending()
                watch.run_if_due()
                exporter.run_if_due()
                self.last_error = None
            except Exception as exc:  # logged and retried; events stay pending, none lost
                log.exception("pipeline run failed; retrying")
                self.last_error = f"{exc.__class__.__name__}: {exc}"
            self._wake.wait(self._poll)
            self._wake.clear()
        save_state(self.pipeline.detector)
