// Istio's BASE path normalization, as the engine applies it before matching `paths`.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { createPolicyEngine, normalizePath, parsePolicies } from './index.js';

describe('normalizePath (Istio BASE)', () => {
  it("normalizes as Istio's normalization reference shows", () => {
    const cases: [string, string | undefined][] = [
      ['/public/./data/abc/../xyz', '/public/data/xyz'],
      ['/some%2fdata/%61%62%63', '/some%2fdata/abc'], // %2f is decoded only with DECODE_AND_MERGE_SLASHES
      ['/%2D%2e%30%39%41%5A%5f%61%7A%7e', '/-.09AZ_az~'],
      ['/a%20b%25c', '/a%20b%25c'],
      ['/some\\data', '/some/data'],
      ['/some//data///abc', '/some//data///abc'], // merging slashes is MERGE_SLASHES, not BASE
      ['/%2e%2e/admin', '/admin'],
      ['/a/b/..', '/a/'],
      ['/..', '/'],
      ['/.hidden/./x', '/.hidden/x'],
      ['/x/../y?z=/../w#/..', '/y?z=/../w#/..'],
      ['/a%00b', undefined],
      ['*', '*'],
      ['/plain/path?q=1', '/plain/path?q=1'],
    ];
    for (const [input, expected] of cases) assert.equal(normalizePath(input), expected, input);
  });

  it('decodes once: normalizing twice changes nothing', () => {
    for (const p of ['/a%252e%252e/b', '/%2e%2e%2f', '/x/%2E/y/..', '/a\\..\\b']) {
      const once = normalizePath(p)!;
      assert.equal(normalizePath(once), once, p);
    }
  });

  it('the engine matches paths after normalization, so encodings and dot segments do not slip past a DENY', () => {
    const text = `apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: deny-admin, namespace: shop}
spec:
  action: DENY
  rules:
  - to: [{operation: {paths: ["/admin*"]}}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: allow-public, namespace: shop}
spec:
  rules:
  - to: [{operation: {paths: ["/public/*"]}}]
`;
    const e = createPolicyEngine(parsePolicies(text, 'p.yaml').policies, { namespace: 'shop', labels: {} });
    const get = (path: string) =>
      e.evaluate({ protocol: 'http', http: { method: 'GET', path, host: 'h', headers: {} } });
    for (const path of ['/public/../admin/users', '/%61dmin', '/public\\..\\admin', '/public/%2e%2e/admin']) {
      assert.equal(get(path).decidedBy?.policy, 'shop/deny-admin', path);
    }
    assert.equal(get('/public/x/../y?next=/admin').decidedBy?.policy, 'shop/allow-public');
    assert.equal(get('/public/../private').allowed, false);
  });
});
