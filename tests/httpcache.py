"""A small HTTP binary cache for tests and benchmarks: GET, HEAD and PUT on one folder,
optionally behind a Basic login.

Nix's `http://` binary cache store reads `nix-cache-info`, `*.narinfo` and `nar/*` with GET and
uploads them with PUT; this serves exactly that on 127.0.0.1, on a free port.
"""

from __future__ import annotations

import base64
import http.server
import os
import shutil
import sys
import threading
from pathlib import Path


class _Handler(http.server.BaseHTTPRequestHandler):
    root: Path
    refused: set[str]  # file names whose upload is refused (403 Forbidden)
    login: str | None  # "user:password" every request must carry (Basic), if set
    protocol_version = "HTTP/1.1"

    def _allowed(self, head: bool = False) -> bool:
        if self.login is None:
            return True
        expected = "Basic " + base64.b64encode(self.login.encode()).decode()
        if self.headers.get("Authorization") == expected:
            return True
        self.send_response(401)
        self.send_header("WWW-Authenticate", 'Basic realm="cache"')
        self.send_header("Content-Length", "0")
        self.end_headers()
        return False

    def _target(self) -> Path | None:
        rel = self.path.split("?", 1)[0].lstrip("/")
        target = (self.root / rel).resolve()
        root = self.root.resolve()
        return target if target == root or root in target.parents else None

    def _send(self, code: int, body: bytes = b"", head: bool = False) -> None:
        self.send_response(code)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if body and not head:
            self.wfile.write(body)

    def do_GET(self, head: bool = False) -> None:  # noqa: N802
        if not self._allowed():
            return
        target = self._target()
        if target is None or not target.is_file():
            self._send(404, b"not found", head)
            return
        self._send(200, target.read_bytes(), head)

    def do_HEAD(self) -> None:  # noqa: N802
        self.do_GET(head=True)

    def do_PUT(self) -> None:  # noqa: N802
        if not self._allowed():
            self.rfile.read(int(self.headers.get("Content-Length", "0")))
            return
        target = self._target()
        if target is None:
            self._send(403)
            return
        length = int(self.headers.get("Content-Length", "0"))
        body = self.rfile.read(length)
        if target.name in self.refused:
            self._send(403, b"refused by the test")
            return
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f"{target.name}.{threading.get_ident()}.part")
        tmp.write_bytes(body)
        os.replace(tmp, target)
        self._send(201)

    def log_message(self, format: str, *args: object) -> None:
        pass


class HttpCache:
    """`with HttpCache(folder) as c: c.url` — a PUT-capable cache served from `folder`."""

    def __init__(self, root: Path, *, login: str | None = None) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.refused: set[str] = set()
        handler = type(
            "Handler", (_Handler,), {"root": self.root, "refused": self.refused, "login": login}
        )
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> HttpCache:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    def clear(self) -> None:
        shutil.rmtree(self.root)
        self.root.mkdir()


if __name__ == "__main__":  # serve a folder until interrupted: python tests/httpcache.py DIR
    with HttpCache(Path(sys.argv[1])) as cache:
        print(cache.url, flush=True)
        threading.Event().wait()
