#!/usr/bin/python3
"""A small HTTPS file server for tests (standard library only).

usage: https_server.py --root DIR --cert CRT --key KEY --port PORT

Serves files from DIR on 127.0.0.1:PORT over TLS (1.2+), one request per connection.
  GET /<file>           200 with Content-Length; with `Range: bytes=N-`, 206 with Content-Range
                        (416 if N is past the end)
  GET /drop/<file>      as /<file>, but the first request for that file sends only the first half
                        of the body and then closes the connection; later requests are served whole
  GET /redirect/<file>  302 to /<file>
  GET /norange/<file>   as /<file>, but ignores Range (always 200 with the whole file)
  GET /stall/<file>     sends the header and the first half of the body, then nothing for 120 s
  a missing file        404
Each request is logged to stderr as one line: `REQUEST <path> range=<Range header or ->`.
"""

import argparse
import http.server
import os
import socketserver
import ssl
import sys
import threading
import time
import urllib.parse

dropped = set()
dropped_lock = threading.Lock()


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    root = "."

    def log_message(self, format, *args):  # noqa: A002 - the base class's name
        pass

    def send_plain(self, code, text, extra=()):
        body = text.encode()
        self.send_response(code)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Connection", "close")
        for name, value in extra:
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):  # noqa: N802 - http.server's name
        self.close_connection = True
        path = urllib.parse.urlsplit(self.path).path
        rng = self.headers.get("Range")
        sys.stderr.write("REQUEST %s range=%s\n" % (path, rng or "-"))
        sys.stderr.flush()

        if path.startswith("/redirect/"):
            self.send_plain(302, "moved\n", [("Location", "/" + path[len("/redirect/"):])])
            return
        hook = ""
        for prefix in ("/drop/", "/norange/", "/stall/"):
            if path.startswith(prefix):
                hook = prefix.strip("/")
        drop = hook == "drop"
        name = path[len(hook) + 2:] if hook else path[1:]
        if hook == "norange":
            rng = None
        file = os.path.normpath(os.path.join(self.root, urllib.parse.unquote(name)))
        if not file.startswith(os.path.abspath(self.root) + os.sep) or not os.path.isfile(file):
            self.send_plain(404, "not found\n")
            return

        size = os.path.getsize(file)
        start = 0
        if rng:
            if not (rng.startswith("bytes=") and rng.endswith("-") and rng[6:-1].isdigit()):
                self.send_plain(400, "only Range: bytes=N- is supported\n")
                return
            start = int(rng[6:-1])
            if start >= size:
                self.send_plain(416, "range not satisfiable\n", [("Content-Range", "bytes */%d" % size)])
                return

        cut = None
        if hook == "stall":
            cut = start + (size - start) // 2
        if drop:
            with dropped_lock:
                if name not in dropped:
                    dropped.add(name)
                    cut = start + (size - start) // 2

        self.send_response(206 if rng else 200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(size - start))
        if rng:
            self.send_header("Content-Range", "bytes %d-%d/%d" % (start, size - 1, size))
        self.send_header("Connection", "close")
        self.end_headers()
        end = size if cut is None else cut
        with open(file, "rb") as f:
            f.seek(start)
            pos = start
            while pos < end:
                data = f.read(min(1 << 20, end - pos))
                if not data:
                    break
                self.wfile.write(data)
                pos += len(data)
        if hook == "stall":
            self.wfile.flush()
            sys.stderr.write("STALLED %s after %d bytes\n" % (path, cut))
            sys.stderr.flush()
            time.sleep(120)
            return
        if cut is not None:
            self.wfile.flush()
            sys.stderr.write("DROPPED %s after %d bytes\n" % (path, cut))
            sys.stderr.flush()
            # Close the TCP connection without a TLS close_notify: a dropped link.
            try:
                self.connection.shutdown(2)
            except OSError:
                pass


class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address, handler, context):
        self.context = context
        super().__init__(address, handler)

    def get_request(self):
        sock, addr = self.socket.accept()
        # The handshake runs in the handler thread (finish_request), not in the accept loop.
        return self.context.wrap_socket(sock, server_side=True, do_handshake_on_connect=False), addr

    def finish_request(self, request, client_address):
        try:
            request.do_handshake()
        except (ssl.SSLError, OSError) as e:
            sys.stderr.write("HANDSHAKE failed: %s\n" % e)
            sys.stderr.flush()
            return
        super().finish_request(request, client_address)

    def handle_error(self, request, client_address):
        sys.stderr.write("ERROR %s\n" % (sys.exc_info()[1],))
        sys.stderr.flush()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--root", required=True)
    parser.add_argument("--cert", required=True)
    parser.add_argument("--key", required=True)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()

    Handler.root = os.path.abspath(args.root)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(args.cert, args.key)
    server = Server(("127.0.0.1", args.port), Handler, context)
    sys.stderr.write("LISTENING 127.0.0.1:%d\n" % args.port)
    sys.stderr.flush()
    server.serve_forever()


if __name__ == "__main__":
    main()
