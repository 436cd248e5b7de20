#!/usr/bin/env python3
"""A real OTLP receiver for tests: gRPC (TraceService/Export, MetricsService/Export) and
HTTP (POST /v1/traces, POST /v1/metrics; protobuf or JSON bodies) on 127.0.0.1.

Every received span and metric becomes one JSON line in the output file:
  {"signal": "span", "transport": "grpc"|"http", "service_name", "scope", "name",
   "kind", "trace_id", "span_id", "parent_span_id", "status", "attributes": {...}}
  {"signal": "metric", "transport", "service_name", "scope", "name", "unit", "type",
   "points": [{"attributes": {...}, "count"?, "sum"?, "value"?}]}

Usage: otlp_receiver.py OUT.jsonl
Prints {"grpc": PORT, "http": PORT} on one line when both servers listen, then serves
until stdin closes (or it is killed), so a test that dies takes the receiver with it.
"""

import gzip
import json
import sys
import threading
from concurrent import futures
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import grpc
from google.protobuf import json_format
from opentelemetry.proto.collector.metrics.v1 import (
    metrics_service_pb2,
    metrics_service_pb2_grpc,
)
from opentelemetry.proto.collector.trace.v1 import (
    trace_service_pb2,
    trace_service_pb2_grpc,
)
from opentelemetry.proto.trace.v1 import trace_pb2

MAX_BODY = 16 << 20


def any_value(v):
    kind = v.WhichOneof("value")
    if kind is None:
        return None
    if kind == "array_value":
        return [any_value(x) for x in v.array_value.values]
    if kind == "kvlist_value":
        return {kv.key: any_value(kv.value) for kv in v.kvlist_value.values}
    if kind == "bytes_value":
        return v.bytes_value.hex()
    return getattr(v, kind)


def attributes(kvs):
    return {kv.key: any_value(kv.value) for kv in kvs}


class Sink:
    """Appends JSON lines, one writer at a time, flushed at once (tests poll the file)."""

    def __init__(self, path):
        self.lock = threading.Lock()
        self.file = open(path, "a", encoding="utf-8")

    def write(self, records):
        with self.lock:
            for r in records:
                self.file.write(json.dumps(r, sort_keys=True) + "\n")
            self.file.flush()


def span_records(req, transport):
    for rs in req.resource_spans:
        service = attributes(rs.resource.attributes).get("service.name")
        for ss in rs.scope_spans:
            for s in ss.spans:
                yield {
                    "signal": "span",
                    "transport": transport,
                    "service_name": service,
                    "scope": ss.scope.name,
                    "name": s.name,
                    "kind": trace_pb2.Span.SpanKind.Name(s.kind),
                    "trace_id": s.trace_id.hex(),
                    "span_id": s.span_id.hex(),
                    "parent_span_id": s.parent_span_id.hex() or None,
                    "status": trace_pb2.Status.StatusCode.Name(s.status.code),
                    "attributes": attributes(s.attributes),
                }


def point(p, kind):
    out = {"attributes": attributes(p.attributes)}
    if kind in ("histogram", "exponential_histogram"):
        out["count"] = p.count
        out["sum"] = p.sum
    elif kind in ("sum", "gauge"):
        out["value"] = getattr(p, p.WhichOneof("value"))
    return out


def metric_records(req, transport):
    for rm in req.resource_metrics:
        service = attributes(rm.resource.attributes).get("service.name")
        for sm in rm.scope_metrics:
            for m in sm.metrics:
                kind = m.WhichOneof("data")
                points = getattr(m, kind).data_points if kind else []
                yield {
                    "signal": "metric",
                    "transport": transport,
                    "service_name": service,
                    "scope": sm.scope.name,
                    "name": m.name,
                    "unit": m.unit,
                    "type": kind,
                    "points": [point(p, kind) for p in points],
                }


class TraceService(trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self, sink):
        self.sink = sink

    def Export(self, request, context):
        self.sink.write(span_records(request, "grpc"))
        return trace_service_pb2.ExportTraceServiceResponse()


class MetricsService(metrics_service_pb2_grpc.MetricsServiceServicer):
    def __init__(self, sink):
        self.sink = sink

    def Export(self, request, context):
        self.sink.write(metric_records(request, "grpc"))
        return metrics_service_pb2.ExportMetricsServiceResponse()


def http_handler(sink):
    routes = {
        "/v1/traces": (
            trace_service_pb2.ExportTraceServiceRequest,
            trace_service_pb2.ExportTraceServiceResponse,
            span_records,
        ),
        "/v1/metrics": (
            metrics_service_pb2.ExportMetricsServiceRequest,
            metrics_service_pb2.ExportMetricsServiceResponse,
            metric_records,
        ),
    }

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):
            pass

        def reply(self, status, body, content_type):
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_POST(self):
            route = routes.get(self.path)
            if route is None:
                return self.reply(404, b"not found\n", "text/plain")
            length = int(self.headers.get("Content-Length") or 0)
            if length > MAX_BODY:
                return self.reply(413, b"too large\n", "text/plain")
            body = self.rfile.read(length)
            if self.headers.get("Content-Encoding") == "gzip":
                body = gzip.decompress(body)
            request_type, response_type, records = route
            content_type = (self.headers.get("Content-Type") or "").split(";")[0].strip()
            try:
                if content_type == "application/json":
                    req = json_format.Parse(body, request_type())
                else:
                    req = request_type.FromString(body)
            except Exception as e:  # a malformed export is the client's fault
                return self.reply(400, str(e).encode(), "text/plain")
            sink.write(records(req, "http"))
            if content_type == "application/json":
                out = json_format.MessageToJson(response_type()).encode()
                return self.reply(200, out, "application/json")
            return self.reply(200, response_type().SerializeToString(), "application/x-protobuf")

    return Handler


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    sink = Sink(sys.argv[1])

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(TraceService(sink), server)
    metrics_service_pb2_grpc.add_MetricsServiceServicer_to_server(MetricsService(sink), server)
    grpc_port = server.add_insecure_port("127.0.0.1:0")
    server.start()

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), http_handler(sink))
    threading.Thread(target=httpd.serve_forever, daemon=True).start()

    print(json.dumps({"grpc": grpc_port, "http": httpd.server_address[1]}), flush=True)
    try:
        if sys.stdin is not None and not sys.stdin.isatty():
            sys.stdin.read()
        else:
            threading.Event().wait()
    except KeyboardInterrupt:
        pass
    httpd.shutdown()
    server.stop(grace=1)


if __name__ == "__main__":
    main()
