"""Loopback servers for the download tests, one behaviour per fault (no test touches the internet).

``FaultServer`` serves ``CONTENT`` under ``/<fault>/<any file name>``, misbehaving as the fault
says; ``silent_server`` accepts connections and never answers (a stuck network, or a proxy).
"""

from __future__ import annotations

import contextlib
import http.server
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
            body = self.server.files.get(fault) or (OTHER if fault == "other" else CONTENT)
            self._headers(200, len(body))
            self.wfile.write(body)

    def _headers(self, status: int, length: int, content_range: str | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Length", str(length))
        if content_range:
            self.send_header("Content-Range", content_range)
        self.end_headers()


@contextlib.contextmanager
def fault_server() -> Iterator[http.server.ThreadingHTTPServer]:
    """An HTTP server on 127.0.0.1 (``server.base``: its URL; ``server.hits``: requests by fault)."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.daemon_threads = True
    server.hits, server.files = {}, {}
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
