"""A real HTTP server on the loopback for the remote-shard tests: Python's http.server in a thread, serving a
folder, counting requests per path, and misbehaving on request (a body cut short, a stall, a 503), or stopping.

    with ShardServer(folder) as server:
        url = server.url("digits")                  # http://127.0.0.1:PORT/digits
        server.faults["digits/train-000001.tar"] = "truncate"
"""

from __future__ import annotations

import collections
import functools
import threading
import time
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


class _Handler(SimpleHTTPRequestHandler):
    server: "_Server"

    def log_message(self, *args) -> None:  # quiet: the tests read the counts instead
        pass

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        path = self.path.lstrip("/")
        self.server.owner.requests[path] += 1
        fault = self.server.owner.faults.get(path)
        if fault == "503":
            self.send_error(503, "try again")
        elif fault in ("truncate", "stall"):
            body = (self.server.owner.root / path).read_bytes()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if fault == "truncate":  # half the body, then the connection closes
                self.wfile.write(body[: len(body) // 2])
                self.wfile.flush()
                self.close_connection = True
            else:  # headers, then nothing: a server that hangs mid-transfer
                time.sleep(self.server.owner.stall_s)
        else:
            super().do_GET()


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    owner: "ShardServer"


class ShardServer:
    def __init__(self, root: Path, stall_s: float = 30.0):
        self.root, self.stall_s = Path(root), stall_s
        self.requests: collections.Counter = collections.Counter()
        self.faults: dict[str, str] = {}
        self.httpd = _Server(("127.0.0.1", 0), functools.partial(_Handler, directory=str(self.root)))
        self.httpd.owner = self
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def url(self, path: str = "") -> str:
        return f"http://127.0.0.1:{self.port}/{path}"

    def __enter__(self) -> "ShardServer":
        self.thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the socket: later requests are refused."""
        if self.thread.is_alive():
            self.httpd.shutdown()
        self.httpd.server_close()

    def __exit__(self, *exc) -> None:
        self.stop()
