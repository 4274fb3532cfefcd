"""Loopback servers for the download tests, one behaviour per fault (no test touches the internet).

``FaultServer`` serves ``CONTENT`` under ``/<fault>/<any file name>``, misbehaving as the fault
says, with the md5 of the file it should send in ``x-goog-hash`` as a storage bucket publishes it
(so "other" bytes are caught there too); ``silent_server`` accepts connections and never answers (a stuck
network, or a proxy). A POST plays Kaggle's API for kagglehub: it answers any request with a
redirect to ``server.redirect_to`` + ``/`` + the file asked for (the request's ``path``), or under
``/api-404/`` and ``/api-500/`` with that HTTP error.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import http.server
import json
import socket
import threading
import time
from typing import Iterator

CONTENT = bytes(range(256)) * 64  # 16 KiB
OTHER = bytes(reversed(CONTENT))
# The faults a download meets, by the path prefix that triggers each.
FAULTS = ("silent", "slow", "short", "other", "404", "500", "loop", "proxy")
SLOW_PAUSE = 0.05  # between parts of a slow answer: well below the tests' timeout


class _Handler(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args):  # keep the test output clean
        pass

    def do_GET(self):
        fault = self.path.strip("/").split("/")[0]
        self.server.hits[fault] = self.server.hits.get(fault, 0) + 1
        if fault in ("404", "500"):
            self.send_error(int(fault))
        elif fault == "loop":
            self.send_response(302)
            self.send_header("Location", self.path)
            self.end_headers()
        elif fault == "short":
            self._headers(200, len(CONTENT))
            self.wfile.write(CONTENT[: len(CONTENT) // 2])  # then the connection closes
        elif fault == "resume":  # cut short the first time, resumed with Range afterwards
            start = int(self.headers["Range"].split("=")[1].rstrip("-")) if self.headers.get("Range") else 0
            if start:
                self._headers(206, len(CONTENT) - start, f"bytes {start}-{len(CONTENT) - 1}/{len(CONTENT)}")
                self.wfile.write(CONTENT[start:])
            else:
                self._headers(200, len(CONTENT))
                self.wfile.write(CONTENT[: len(CONTENT) // 4])
        elif fault == "badrange":  # answers a Range with another one (from byte 0)
            status = 206 if self.headers.get("Range") else 200
            self._headers(status, len(CONTENT), f"bytes 0-{len(CONTENT) - 1}/{len(CONTENT)}" if status == 206 else None)
            self.wfile.write(CONTENT)
        elif fault == "slow":
            time.sleep(SLOW_PAUSE)
            self._headers(200, len(CONTENT))
            for i in range(0, len(CONTENT), len(CONTENT) // 4):
                time.sleep(SLOW_PAUSE)
                self.wfile.write(CONTENT[i:i + len(CONTENT) // 4])
                self.wfile.flush()
        else:
            published = self.server.files.get(fault) or CONTENT
            body = OTHER if fault == "other" else published
            self._headers(200, len(body), published=published)
            self.wfile.write(body)

    def do_POST(self):  # Kaggle's API: where is the file? (a redirect to the storage, as Kaggle answers)
        self.server.hits["api"] = self.server.hits.get("api", 0) + 1
        fault = self.path.strip("/").split("/")[0]
        if fault in ("api-404", "api-500"):
            self.send_error(int(fault[-3:]))
            return
        asked = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")
        self.send_response(302)
        self.send_header("Location", f"{self.server.redirect_to}/{asked.get('path', 'file.bin')}")
        self.send_header("Content-Type", "application/json")  # typed as the API's answers are, with no body
        self.send_header("Content-Length", "0")
        self.end_headers()

    def _headers(self, status: int, length: int, content_range: str | None = None, published: bytes = CONTENT) -> None:
        self.send_response(status)
        self.send_header("Content-Length", str(length))
        md5 = base64.b64encode(hashlib.md5(published).digest()).decode()  # as x-goog-hash writes it
        self.send_header("x-goog-hash", f"crc32c=AAAAAA==,md5={md5}")
        if content_range:
            self.send_header("Content-Range", content_range)
        self.end_headers()


@contextlib.contextmanager
def fault_server() -> Iterator[http.server.ThreadingHTTPServer]:
    """An HTTP server on 127.0.0.1 (``server.base``: its URL; ``server.hits``: requests by fault)."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.daemon_threads = True
    server.hits, server.files = {}, {}
    server.redirect_to = ""  # where the API's redirect points (a test sets it)
    server.base = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


@contextlib.contextmanager
def silent_server() -> Iterator[str]:
    """A listening socket that never accepts: connections succeed, no byte ever comes back."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        sock.close()


def serve_file(server: http.server.ThreadingHTTPServer, prefix: str, data: bytes) -> None:
    """Makes ``server`` answer ``/<prefix>/<any name>`` with ``data``."""
    server.files[prefix] = data
