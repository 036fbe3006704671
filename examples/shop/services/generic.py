#!/usr/bin/env python3
"""generic: every service of the shop example choreography runs this one program.

enact starts it (package type PYTHON: `python3 {package}`) with HOST, PORT, SERVICE_NAME,
INSTANCE_ID and ENDPOINT_NAME in the environment. It answers:
  GET  /<endpoint>                       a JSON document: who it is and what it was told
  POST /<endpoint>/setInvocationAddress  REST wiring: {"role", "name", "endpoints"}
  POST /<endpoint>                       SOAP wiring: a setInvocationAddress envelope
Every event goes to stdout as "<epoch ms> <INSTANCE_ID> <event>". SIGTERM exits with 0.
"""
import json
import os
import signal
import sys
import time
import xml.etree.ElementTree as ET
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

HOST = os.environ.get("HOST", "127.0.0.1")
PORT = int(os.environ.get("PORT", "7000"))
SERVICE_NAME = os.environ.get("SERVICE_NAME", "generic")
INSTANCE_ID = os.environ.get("INSTANCE_ID", f"{SERVICE_NAME}-1")
ENDPOINT = os.environ.get("ENDPOINT_NAME", SERVICE_NAME).strip("/")
WIRED = {}


def log(event):
    print(f"{int(time.time() * 1000)} {INSTANCE_ID} {event}", flush=True)


def soap_wiring(body):
    """role, provider name and endpoints of a SOAP setInvocationAddress envelope."""
    root = ET.fromstring(body)
    call = next(e for e in root.iter() if e.tag.endswith("setInvocationAddress"))
    values = {}
    for child in call:
        values.setdefault(child.tag.rsplit("}", 1)[-1], []).append(child.text or "")
    return values["arg0"][0], values["arg1"][0], values.get("arg2", [])


class Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def answer(self, code, document, content_type="application/json"):
        data = document.encode()
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        if self.path.split("?")[0].strip("/") != ENDPOINT:
            return self.answer(404, json.dumps({"error": "not found"}))
        self.answer(200, json.dumps({"service": SERVICE_NAME, "instance": INSTANCE_ID, "wired": WIRED}))

    def do_POST(self):
        length = int(self.headers.get("Content-Length", "0"))
        body = self.rfile.read(length)
        path = self.path.strip("/")
        try:
            if path == f"{ENDPOINT}/setInvocationAddress":
                call = json.loads(body)
                role, name, endpoints = call["role"], call["name"], call["endpoints"]
            elif path == ENDPOINT:
                role, name, endpoints = soap_wiring(body)
            else:
                return self.answer(404, json.dumps({"error": "not found"}))
        except (ValueError, KeyError, StopIteration, ET.ParseError) as e:
            return self.answer(400, json.dumps({"error": str(e)}))
        WIRED[role] = {"name": name, "endpoints": endpoints}
        log(f"wired {role} {name} {' '.join(endpoints)}")
        self.answer(200, json.dumps({"ok": True}))


def main():
    server = ThreadingHTTPServer((HOST, PORT), Handler)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    log(f"listening on {HOST}:{PORT}/{ENDPOINT}")
    server.serve_forever()


if __name__ == "__main__":
    main()
