"""py-spiffe as a reference peer for Tessera's interop suite.

Usage: verdicts.py verdicts <vectors.json>

Reads a JSON array of vectors ({id, kind, ...inputs}) and prints a JSON array of verdicts
({id, ok, value?, error?} or {id, skipped: true, error} for kinds py-spiffe has no API for).
The vector format is the one test/interop/go/verdicts.go reads; see test/interop/vectors.ts.
"""

import json
import sys
from typing import Any, Callable, Dict

import jwt
from spiffe import JwtBundle, JwtBundleSet, JwtSvid, SpiffeId, TrustDomain, X509Bundle, X509Svid


def _spiffeid(v: Dict[str, Any]) -> str:
    return str(SpiffeId(v["input"]))


def _trustdomain(v: Dict[str, Any]) -> str:
    return TrustDomain(v["input"]).name


def _x509bundle(v: Dict[str, Any]) -> str:
    bundle = X509Bundle.parse(TrustDomain(v["trustDomain"]), v["data"].encode())
    return str(len(bundle.x509_authorities))


def _jwtbundle(v: Dict[str, Any]) -> str:
    bundle = JwtBundle.parse(TrustDomain(v["trustDomain"]), v["data"].encode())
    return str(len(bundle.jwt_authorities))


def _x509svid_parse(v: Dict[str, Any]) -> str:
    svid = X509Svid.parse(v["chainPem"].encode(), v["keyPem"].encode())
    return str(svid.spiffe_id)


def _jwtsvid_validate(v: Dict[str, Any]) -> str:
    bundles = JwtBundleSet.of(
        [JwtBundle.parse(TrustDomain(td), data.encode()) for td, data in v["bundles"].items()]
    )
    # py-spiffe validates against one bundle; a caller picks it by the subject's trust domain
    # (as its parse_and_validate docstring tells federated callers to do).
    claims = jwt.decode(v["token"], options={"verify_signature": False})
    subject = claims.get("sub")
    if not isinstance(subject, str) or not subject:
        raise ValueError("token has no 'sub' claim")
    td = SpiffeId(subject).trust_domain
    bundle = bundles.get_bundle_for_trust_domain(td)
    if bundle is None:
        raise LookupError(f"no JWT bundle for trust domain {td}")
    svid = JwtSvid.parse_and_validate(v["token"], bundle, set(v["audience"]))
    return str(svid.spiffe_id)


KINDS: Dict[str, Callable[[Dict[str, Any]], str]] = {
    "spiffeid": _spiffeid,
    "trustdomain": _trustdomain,
    "x509bundle": _x509bundle,
    "jwtbundle": _jwtbundle,
    "x509svid-parse": _x509svid_parse,
    "jwtsvid-validate": _jwtsvid_validate,
    # py-spiffe 0.3 has no SPIFFE bundle (JWKS with x509-svid entries) parser and no
    # X509-SVID chain verification, so "spiffebundle" and "x509svid-verify" are skipped.
}


def verdict(v: Dict[str, Any]) -> Dict[str, Any]:
    fn = KINDS.get(v["kind"])
    if fn is None:
        return {"id": v["id"], "skipped": True, "error": f"py-spiffe has no API for {v['kind']}"}
    try:
        return {"id": v["id"], "ok": True, "value": fn(v)}
    except Exception as err:  # every failure is a verdict, whatever py-spiffe raises
        return {"id": v["id"], "ok": False, "error": f"{type(err).__name__}: {err}"}


def main() -> int:
    if len(sys.argv) != 3 or sys.argv[1] != "verdicts":
        print("usage: verdicts.py verdicts <vectors.json>", file=sys.stderr)
        return 2
    with open(sys.argv[2], encoding="utf-8") as f:
        vectors = json.load(f)
    json.dump([verdict(v) for v in vectors], sys.stdout, indent=1)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
