import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { describe, it } from 'node:test';
import { ConfigError } from '../common/config-schema.js';
import { formatDuration, parseDuration } from '../common/duration.js';
import { loadServerConfig, parseServerConfig } from './config.js';

function problems(text: string): string[] {
  try {
    parseServerConfig(text, 'server.yaml');
  } catch (err) {
    assert.ok(err instanceof ConfigError, String(err));
    return err.problems.map((p) => `${p.line}:${p.path}: ${p.message}`);
  }
  assert.fail('expected a ConfigError');
}

describe('server configuration', () => {
  it('the example in packages/tessera/README.md is a valid configuration', () => {
    const readme = readFileSync(new URL('../../README.md', import.meta.url), 'utf8');
    const section = readme.slice(readme.indexOf('## Server configuration'));
    const yaml = /```yaml\n([\s\S]*?)```/.exec(section)?.[1];
    assert.ok(yaml, 'the README has a yaml block under "Server configuration"');
    const c = parseServerConfig(yaml, 'README.md');
    assert.equal(c.node_attestors.x509pop.ca_bundle_path, '/etc/tessera/node-ca.pem');
  });

  it('applies the documented defaults to a minimal file, and freezes the result', () => {
    const c = parseServerConfig('trust_domain: example.org\n');
    assert.equal(c.trust_domain, 'example.org');
    // Its own 0700 directory, apart from the agent's socket in /run/tessera (issue 16).
    assert.equal(c.admin_socket, '/run/tessera/server/server.sock');
    assert.equal(c.agent_api.port, 8081);
    assert.deepEqual(c.datastore, { sqlite: {} });
    assert.equal(c.ca.key_type, 'ec-p256');
    assert.equal(c.ca.ttl, 24 * 3600_000);
    assert.equal(c.x509_svid_ttl, 3600_000);
    assert.equal(c.jwt_svid_ttl, 300_000);
    assert.equal(c.key_manager, 'disk');
    assert.equal(c.upstream_authority, undefined);
    assert.ok(Object.isFrozen(c) && Object.isFrozen(c.ca));
  });

  it('reads every section', () => {
    const c = parseServerConfig(`
trust_domain: example.org
data_dir: /srv/tessera
agent_api: { address: 127.0.0.1, port: 9081 }
datastore:
  postgres:
    connection_string: postgresql://tessera@db/tessera
ca:
  key_type: ec-p384
  ttl: 48h
  subject: { organization: Example }
x509_svid_ttl: 30m
jwt_svid_ttl: 90s
key_manager: memory
upstream_authority:
  disk: { cert_file: /etc/tessera/up.crt, key_file: /etc/tessera/up.key }
log: { level: debug, format: json }
`);
    assert.equal(c.datastore.postgres?.connection_string, 'postgresql://tessera@db/tessera');
    assert.equal(c.ca.ttl, 48 * 3600_000);
    assert.equal(c.ca.subject.organization, 'Example');
    assert.equal(c.ca.subject.country, 'US');
    assert.equal(c.jwt_svid_ttl, 90_000);
    assert.equal(c.upstream_authority?.disk.cert_file, '/etc/tessera/up.crt');
  });

  it('reports every problem at once, each with its key and line', () => {
    const found = problems(`trust_domain: Example.org
agent_api:
  port: "8081"
  adress: 0.0.0.0
datastore:
  sqlite: { path: relative.db }
  postgres: { connection_string: x }
ca:
  key_type: ed25519
  ttl: forever
x509_svid_ttl: 1h
colour: blue
`);
    assert.deepEqual(found, [
      '1:trust_domain: spiffeid: invalid trust domain "Example.org": trust domain characters are limited to lowercase letters, numbers, dots, dashes, and underscores (found "E" at offset 0)',
      '3:agent_api.port: must be a whole number; got "8081"',
      '4:agent_api.adress: unknown key; did you mean address? allowed here: address, port',
      '6:datastore.sqlite.path: must be an absolute path; got "relative.db"',
      '5:datastore: must name exactly one of sqlite, postgres; found sqlite, postgres',
      '9:ca.key_type: must be one of ec-p256, ec-p384, rsa-2048; got "ed25519"',
      '10:ca.ttl: must be a duration such as 90s, 5m, 1h30m or 24h; got "forever"',
      '12:colour: unknown key; allowed here: trust_domain, data_dir, agent_api, admin_socket, datastore, ca, x509_svid_ttl, jwt_svid_ttl, jwt_issuer, jwt_key_type, oidc_discovery, agent_svid_ttl, audit_log, node_attestors, key_manager, upstream_authority, federation, log, health',
    ]);
  });

  it('names a missing required key, a YAML syntax error with its line, a duplicate key, and an empty file', () => {
    assert.deepEqual(problems('data_dir: /srv\n'), ['1:trust_domain: is required']);
    assert.match(problems('trust_domain: example.org\nca: [\n')[0] ?? '', /YAML syntax/);
    assert.match(
      problems('trust_domain: example.org\ntrust_domain: other.org\n')[0] ?? '',
      /^2:: YAML syntax: Map keys must be unique/,
    );
    assert.deepEqual(problems(''), ['1:: the file is empty']);
  });

  it('a missing file is one clear error naming it', () => {
    assert.throws(
      () => loadServerConfig('/nonexistent/server.yaml'),
      (e: unknown) =>
        e instanceof ConfigError &&
        /\/nonexistent\/server.yaml: 1 problem:\n {2}\/nonexistent\/server.yaml: cannot read the file: ENOENT/.test(
          e.message,
        ),
    );
  });
});

describe('durations', () => {
  it('parse and format', () => {
    assert.equal(parseDuration('1h30m'), 5_400_000);
    assert.equal(parseDuration('500ms'), 500);
    assert.equal(parseDuration('7d'), 7 * 86_400_000);
    for (const bad of ['', '1', 'h', '1x', '1h ', '-1h']) assert.equal(parseDuration(bad), undefined, bad);
    assert.equal(formatDuration(5_400_000), '1h30m');
    assert.equal(formatDuration(86_400_000), '24h');
  });

  it("answers SPIRE's key names with tessera's, and a typo with the nearest key", () => {
    const lines = (text: string) => {
      try {
        parseServerConfig(text);
      } catch (err) {
        if (err instanceof ConfigError) return err.message;
        throw err;
      }
      return '';
    };
    const text = lines(
      [
        'trust_domain: example.org',
        'default_x509_svid_ttl: 1h',
        'x509_svid_tll: 1h',
        'ca: { key_typ: ec-p256 }',
      ].join('\n'),
    );
    assert.match(
      text,
      /2: default_x509_svid_ttl: unknown key; default_x509_svid_ttl is SPIRE's name; tessera's is x509_svid_ttl\./,
    );
    assert.match(text, /3: x509_svid_tll: unknown key; did you mean x509_svid_ttl\?/);
    assert.match(text, /4: ca\.key_typ: unknown key; did you mean key_type\?/);
    assert.doesNotMatch(lines('trust_domain: example.org\ncolour: red'), /did you mean/);
  });
});
