"""uvicorn in a thread of the node process, so the API reads the same state as the DICOM listener.

Input: the settings' ``api`` section and the node's ``Runtime``. Output: an HTTP server that
``start()`` returns from once it accepts connections and ``stop()`` shuts down gracefully.
"""

from __future__ import annotations

import logging
import threading
import time

import uvicorn

from onconode.api.app import Runtime, create_app
from onconode.config import Settings

log = logging.getLogger(__name__)


class ApiServerError(RuntimeError):
    """The API could not start (port taken, bad address); the message says which."""


class ApiServer:
    def __init__(self, settings: Settings, runtime: Runtime) -> None:
        config = uvicorn.Config(create_app(settings, runtime), host=settings.api.host, port=settings.api.port,
                                log_level="warning", access_log=False, lifespan="on", log_config=None)
        self._server = uvicorn.Server(config)
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        sockets = [s for server in getattr(self._server, "servers", []) for s in server.sockets]
        return int(sockets[0].getsockname()[1]) if sockets else self._server.config.port

    def start(self, timeout: float = 20) -> None:
        """Serve in a daemon thread; returns once listening.

        Raises
        ------
        ApiServerError
            If uvicorn stopped before listening (e.g. the port is in use) or did not start in time.
        """
        self._thread = threading.Thread(target=self._server.run, name="onconode-api", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if not self._thread.is_alive():
                raise ApiServerError(f"HTTP API could not listen on {self._server.config.host}:"
                                     f"{self._server.config.port} (in use or not an address of this host)")
            if time.monotonic() > deadline:
                raise ApiServerError("HTTP API did not start in time")
            time.sleep(0.02)

    def stop(self) -> None:
        self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)
