"""An Alibaba endpoint on loopback that holds each request until the test opens its gate: the test acts (cuts the
database, revokes a key) while a call waits on its upstream."""

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

# The longest a request is held if the test never opens the gate.
BOUND_SECONDS = 60


class GatedUpstream:
    """An Alibaba endpoint on loopback that holds every request until the test opens the gate, then answers
    as DetectCelebrity does: the test acts while a call waits on its upstream."""

    REQUEST_ID = "gated-request"

    def __init__(self):
        self.arrived = threading.Event()
        self.gate = threading.Event()
        gated = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                gated.arrived.set()
                gated.gate.wait(BOUND_SECONDS)
                body = json.dumps({"RequestId": gated.REQUEST_ID, "Data": {"Faces": []}}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.endpoint = f"http://127.0.0.1:{self.server.server_address[1]}/{{product}}"
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def close(self) -> None:
        self.gate.set()
        self.server.shutdown()
        self.server.server_close()
