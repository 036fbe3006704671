#!/usr/bin/env python3
"""travelagency: the REST consumer of the travel-agency example choreography.

enact starts it as a COMMAND_LINE package with HOST, PORT, SERVICE_NAME, INSTANCE_ID and
ENDPOINT_NAME in the environment (defaults: 127.0.0.1, 1235, travelagency, travelagency-1,
travelagency).  It depends on the role `airline` (required) and the role `weather` (optional).

enact wires it (DESIGN section 8, REST) with
    POST /<endpoint>/setInvocationAddress  {"role": R, "name": N, "endpoints": [...]}
which replaces the endpoint list held for R (an empty list means "no providers").

    GET /<endpoint>/buyTrip   calls airline's buyFlight and weather's getForecast over SOAP,
                              round robin over each role's endpoints, and answers
                              {"trip", "flight", "forecast", "servedBy"}; 503 when airline is
                              not wired (forecast is null when weather is not), 502 when a call fails.
    GET /<endpoint>[/health]  {"service", "instance", "wired": {role: [endpoints]}}
Every event goes to stdout as "<epoch ms> <INSTANCE_ID> <event>".  SIGTERM exits with 0.
"""
import json
import os
import signal
import sys
import threading
import time
import urllib.error
import urllib.request
import xml.etree.ElementTree as ET
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

NAME = "travelagency"
HOST = os.environ.get("HOST", "127.0.0.1")
PORT = int(os.environ.get("PORT", "1235"))
SERVICE_NAME = os.environ.get("SERVICE_NAME", NAME)
INSTANCE_ID = os.environ.get("INSTANCE_ID", f"{NAME}-1")
ENDPOINT = os.environ.get("ENDPOINT_NAME", NAME).strip("/")
NS = "http://services.choreos.org/"
SOAP_ENV = "http://schemas.xmlsoap.org/soap/envelope/"
TIMEOUT = 5
# Services talk to each other directly, never through an HTTP proxy from the environment.
opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

lock = threading.Lock()
wired = {}  # role -> {"name": provider, "endpoints": [...], "next": round-robin index}
counter = 0


class DependencyError(Exception):
    """A call to a provider failed: it becomes a 502 answer."""


_LOG_LOCK = threading.Lock()


def log(event):
    # One write per line, under a lock: threads never interleave inside a line.
    line = f"{int(time.time() * 1000)} {INSTANCE_ID} {event}\n"
    with _LOG_LOCK:
        sys.stdout.write(line)
        sys.stdout.flush()


def local(tag):
    return tag.rsplit("}", 1)[-1]


def set_invocation_address(doc):
    if not isinstance(doc, dict):
        raise ValueError("expected a JSON object {\"role\", \"name\", \"endpoints\"}")
    role, provider, endpoints = doc.get("role"), doc.get("name", ""), doc.get("endpoints")
    if not isinstance(role, str) or not role:
        raise ValueError("\"role\" must be a non-empty string")
    if not isinstance(provider, str):
        raise ValueError("\"name\" must be a string")
    if not isinstance(endpoints, list) or not all(isinstance(e, str) and e for e in endpoints):
        raise ValueError("\"endpoints\" must be a list of non-empty strings")
    with lock:
        wired[role] = {"name": provider, "endpoints": list(endpoints), "next": 0}
    log(f"wired role={role} name={provider} endpoints={','.join(endpoints)}")


def pick(role):
    """The next endpoint for `role`, round robin; None when nothing is wired for it."""
    with lock:
        entry = wired.get(role)
        if not entry or not entry["endpoints"]:
            return None
        url = entry["endpoints"][entry["next"] % len(entry["endpoints"])]
        entry["next"] = (entry["next"] + 1) % len(entry["endpoints"])
    return url


def soap_call(role, url, op):
    """POST a SOAP 1.1 request for `op` (no arguments) to `url`; the text of its `return`."""
    log(f"call {role} via {url}")
    body = (f'<?xml version="1.0" encoding="utf-8"?><soap:Envelope xmlns:soap="{SOAP_ENV}">'
            f'<soap:Body><ns:{op} xmlns:ns="{NS}"/></soap:Body></soap:Envelope>').encode()
    request = urllib.request.Request(url, data=body, method="POST", headers={
        "Content-Type": "text/xml; charset=utf-8", "SOAPAction": '""'})
    try:
        with opener.open(request, timeout=TIMEOUT) as answer:
            root = ET.fromstring(answer.read())
        value = next((e.text or "" for e in root.iter() if local(e.tag) == "return"), None)
        if value is None:
            raise ValueError(f"no <return> in the {op} response")
        return value
    except urllib.error.HTTPError as err:
        text = err.read().decode(errors="replace")
        try:
            text = next(e.text for e in ET.fromstring(text).iter() if local(e.tag) == "faultstring")
        except (ET.ParseError, StopIteration):
            pass
        problem = f"HTTP {err.code}: {text.strip()}"
    except (urllib.error.URLError, OSError, ET.ParseError, ValueError) as err:
        problem = str(getattr(err, "reason", None) or err)
    log(f"failed {role} via {url}: {problem}")
    raise DependencyError(f"{op} on {role} via {url} failed: {problem}")


def buy_trip():
    """(status, JSON document) for one buyTrip."""
    global counter
    airline = pick("airline")
    if airline is None:
        return 503, {"error": "no provider wired for role 'airline': call setInvocationAddress first"}
    try:
        flight = soap_call("airline", airline, "buyFlight")
        weather = pick("weather")
        forecast = soap_call("weather", weather, "getForecast") if weather else None
    except DependencyError as err:
        return 502, {"error": str(err)}
    with lock:
        counter += 1
        trip = f"trip-{INSTANCE_ID}-{counter}"
    log(f"serve buyTrip -> {trip} flight={flight} forecast={forecast}")
    return 200, {"trip": trip, "flight": flight, "forecast": forecast, "servedBy": INSTANCE_ID}


class Handler(BaseHTTPRequestHandler):
    server_version = f"{NAME}/1.0"
    timeout = 10  # a silent client cannot hold up a SIGTERM for long

    def log_message(self, *args):  # keep stdout to one line per event
        pass

    def send(self, status, doc):
        data = json.dumps(doc).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def route(self):
        """The path below /<endpoint> ("" for the endpoint itself), or None after a 404."""
        path = urlsplit(self.path).path.rstrip("/")
        base = f"/{ENDPOINT}"
        if path == base or path.startswith(base + "/"):
            return path[len(base):].lstrip("/")
        self.send(404, {"error": f"no such path {path}; try {base}"})
        return None

    def do_GET(self):
        sub = self.route()
        if sub in ("", "health"):
            with lock:
                roles = {role: list(entry["endpoints"]) for role, entry in wired.items()}
            self.send(200, {"service": SERVICE_NAME, "instance": INSTANCE_ID, "wired": roles})
        elif sub == "buyTrip":
            self.send(*buy_trip())
        elif sub is not None:
            self.send(404, {"error": f"no such operation {sub!r}; try buyTrip or health"})

    def do_POST(self):
        sub = self.route()
        if sub is None:
            return
        if sub != "setInvocationAddress":
            self.send(404, {"error": f"no such operation {sub!r}; POST setInvocationAddress"})
            return
        try:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            set_invocation_address(json.loads(body))
        except (ValueError, UnicodeDecodeError) as err:  # json.JSONDecodeError is a ValueError
            self.send(400, {"ok": False, "error": f"bad setInvocationAddress request: {err}"})
            return
        self.send(200, {"ok": True})


def main():
    server = ThreadingHTTPServer((HOST, PORT), Handler)
    server.daemon_threads = False  # on SIGTERM, server_close() lets requests in flight finish

    def stop(signum, _frame):
        log(f"stopping ({signal.Signals(signum).name})")
        threading.Thread(target=server.shutdown).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    log(f"listening http://{HOST}:{server.server_address[1]}/{ENDPOINT}")
    server.serve_forever()
    server.server_close()
    log("stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
