"""A real HTTP server on 127.0.0.1 standing in for the service's admin upload route: it records requests."""

from __future__ import annotations

import json
import threading
from email.parser import BytesParser
from email.policy import HTTP
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class RecordingServer:
    """``with RecordingServer(status) as server``: ``server.url``, and ``server.requests`` (path, headers, fields)."""

    def __init__(self, status: int = 201, reply: dict[str, Any] | None = None) -> None:
        self.status, self.reply = status, reply or {"name": "up", "version": 7, "sha256": "0" * 64}
        self.requests: list[dict[str, Any]] = []
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> RecordingServer:
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                head = f"Content-Type: {self.headers['Content-Type']}\r\n\r\n".encode()
                message = BytesParser(policy=HTTP).parsebytes(head + body)
                fields = {}
                for part in message.iter_parts():
                    name = part.get_param("name", header="content-disposition")
                    fields.setdefault(name, []).append(
                        {"filename": part.get_filename(), "content": part.get_payload(decode=True)}
                    )
                outer.requests.append({"path": self.path, "headers": dict(self.headers), "fields": fields})
                payload = outer.reply if outer.status < 400 else {"error": {"code": "unauthorized", "message": "bad"}}
                data = json.dumps(payload).encode()
                self.send_response(outer.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: object) -> None:  # keep test output clean
                pass

        return Handler
