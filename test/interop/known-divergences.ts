/**
 * Vectors on which a reference peer and we deliberately disagree, each with the reason. The suite
 * fails on any disagreement not listed here AND on any entry here that no longer disagrees, so the
 * list always says exactly where we differ. Add an entry only with a reason that cites the spec
 * (or the peer's own documented behaviour), never to get a run green.
 */

/** go-spiffe v2.9.0. */
export const GO_SPIFFE_DIVERGENCES: Readonly<Record<string, string>> = {
  'x509svid-verify/td-id-leaf':
    'X509-SVID spec: a leaf SPIFFE ID MUST have a path. go-spiffe checks that only when parsing its own SVID ' +
    '(x509svid.Parse), not in Verify; we check it when verifying a peer too.',
  'jwtsvid-validate/empty-audience-expected':
    'An empty expected-audience list is a caller error for us; go-spiffe (go-jose AnyAudience) then checks ' +
    'no audience at all, which would accept a token meant for anyone.',
  'jwtbundle/duplicate-kid':
    'JWT-SVID spec §3.6: a kid MUST be unique within a bundle. go-spiffe keeps the later key; we refuse the bundle, ' +
    'because a validator could otherwise check a token against a key other than the one its issuer meant.',
  'spiffebundle/refresh-hint-negative':
    'spiffe_refresh_hint is a number of seconds until the next fetch; go-spiffe stores -5 as given, we refuse the ' +
    'document instead of guessing a schedule from a meaningless value.',
};

/** py-spiffe 0.3.2: looser than the spec in several places; go-spiffe agrees with us on every one but the first. */
export const PY_SPIFFE_DIVERGENCES: Readonly<Record<string, string>> = {
  'jwtbundle/duplicate-kid':
    'As for go-spiffe: spec §3.6 requires unique kids; py-spiffe keeps one of the keys.',
  'x509svid-parse/key-first':
    'py-spiffe refuses non-CERTIFICATE PEM blocks in the chain input; go-spiffe (pemutil) skips them, as we do.',
  'spiffeid/invalid-16':
    'py-spiffe matches the scheme case-insensitively; the spec (and go-spiffe) require the literal "spiffe://".',
  'spiffeid/invalid-34':
    'py-spiffe lower-cases the trust domain; the spec says it MUST be lowercase, go-spiffe rejects upper case.',
  'spiffeid/invalid-upper-td-only': 'py-spiffe lower-cases the trust domain (see invalid-34).',
  'spiffeid/invalid-39f':
    'py-spiffe validates the path with re.match("^...$"), and Python\'s "$" also matches before a final newline, ' +
    'so "…/path\\n" passes and the newline is then dropped.',
  'trustdomain/upper': 'py-spiffe lower-cases the trust domain (see spiffeid/invalid-34).',
  'trustdomain/id-bad-path':
    'py-spiffe takes the trust domain of a SPIFFE ID without validating its path; go-spiffe parses the whole ID.',
  'trustdomain/id-upper-scheme': 'py-spiffe matches the scheme case-insensitively (see spiffeid/invalid-16).',
  'x509bundle/empty':
    'py-spiffe refuses an empty PEM bundle; go-spiffe and we return an empty bundle (a trust domain may have no ' +
    'X.509 authorities).',
  'x509bundle/private-key-block':
    'py-spiffe refuses a PEM bundle holding a non-CERTIFICATE block; go-spiffe (pemutil) skips such blocks, and so ' +
    'do we.',
  'x509bundle/bad-trust-domain': 'py-spiffe lower-cases the trust domain name "Example.org".',
  'x509svid-parse/no-basic-constraints':
    'py-spiffe requires the basicConstraints extension on the leaf; the X509-SVID spec only requires cA to be ' +
    'false when present, and go-spiffe accepts it absent.',
  'x509svid-parse/upper-td-uri': 'py-spiffe lower-cases the trust domain in the URI SAN.',
  'x509svid-parse/key-mismatch':
    'py-spiffe does not check that the private key belongs to the leaf certificate; go-spiffe and we do.',
  'x509svid-parse/sec1-key':
    'py-spiffe accepts a SEC 1 "EC PRIVATE KEY"; the Workload API and go-spiffe use PKCS#8 only.',
  'jwtsvid-validate/expired-within-leeway':
    'py-spiffe (PyJWT) allows no clock skew; go-spiffe and we allow 60 s past exp.',
  'jwtsvid-validate/iat-in-future':
    'py-spiffe does not check iat (verify_iat: False); go-spiffe (go-jose) and we refuse a token issued in the future.',
  'jwtsvid-validate/exp-string':
    'py-spiffe (PyJWT) accepts exp as a numeric string; RFC 7519 NumericDate is a JSON number, go-spiffe refuses it.',
  'jwtsvid-validate/sub-upper-td': 'py-spiffe lower-cases the trust domain in sub.',
};
