#!/usr/bin/env python3
"""airline: the SOAP provider of the travel-agency example choreography.

enact starts it as a COMMAND_LINE package with HOST, PORT, SERVICE_NAME, INSTANCE_ID and
ENDPOINT_NAME in the environment (defaults: 127.0.0.1, 1234, airline, airline-1, airline).
It serves POST /<endpoint> (SOAP 1.1) and GET /<endpoint>?wsdl (namespace
http://services.choreos.org/); plain GET /<endpoint> answers a JSON health document.

SOAP operations:
  buyFlight()                          -> return = flight-<INSTANCE_ID>-<counter>
  setInvocationAddress(arg0 = role, arg1 = provider name, arg2 = endpoint...)
      enact wires consumers with it; airline has no dependencies, but it stores and logs
      what it is told like any CHOReOS SOAP service.
Every event goes to stdout as "<epoch ms> <INSTANCE_ID> <event>".  SIGTERM exits with 0.

`--warmup-ms N` makes it answer 503 (health and every SOAP call) for its first N ms after it
starts listening, then log `ready`: a service that opens its port before it can serve.
"""
import json
import os
import signal
import sys
import threading
import time
import xml.etree.ElementTree as ET
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit
from xml.sax.saxutils import escape

NAME = "airline"
HOST = os.environ.get("HOST", "127.0.0.1")
PORT = int(os.environ.get("PORT", "1234"))
SERVICE_NAME = os.environ.get("SERVICE_NAME", NAME)
INSTANCE_ID = os.environ.get("INSTANCE_ID", f"{NAME}-1")
ENDPOINT = os.environ.get("ENDPOINT_NAME", NAME).strip("/")
NS = "http://services.choreos.org/"
SOAP_ENV = "http://schemas.xmlsoap.org/soap/envelope/"
# operation -> (request children as (name, maxOccurs), has a `return`)
OPERATIONS = {
    "buyFlight": ([], True),
    "setInvocationAddress": ([("arg0", "1"), ("arg1", "1"), ("arg2", "unbounded")], False),
}

lock = threading.Lock()
wired = {}  # role -> list of endpoints
counter = 0
WARMUP_MS = 0
ready_at = 0.0  # time.time() from which it serves


def warming_up():
    return time.time() < ready_at


_LOG_LOCK = threading.Lock()


def log(event):
    # One write per line, under a lock: threads never interleave inside a line.
    line = f"{int(time.time() * 1000)} {INSTANCE_ID} {event}\n"
    with _LOG_LOCK:
        sys.stdout.write(line)
        sys.stdout.flush()


def local(tag):
    return tag.rsplit("}", 1)[-1]


def envelope(inner):
    return (f'<?xml version="1.0" encoding="utf-8"?><soap:Envelope xmlns:soap="{SOAP_ENV}">'
            f"<soap:Body>{inner}</soap:Body></soap:Envelope>")


def response(op, value=None):
    ret = "" if value is None else f"<return>{escape(value)}</return>"
    return envelope(f'<ns2:{op}Response xmlns:ns2="{NS}">{ret}</ns2:{op}Response>')


def fault(code, text):
    return envelope(f"<soap:Fault><faultcode>soap:{code}</faultcode>"
                    f"<faultstring>{escape(text)}</faultstring></soap:Fault>")


def wsdl(location):
    cap = NAME.capitalize()
    elements, types, messages, ports, bindings = [], [], [], [], []
    for op, (args, has_return) in OPERATIONS.items():
        outs = [("return", "1")] if has_return else []
        for name, children in ((op, args), (op + "Response", outs)):
            elements.append(f'<xs:element name="{name}" type="tns:{name}"/>')
            seq = "".join(f'<xs:element name="{c}" type="xs:string" minOccurs="0" maxOccurs="{m}"/>'
                          for c, m in children)
            types.append(f'<xs:complexType name="{name}"><xs:sequence>{seq}</xs:sequence></xs:complexType>')
            messages.append(f'<message name="{name}"><part name="parameters" element="tns:{name}"/></message>')
        ports.append(f'<operation name="{op}"><input message="tns:{op}"/>'
                     f'<output message="tns:{op}Response"/></operation>')
        bindings.append(f'<operation name="{op}"><soap:operation soapAction=""/><input><soap:body use="literal"/>'
                        f'</input><output><soap:body use="literal"/></output></operation>')
    return (f'<?xml version="1.0" encoding="utf-8"?><definitions xmlns="http://schemas.xmlsoap.org/wsdl/" '
            f'xmlns:soap="http://schemas.xmlsoap.org/wsdl/soap/" xmlns:xs="http://www.w3.org/2001/XMLSchema" '
            f'xmlns:tns="{NS}" targetNamespace="{NS}" name="{cap}Service">'
            f'<types><xs:schema targetNamespace="{NS}" version="1.0">{"".join(elements + types)}</xs:schema></types>'
            f'{"".join(messages)}<portType name="{cap}">{"".join(ports)}</portType>'
            f'<binding name="{cap}PortBinding" type="tns:{cap}"><soap:binding style="document" '
            f'transport="http://schemas.xmlsoap.org/soap/http"/>{"".join(bindings)}</binding>'
            f'<service name="{cap}Service"><port name="{cap}Port" binding="tns:{cap}PortBinding">'
            f'<soap:address location="{escape(location)}"/></port></service></definitions>')


def set_invocation_address(op_element):
    args = {}
    endpoints = []
    for child in op_element:
        if local(child.tag) == "arg2":
            if (child.text or "").strip():
                endpoints.append(child.text.strip())
        else:
            args[local(child.tag)] = (child.text or "").strip()
    role, provider = args.get("arg0", ""), args.get("arg1", "")
    if not role:
        raise ValueError("setInvocationAddress needs arg0 (the role)")
    with lock:
        wired[role] = endpoints
    log(f"wired role={role} name={provider} endpoints={','.join(endpoints)}")


def buy_flight():
    global counter
    with lock:
        counter += 1
        flight = f"flight-{INSTANCE_ID}-{counter}"
    log(f"serve buyFlight -> {flight}")
    return flight


class Handler(BaseHTTPRequestHandler):
    server_version = f"{NAME}/1.0"
    timeout = 10  # a silent client cannot hold up a SIGTERM for long

    def log_message(self, *args):  # keep stdout to one line per event
        pass

    def send(self, status, body, content_type):
        data = body.encode()
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def ours(self):
        path = urlsplit(self.path).path.rstrip("/")
        if path != f"/{ENDPOINT}":
            self.send(404, json.dumps({"error": f"no such path {path}; try /{ENDPOINT}"}), "application/json")
            return False
        return True

    def do_GET(self):
        if not self.ours():
            return
        if warming_up():
            self.send(503, json.dumps({"error": "warming up"}), "application/json")
            return
        if urlsplit(self.path).query.lower() == "wsdl":
            host = self.headers.get("Host") or f"{HOST}:{PORT}"
            self.send(200, wsdl(f"http://{host}/{ENDPOINT}"), "text/xml; charset=utf-8")
            return
        with lock:
            health = {"service": SERVICE_NAME, "instance": INSTANCE_ID, "wired": dict(wired)}
        self.send(200, json.dumps(health), "application/json")

    def do_POST(self):
        if not self.ours():
            return
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        try:
            root = ET.fromstring(body)
            soap_body = next(e for e in root if local(e.tag) == "Body")
            op_element = next(iter(soap_body))
        except (ET.ParseError, StopIteration):
            self.send(500, fault("Client", "expected a SOAP 1.1 envelope with one operation in its Body"),
                      "text/xml; charset=utf-8")
            return
        op = local(op_element.tag)
        if warming_up() and op != "setInvocationAddress":
            log(f"unready {op}")
            self.send(503, fault("Server", "warming up"), "text/xml; charset=utf-8")
            return
        try:
            if op == "setInvocationAddress":
                set_invocation_address(op_element)
                answer = response(op)
            elif op == "buyFlight":
                answer = response(op, buy_flight())
            else:
                raise ValueError(f"unknown operation {op!r}; {NAME} offers {', '.join(OPERATIONS)}")
        except ValueError as err:
            log(f"fault {op}: {err}")
            self.send(500, fault("Client", str(err)), "text/xml; charset=utf-8")
            return
        self.send(200, answer, "text/xml; charset=utf-8")


def main():
    global WARMUP_MS, ready_at
    args = sys.argv[1:]
    # Other arguments (a recipe may pass any) are ignored.
    if "--warmup-ms" in args[:-1]:
        WARMUP_MS = int(args[args.index("--warmup-ms") + 1])
    server = ThreadingHTTPServer((HOST, PORT), Handler)
    server.daemon_threads = False  # on SIGTERM, server_close() lets requests in flight finish

    def stop(signum, _frame):
        log(f"stopping ({signal.Signals(signum).name})")
        threading.Thread(target=server.shutdown).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    ready_at = time.time() + WARMUP_MS / 1000
    log(f"listening http://{HOST}:{server.server_address[1]}/{ENDPOINT}")
    if WARMUP_MS:
        timer = threading.Timer(WARMUP_MS / 1000, lambda: log("ready"))
        timer.daemon = True
        timer.start()
    server.serve_forever()
    server.server_close()
    log("stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
