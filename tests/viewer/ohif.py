"""OHIF Viewer 3 for the viewer tests: its prebuilt ``dist/`` served on loopback, with Orthanc's
DICOMweb behind the same origin.

One small threaded HTTP server does three things:

- ``/app-config.js``: a config whose only data source is DICOMweb at this server's ``/dicom-web``;
- ``/dicom-web/...``: forwarded to Orthanc's DICOMweb plugin (Orthanc 1.10 sends no CORS headers, so
  a viewer on another port could not read its answers). The ``Host`` header is kept, so the
  BulkDataURIs Orthanc writes into its metadata point back at this server, not at Orthanc's port;
- anything else: the file from ``dist/``, else ``index.html`` (OHIF routes ``/viewer``, ``/`` ... in
  the browser).
"""

from __future__ import annotations

import http.client
import json
import shutil
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

from tests.support import free_port

PROXIED = "/dicom-web/"
# mimetypes reads /etc/mime.types, which may not know these; WebAssembly.instantiateStreaming needs
# application/wasm.
TYPES = {".js": "text/javascript", ".mjs": "text/javascript", ".css": "text/css", ".html": "text/html",
         ".json": "application/json", ".jsonc": "application/json", ".wasm": "application/wasm",
         ".svg": "image/svg+xml", ".png": "image/png", ".ico": "image/x-icon", ".woff2": "font/woff2",
         ".woff": "font/woff", ".ttf": "font/ttf", ".map": "application/json", ".txt": "text/plain"}
# Only the request headers the DICOMweb plugin needs; hop-by-hop and browser-only ones stay here.
FORWARDED_REQUEST = ("accept", "content-type", "range")
FORWARDED_RESPONSE = ("content-type", "content-range", "accept-ranges")


def app_config(origin: str) -> str:
    """OHIF's ``window.config``: one DICOMweb data source on this origin.

    The data source keys follow Orthanc's own OHIF plugin (orthanc-ohif, ``app-config-system.js``):
    no ``includefield`` (the plugin ignores it), metadata and frames by WADO-RS, thumbnails drawn
    from WADO-RS frames in the browser, frames asked for in their stored transfer syntax
    (``transfer-syntax=*``) so that Orthanc does not transcode, and bulk data by the URIs Orthanc
    puts in the metadata.
    """
    root = f"{origin}/dicom-web"
    source = {
        "namespace": "@ohif/extension-default.dataSourcesModule.dicomweb",
        "sourceName": "dicomweb",
        "configuration": {
            "friendlyName": "Orthanc (OncoNode viewer test)", "name": "orthanc",
            "wadoUriRoot": root, "qidoRoot": root, "wadoRoot": root,
            "qidoSupportsIncludeField": False, "supportsReject": False,
            "imageRendering": "wadors", "thumbnailRendering": "wadors",
            "enableStudyLazyLoad": True, "supportsFuzzyMatching": False, "supportsWildcard": True,
            "staticWado": True, "singlepart": "bulkdata,video,pdf",
            "acceptHeader": ["multipart/related; type=application/octet-stream; transfer-syntax=*"],
            "bulkDataURI": {"enabled": True, "relativeResolution": "studies"},
            "omitQuotationForMultipartRequest": True,
        },
    }
    config = {
        "routerBasename": "/", "extensions": [], "modes": [], "showStudyList": True,
        "maxNumberOfWebWorkers": 2, "showWarningMessageForCrossOrigin": False, "showCPUFallbackMessage": False,
        "showLoadingIndicator": True, "strictZSpacingForVolumeViewport": True,
        # OHIF's "investigational use" banner would cover the viewer on every fresh browser profile.
        "investigationalUseDialog": {"option": "never"},
        "defaultDataSourceName": "dicomweb", "dataSources": [source],
    }
    return f"/** OncoNode viewer test (tests/viewer/ohif.py) */\nwindow.config = {json.dumps(config, indent=2)};\n"


class OhifServer:
    """``dist`` and ``/app-config.js`` on ``127.0.0.1:<free port>``, ``/dicom-web/`` forwarded to
    ``dicomweb_url`` (Orthanc's DICOMweb root). Requests that fail are logged to ``log_path``."""

    def __init__(self, dist: Path, dicomweb_url: str, log_path: Path) -> None:
        self.dist = dist.resolve()
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        upstream = urlsplit(dicomweb_url)
        self.upstream_host = upstream.hostname or "127.0.0.1"
        self.upstream_port = upstream.port or 80
        self.upstream_root = upstream.path.rstrip("/") + "/"
        self.config = app_config(self.url).encode()
        self.log_path = log_path
        self._log_lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                server.answer(self)

            def do_HEAD(self) -> None:
                server.answer(self)

            def do_POST(self) -> None:
                server.answer(self)

            def log_message(self, format: str, *args: object) -> None:
                return  # failures are logged by OhifServer.note

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="ohif-server", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def note(self, line: str) -> None:
        with self._log_lock, self.log_path.open("a") as log:
            log.write(line + "\n")

    def answer(self, request: BaseHTTPRequestHandler) -> None:
        path = urlsplit(request.path).path
        try:
            if path == "/app-config.js":
                self._send(request, 200, "text/javascript", self.config)
            elif path.startswith(PROXIED):
                self._forward(request)
            else:
                self._file(request, path)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the browser went away (a cancelled prefetch, the page closed)

    def _send(self, request: BaseHTTPRequestHandler, status: int, content_type: str, body: bytes,
              extra: dict[str, str] | None = None) -> None:
        request.send_response(status)
        request.send_header("Content-Type", content_type)
        request.send_header("Content-Length", str(len(body)))
        request.send_header("Cache-Control", "no-store")
        for name, value in (extra or {}).items():
            request.send_header(name, value)
        request.end_headers()
        if request.command != "HEAD":
            request.wfile.write(body)

    def _file(self, request: BaseHTTPRequestHandler, path: str) -> None:
        candidate = (self.dist / path.lstrip("/")).resolve()
        if not candidate.is_relative_to(self.dist) or not candidate.is_file():
            if Path(path).suffix not in ("", ".html"):  # a missing asset is a 404, not the app
                self.note(f"404 {path}")
                self._send(request, 404, "text/plain", b"not found")
                return
            candidate = self.dist / "index.html"  # the SPA's own routes: /viewer, /, ...
        body = candidate.read_bytes()
        self._send(request, 200, TYPES.get(candidate.suffix, "application/octet-stream"), body)

    def _forward(self, request: BaseHTTPRequestHandler) -> None:
        target = self.upstream_root + request.path[len(PROXIED):]
        length = int(request.headers.get("Content-Length") or 0)
        body = request.rfile.read(length) if length else None
        headers = {name: value for name, value in request.headers.items() if name.lower() in FORWARDED_REQUEST}
        headers["Host"] = request.headers.get("Host", f"127.0.0.1:{self.port}")  # BulkDataURIs point here
        upstream = http.client.HTTPConnection(self.upstream_host, self.upstream_port, timeout=60)
        try:
            upstream.request(request.command, target, body=body, headers=headers)
            response = upstream.getresponse()
            data = response.read()
        except OSError as err:
            self.note(f"502 {request.command} {request.path}: {err}")
            self._send(request, 502, "text/plain", f"Orthanc: {err}".encode())
            return
        finally:
            upstream.close()
        if response.status >= 400:
            self.note(f"{response.status} {request.command} {request.path} (Orthanc)")
        extra = {name: value for name, value in response.getheaders()
                 if name.lower() in FORWARDED_RESPONSE and name.lower() != "content-type"}
        self._send(request, response.status, response.getheader("Content-Type", "application/octet-stream"),
                   data, extra)


def copy_artifact(path: Path, folder: Path) -> Path:
    """Copy a screenshot to ``folder`` (``var/artifacts/viewer``) for a person to look at."""
    folder.mkdir(parents=True, exist_ok=True)
    return Path(shutil.copy2(path, folder / path.name))
