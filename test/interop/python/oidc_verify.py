"""PyJWT's PyJWKClient as an OIDC relying party of a JWT-SVID, for Tessera's interop suite.

Usage: oidc_verify.py --issuer URL --audience AUD --token JWT [--ca FILE]

Discovers the issuer as an OIDC client does (GET <issuer>/.well-known/openid-configuration; its
"issuer" must equal --issuer), takes the signing key for the token's kid from jwks_uri with
jwt.PyJWKClient, and verifies the token with jwt.decode: signature, algorithms the discovery
document lists, "aud" = --audience, "iss" = --issuer, "exp" (no leeway), "sub" required. Prints one
JSON line and exits 0 (accepted), 1 (refused) or 3 (discovery failed):

  {"verdict": "accepted", "subject", "issuer", "audience", "expiry", "alg", "kid", "jwks_uri"}
  {"verdict": "refused", "error", "type"}
  {"verdict": "error", "stage": "discovery", "error"}
"""

import argparse
import json
import ssl
import sys
import urllib.request
from typing import Any, Dict, Optional

import jwt


def emit(line: Dict[str, Any], code: int) -> None:
    print(json.dumps(line), flush=True)
    sys.exit(code)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--issuer", required=True)
    p.add_argument("--audience", required=True)
    p.add_argument("--token", required=True)
    p.add_argument("--ca", help="PEM roots for the discovery server (default: the system's)")
    p.add_argument("--timeout", type=float, default=20)
    args = p.parse_args()

    context: Optional[ssl.SSLContext] = None
    if args.ca:
        context = ssl.create_default_context(cafile=args.ca)
    well_known = args.issuer.rstrip("/") + "/.well-known/openid-configuration"
    try:
        with urllib.request.urlopen(well_known, timeout=args.timeout, context=context) as r:
            doc = json.load(r)
        if doc.get("issuer") != args.issuer:
            raise ValueError(f"the document's issuer {doc.get('issuer')!r} is not {args.issuer!r}")
        jwks_uri = doc["jwks_uri"]
        algorithms = doc["id_token_signing_alg_values_supported"]
    except Exception as e:  # noqa: BLE001 - any discovery failure is reported as such
        emit({"verdict": "error", "stage": "discovery", "error": f"{type(e).__name__}: {e}"}, 3)

    client = jwt.PyJWKClient(jwks_uri, cache_jwk_set=False, timeout=args.timeout, ssl_context=context)
    try:
        key = client.get_signing_key_from_jwt(args.token)
        claims = jwt.decode(
            args.token,
            key=key,
            algorithms=algorithms,
            audience=args.audience,
            issuer=args.issuer,
            options={"require": ["exp", "sub", "aud", "iss"]},
        )
    except jwt.PyJWTError as e:
        emit({"verdict": "refused", "error": str(e), "type": type(e).__name__}, 1)
    header = jwt.get_unverified_header(args.token)
    emit(
        {
            "verdict": "accepted",
            "subject": claims["sub"],
            "issuer": claims["iss"],
            "audience": claims["aud"],
            "expiry": claims["exp"],
            "alg": header.get("alg"),
            "kid": header.get("kid"),
            "jwks_uri": jwks_uri,
        },
        0,
    )


if __name__ == "__main__":
    main()
