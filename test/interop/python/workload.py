"""py-spiffe as a WORKLOAD of a SPIFFE Workload API, for Tessera's interop suite.

Usage: workload.py [--audience AUD]... [--updates N] [--timeout SECONDS]

Talks to the Workload API socket named by SPIFFE_ENDPOINT_SOCKET with py-spiffe's WorkloadApiClient,
as an application would, and prints what it saw as JSON lines on stdout, in this order:

  {"kind": "x509-context", "svids": [...], "bundles": {td: n}}   fetch_x509_context
  {"kind": "x509-bundles", "bundles": {td: n}}                   fetch_x509_bundles
  {"kind": "jwt-bundles", "bundles": {td: n}}                    fetch_jwt_bundles
  {"kind": "jwt", "spiffe_id", "audience", "expires_at"}         fetch_jwt_svid (with --audience)
  {"kind": "x509", "update": n, "svids": [...], "bundles": {...}}  stream_x509_contexts, n = 1..N

An SVID is {"spiffe_id", "serial" (upper-case hex, as node prints it), "expires_at" (Unix seconds)};
bundles map a trust domain to its number of authorities. A failed call prints
{"kind": "error", "where", "code" (gRPC code, e.g. PermissionDenied), "error"} and the run goes on;
the process exits 0 after N stream updates, 1 when --timeout passes first. See
test/interop/workload-peers.ts.
"""

import argparse
import json
import queue
import sys
import threading
import time
from typing import Any, Dict, List, Optional

import grpc
from spiffe import WorkloadApiClient
from spiffe.svid.x509_svid import X509Svid

_lock = threading.Lock()


def emit(obj: Dict[str, Any]) -> None:
    with _lock:
        sys.stdout.write(json.dumps(obj) + "\n")
        sys.stdout.flush()


def serial_hex(n: int) -> str:
    s = format(n, "X")
    return s if len(s) % 2 == 0 else "0" + s


def svid_seen(svid: X509Svid) -> Dict[str, Any]:
    leaf = svid.leaf
    return {
        "spiffe_id": str(svid.spiffe_id),
        "serial": serial_hex(leaf.serial_number),
        "expires_at": int(leaf.not_valid_after_utc.timestamp()),
    }


def x509_counts(bundle_set: Any) -> Dict[str, int]:
    return {b.trust_domain.name: len(b.x509_authorities) for b in bundle_set.bundles}


def jwt_counts(bundle_set: Any) -> Dict[str, int]:
    return {b.trust_domain.name: len(b.jwt_authorities) for b in bundle_set.bundles}


def grpc_code(err: BaseException) -> Optional[str]:
    """The gRPC code of the first grpc.Call in err's cause chain, as Go names it (PermissionDenied)."""
    e: Optional[BaseException] = err
    while e is not None:
        if isinstance(e, grpc.Call):
            return "".join(w.capitalize() for w in e.code().name.split("_"))
        e = e.__cause__ or e.__context__
    text = str(err)
    if "StatusCode." in text:  # py-spiffe's watch errors carry only the code's name
        name = text.split("StatusCode.", 1)[1].split(")")[0].split()[0]
        return "".join(w.capitalize() for w in name.split("_"))
    return None


def error_line(where: str, err: BaseException) -> Dict[str, Any]:
    line: Dict[str, Any] = {"kind": "error", "where": where, "error": f"{type(err).__name__}: {err}"}
    code = grpc_code(err)
    if code is not None:
        line["code"] = code
    return line


def main(argv: List[str]) -> int:
    p = argparse.ArgumentParser(prog="workload.py")
    p.add_argument("--audience", action="append", default=[])
    p.add_argument("--updates", type=int, default=1)
    p.add_argument("--timeout", type=float, default=60.0)
    args = p.parse_args(argv)
    if args.updates < 1:
        p.error("--updates must be at least 1")

    deadline = time.monotonic() + args.timeout
    client = WorkloadApiClient(default_timeout=min(args.timeout, 10.0))
    try:
        try:
            ctx = client.fetch_x509_context()
            emit({
                "kind": "x509-context",
                "svids": [svid_seen(s) for s in ctx.x509_svids],
                "bundles": x509_counts(ctx.x509_bundle_set),
            })
        except Exception as err:
            emit(error_line("fetch_x509_context", err))
        try:
            emit({"kind": "x509-bundles", "bundles": x509_counts(client.fetch_x509_bundles())})
        except Exception as err:
            emit(error_line("fetch_x509_bundles", err))
        try:
            emit({"kind": "jwt-bundles", "bundles": jwt_counts(client.fetch_jwt_bundles())})
        except Exception as err:
            emit(error_line("fetch_jwt_bundles", err))
        if args.audience:
            try:
                svid = client.fetch_jwt_svid(audience=set(args.audience))
                emit({
                    "kind": "jwt",
                    "spiffe_id": str(svid.spiffe_id),
                    "audience": sorted(svid.audience),
                    "expires_at": svid.expiry,
                })
            except Exception as err:
                emit(error_line("fetch_jwt_svid", err))

        updates: "queue.Queue[Any]" = queue.Queue()
        handle = client.stream_x509_contexts(
            on_success=updates.put,
            on_error=lambda err: emit(error_line("stream_x509_contexts", err)),
        )
        try:
            for n in range(1, args.updates + 1):
                try:
                    ctx = updates.get(timeout=max(0.0, deadline - time.monotonic()))
                except queue.Empty:
                    print(f"workload.py: saw {n - 1} of {args.updates} X.509 updates before the timeout",
                          file=sys.stderr)
                    return 1
                emit({
                    "kind": "x509",
                    "update": n,
                    "svids": [svid_seen(s) for s in ctx.x509_svids],
                    "bundles": x509_counts(ctx.x509_bundle_set),
                })
        finally:
            handle.cancel()
    finally:
        client.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
