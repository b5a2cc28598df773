import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { describe, it } from 'node:test';
import { ConfigError } from '../common/config-schema.js';
import { parseAgentConfig } from './config.js';

function problems(text: string): string[] {
  try {
    parseAgentConfig(text, 'agent.yaml');
  } catch (err) {
    assert.ok(err instanceof ConfigError, String(err));
    return err.problems.map((p) => `${p.line}:${p.path}: ${p.message}`);
  }
  assert.fail('expected a ConfigError');
}

describe('agent configuration', () => {
  it('the example in docs/agent.md is a valid configuration', () => {
    const doc = readFileSync(new URL('../../docs/agent.md', import.meta.url), 'utf8');
    const yaml = /```yaml\n([\s\S]*?)```/.exec(doc)?.[1];
    assert.ok(yaml, 'docs/agent.md has a yaml block');
    const c = parseAgentConfig(yaml, 'docs/agent.md');
    assert.equal(c.node_attestor.join_token?.token_file, '/etc/tessera/token');
  });

  it('applies SPIRE-like defaults to a minimal file', () => {
    const c = parseAgentConfig('trust_domain: example.org\nserver_address: tessera.internal\n');
    assert.equal(c.server_port, 8081);
    assert.equal(c.socket_path, '/run/tessera/agent.sock');
    assert.equal(c.data_dir, '/var/lib/tessera/agent');
    assert.equal(c.insecure_bootstrap, false);
    assert.deepEqual(c.node_attestor, { join_token: {} });
    assert.equal(c.workload_key_type, 'ec-p256');
    assert.equal(c.workload_attestors.unix.sha256, false);
  });

  it('reports every problem with its key and line', () => {
    assert.deepEqual(
      problems(
        [
          'trust_domain: example.org',
          'server_address: s',
          'trust_bundle_url: http://insecure/bundle',
          'node_attestor:',
          '  x509pop: { certificate_path: relative.pem }',
          'socket_path: agent.sock',
          'colour: blue',
        ].join('\n'),
      ),
      [
        '3:trust_bundle_url: must be an https:// URL; got "http://insecure/bundle"',
        '5:node_attestor.x509pop.certificate_path: must be an absolute path; got "relative.pem"',
        '5:node_attestor.x509pop.private_key_path: is required',
        '6:socket_path: must be an absolute path; got "agent.sock"',
        '7:colour: unknown key; allowed here: trust_domain, server_address, server_port, trust_bundle_path, trust_bundle_url, insecure_bootstrap, node_attestor, socket_path, data_dir, workload_key_type, sds, additional_socket_path, workload_attestors, log, health',
      ],
    );
  });

  it('requires the trust domain and the server address', () => {
    const p = problems('socket_path: /tmp/a.sock\n');
    assert.ok(
      p.some((x) => /trust_domain: is required/.test(x)),
      p.join('\n'),
    );
    assert.ok(
      p.some((x) => /server_address: is required/.test(x)),
      p.join('\n'),
    );
  });
});
