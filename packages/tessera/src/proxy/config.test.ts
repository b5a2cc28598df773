import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { ConfigError } from '../common/config-schema.js';
import { parseProxyConfig } from './config.js';

const problems = (text: string): string[] => {
  try {
    parseProxyConfig(text, 'proxy.yaml');
  } catch (err) {
    assert.ok(err instanceof ConfigError, String(err));
    return err.problems.map((p) => `${p.line ?? '-'} ${p.path}: ${p.message}`);
  }
  assert.fail('the configuration was accepted');
};

describe('proxy configuration', () => {
  it('reads listeners, labels, policies and defaults', () => {
    const c = parseProxyConfig(`
namespace: sock-shop
labels: {app: catalogue, version: v1}
policies: [/etc/tessera/policies]
inbound:
  - listen: 0.0.0.0:8443
    upstream: 127.0.0.1:8080
outbound:
  - listen: 127.0.0.1:15001
    upstream: catalogue.sock-shop.svc:8443
    server_spiffe_ids: [spiffe://example.org/ns/sock-shop/sa/catalogue]
`);
    assert.deepEqual(c.labels, { app: 'catalogue', version: 'v1' });
    assert.deepEqual(c.policies, ['/etc/tessera/policies']);
    assert.equal(c.inbound[0]?.protocol, 'http');
    assert.equal(c.inbound[0]?.forward_client_cert, 'sanitize_set');
    assert.deepEqual(c.inbound[0]?.trust_domains, []);
    assert.equal(c.outbound[0]?.protocol, 'tcp');
    assert.equal(c.outbound[0]?.connect_timeout, 5000);
    assert.equal(c.root_namespace, 'istio-system');
    assert.equal(c.audit.decisions, 'denied');
    assert.equal(c.health.port, 8089);
  });

  it('names every wrong key, value and line at once', () => {
    const found = problems(`labels: {"bad key!": x}
policies: [relative/dir]
inbound:
  - listen: 0.0.0.0:99999
    upstream: unix:relative.sock
    protocl: http
outbound:
  - listen: 127.0.0.1:15001
    upstream: "host_with_underscore:80"
    server_spiffe_ids: [http://not-spiffe]
`);
    assert.ok(
      found.some((p) => /^1 labels\.bad key!: is not a valid label key/.test(p)),
      found.join('\n'),
    );
    assert.ok(
      found.some((p) => /^2 policies\[0\]: must be an absolute path/.test(p)),
      found.join('\n'),
    );
    assert.ok(
      found.some((p) => /^4 inbound\[0\]\.listen: must be host:port/.test(p)),
      found.join('\n'),
    );
    assert.ok(
      found.some((p) => /^5 inbound\[0\]\.upstream: must be unix:\/absolute/.test(p)),
      found.join('\n'),
    );
    assert.ok(
      found.some((p) =>
        /^6 inbound\[0\]\.protocl: unknown key; did you mean protocol\? allowed here: name, listen/.test(p),
      ),
      found.join('\n'),
    );
    assert.ok(
      found.some((p) => /^9 outbound\[0\]\.upstream: has a host that is neither/.test(p)),
      found.join('\n'),
    );
    assert.ok(
      found.some((p) => /^10 outbound\[0\]\.server_spiffe_ids\[0\]: /.test(p)),
      found.join('\n'),
    );
  });

  it('refuses what would be insecure or meaningless: no listener, an inbound without policies, an outbound without a server identity', () => {
    assert.match(problems('namespace: a\n').join('\n'), /has no listener/);
    assert.match(
      problems('inbound: [{listen: "127.0.0.1:1", upstream: "127.0.0.1:2"}]\n').join('\n'),
      /policies: is required with inbound listeners/,
    );
    const both = problems(`outbound:
  - {listen: "127.0.0.1:1", upstream: "a.example:2", server_trust_domain: example.org, server_spiffe_ids: [spiffe://example.org/x]}
  - {listen: "127.0.0.1:1", upstream: "a.example:2"}
`).join('\n');
    assert.match(both, /outbound\[0\]: must say who the server is with exactly one of/);
    assert.match(both, /outbound\[1\]: must say who the server is/);
    assert.match(both, /two listeners on 127\.0\.0\.1:1/);
    assert.match(
      problems(
        'policies: [/p]\ninbound: [{listen: "127.0.0.1:1", upstream: "127.0.0.1:2", protocol: tcp, upstream_protocol: http2}]\n',
      ).join('\n'),
      /inbound\[0\]\.upstream_protocol: applies to protocol: http listeners/,
    );
  });
});
