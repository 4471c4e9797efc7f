#!/usr/bin/env python3
"""oauth-introspect.py -- a tiny OAuth 2.0 token-introspection endpoint (RFC 7662) for the tests.

Listens on 127.0.0.1 only (port 0: the kernel picks one, written to --port-file). Every
request (POST with a form body token=..., or GET with ?token=... / a Bearer header) is
answered with JSON: {"active": true, "username": USER, "email": USER, ...} when the token is
one of --tokens, else {"active": false}. The tokens file is read again at each request (one
token a line, optionally followed by a space and the user name; default --user), so a test
can change it while the server runs.

Each request appends one JSON line to --log: {"n": N, "method": ..., "path": ...,
"content_type": ..., "token_len": L, "token_sha256": first 16 hex digits, "active": bool}; the
token itself is never logged. The number of lines is the number of introspection requests.

Stops on SIGTERM/SIGINT, or by itself after --lifetime seconds (default 300).
"""
import argparse
import hashlib
import json
import os
import signal
import sys
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def load_tokens(path, default_user):
    tokens = {}
    try:
        with open(path, encoding="utf-8") as f:
            for line in f:
                line = line.rstrip("\r\n")
                if not line:
                    continue
                tok, _, user = line.partition(" ")
                tokens[tok] = user or default_user
    except FileNotFoundError:
        pass
    return tokens


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "oauth-introspect/1"

    def log_message(self, fmt, *args):  # quiet; the JSON log is the record
        pass

    def _token(self, body):
        ctype = self.headers.get("Content-Type", "")
        auth = self.headers.get("Authorization", "")
        if auth.lower().startswith("bearer "):
            return auth[7:].strip()
        query = urllib.parse.urlsplit(self.path).query
        for source in (body, query):
            if not source:
                continue
            fields = urllib.parse.parse_qs(source, keep_blank_values=True)
            if "token" in fields:
                return fields["token"][0]
        if body and "json" in ctype:
            try:
                return json.loads(body).get("token")
            except ValueError:
                return None
        return None

    def _answer(self, body):
        srv = self.server
        token = self._token(body)
        tokens = load_tokens(srv.tokens_file, srv.default_user)
        user = tokens.get(token) if token is not None else None
        with srv.lock:
            srv.count += 1
            entry = {
                "n": srv.count,
                "method": self.command,
                "path": urllib.parse.urlsplit(self.path).path,
                "content_type": self.headers.get("Content-Type", ""),
                "token_len": len(token) if token is not None else None,
                "token_sha256": hashlib.sha256(token.encode()).hexdigest()[:16]
                if token is not None else None,
                "active": user is not None,
            }
            with open(srv.log_file, "a", encoding="utf-8") as f:
                f.write(json.dumps(entry) + "\n")
        if user is not None:
            answer = {"active": True, "username": user, "email": user, "scope": "mail",
                      "token_type": "Bearer", "client_id": "pop3sync-test"}
        else:
            answer = {"active": False}
        data = json.dumps(answer).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self):
        n = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(n).decode("latin-1") if n > 0 else ""
        self._answer(body)

    def do_GET(self):
        self._answer("")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--port-file", required=True)
    ap.add_argument("--tokens", required=True, help="file: one token a line [space user]")
    ap.add_argument("--log", required=True, help="JSON line per request")
    ap.add_argument("--user", default="test", help="user name for tokens without one")
    ap.add_argument("--lifetime", type=float, default=300)
    a = ap.parse_args()

    srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    srv.daemon_threads = True
    srv.tokens_file, srv.log_file, srv.default_user = a.tokens, a.log, a.user
    srv.count, srv.lock = 0, threading.Lock()
    open(a.log, "a").close()

    def stop(*_):
        threading.Thread(target=srv.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    timer = threading.Timer(a.lifetime, stop)
    timer.daemon = True
    timer.start()
    tmp = a.port_file + ".tmp"
    with open(tmp, "w") as f:
        f.write("%d\n" % srv.server_address[1])
    os.rename(tmp, a.port_file)
    try:
        srv.serve_forever(poll_interval=0.1)
    finally:
        srv.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
