"""Helpers of the preflight tests: a small HTTP server on 127.0.0.1 with Range support and faults, and file names
in mmseg's hash-prefix convention."""

from __future__ import annotations

import hashlib
import http.server
import re
import threading


def mmseg_name(data: bytes, stem: str = "pspnet_r18-d8_769x769_80k_cityscapes_20201225_021458") -> str:
    """A file name in mmseg's convention: the first 8 hex digits of the content's sha256 after the last '-'."""
    return f"{stem}-{hashlib.sha256(data).hexdigest()[:8]}.pth"


class Server:
    """Files by path; `cut[path] = n` closes the connection after n bytes for the next `drops[path]` requests
    (announcing the full length); `no_range` paths answer 200 with the whole file even when asked for a range."""

    def __init__(self):
        self.files: dict[str, bytes] = {}
        self.cut: dict[str, int] = {}
        self.drops: dict[str, int] = {}
        self.no_range: set[str] = set()
        self.requests: list[tuple[str, str | None]] = []
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_HEAD(self):
                data = server.files.get(self.path)
                self.send_response(200 if data is not None else 404)
                self.send_header("Content-Length", str(len(data or b"")))
                self.end_headers()

            def do_GET(self):
                server.requests.append((self.path, self.headers.get("Range")))
                data = server.files.get(self.path)
                if data is None:
                    self.send_error(404)
                    return
                start = 0
                match = re.match(r"bytes=(\d+)-", self.headers.get("Range") or "")
                if match and self.path not in server.no_range:
                    start = int(match.group(1))
                    if start >= len(data):
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{len(data)}")
                        self.end_headers()
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                else:
                    self.send_response(200)
                self.send_header("Content-Length", str(len(data) - start))
                self.end_headers()
                body = data[start:]
                if server.drops.get(self.path, 0) > 0:
                    server.drops[self.path] -= 1
                    body = body[: max(server.cut[self.path] - start, 0)]
                    self.wfile.write(body)
                    self.wfile.flush()
                    self.close_connection = True
                    return
                self.wfile.write(body)

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()
