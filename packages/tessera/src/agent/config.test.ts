import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { describe, it } from 'node:test';
import { ConfigError } from '../common/config-schema.js';
import { parseAgentConfig } from './config.js';
import { parseServerAddress } from './server-address.js';

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

  it('the several-servers example in docs/agent.md is a valid server_address', () => {
    const doc = readFileSync(new URL('../../docs/agent.md', import.meta.url), 'utf8');
    const section = doc.slice(doc.indexOf('## Several servers (HA)'));
    const yaml = /```yaml\n([\s\S]*?)```/.exec(section)?.[1];
    assert.ok(yaml, 'the section has a yaml block');
    const c = parseAgentConfig(`trust_domain: example.org\n${yaml}`, 'docs/agent.md');
    assert.deepEqual(
      c.server_address.map((item) => parseServerAddress(item, c.server_port)),
      [
        { item: 'tessera-1.internal', host: 'tessera-1.internal', port: 8081 },
        { item: '10.0.0.12:8443', host: '10.0.0.12', port: 8443 },
        { item: '[2001:db8::14]:8081', host: '2001:db8::14', port: 8081 },
        { item: 'tessera.internal', host: 'tessera.internal', port: 8081 },
      ],
    );
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

  it('the example in docs/workload-attestation.md is a valid workload_attestors section', () => {
    const doc = readFileSync(new URL('../../docs/workload-attestation.md', import.meta.url), 'utf8');
    const yaml = /```yaml\n([\s\S]*?)```/.exec(doc)?.[1];
    assert.ok(yaml, 'docs/workload-attestation.md has a yaml block');
    const c = parseAgentConfig(
      `trust_domain: example.org\nserver_address: s\n${yaml}`,
      'docs/workload-attestation.md',
    );
    assert.equal(c.workload_attestors.systemd?.bus_address, 'unix:path=/run/dbus/system_bus_socket');
    assert.equal(c.workload_attestors.docker?.docker_socket_path, 'unix:///var/run/docker.sock');
  });

  it('turns the systemd and docker workload attestors on by their key, with defaults', () => {
    const base = 'trust_domain: example.org\nserver_address: tessera.internal\n';
    const off = parseAgentConfig(base);
    assert.equal(off.workload_attestors.systemd, undefined);
    assert.equal(off.workload_attestors.docker, undefined);
    // A key with no value is the attestor with its defaults, as `{}`.
    const on = parseAgentConfig(`${base}workload_attestors:\n  systemd:\n  docker: {}\n`);
    assert.deepEqual(on.workload_attestors.systemd, {
      bus_address: 'unix:path=/run/dbus/system_bus_socket',
      timeout: 3000,
    });
    assert.deepEqual(on.workload_attestors.docker, {
      docker_socket_path: 'unix:///var/run/docker.sock',
      timeout: 3000,
    });
    const set = parseAgentConfig(
      `${base}workload_attestors:\n  systemd: { bus_address: "unix:path=/run/user/1000/bus", timeout: 500ms }\n  docker: { docker_socket_path: /run/docker.sock, podman_socket_path: unix:///run/podman/podman.sock }\n`,
    );
    assert.equal(set.workload_attestors.systemd?.timeout, 500);
    assert.equal(set.workload_attestors.docker?.podman_socket_path, 'unix:///run/podman/podman.sock');
  });

  it('reports every problem of the workload attestors at once, with a did-you-mean', () => {
    assert.deepEqual(
      problems(
        [
          'trust_domain: example.org',
          'server_address: s',
          'workload_attestors:',
          '  systemd: { bus_address: "tcp:host=localhost,port=1", timout: 1s }',
          '  docker: { docker_socket_path: "tcp://127.0.0.1:2375", timeout: soon }',
          '  sytemd: {}',
        ].join('\n'),
      ),
      [
        '4:workload_attestors.systemd.bus_address: D-Bus address "tcp:host=localhost,port=1" is not unix:path=<absolute path> or unix:abstract=<name> (one address; tcp and other transports are not supported)',
        '4:workload_attestors.systemd.timout: unknown key; did you mean timeout? allowed here: bus_address, timeout',
        '5:workload_attestors.docker.docker_socket_path: must be a Unix socket: unix:///path or an absolute path; got "tcp://127.0.0.1:2375"',
        '5:workload_attestors.docker.timeout: must be a duration such as 90s, 5m, 1h30m or 24h; got "soon"',
        '6:workload_attestors.sytemd: unknown key; did you mean systemd? allowed here: unix, systemd, docker',
      ],
    );
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

  it('takes server_address as one address or a list, host-only items getting server_port', () => {
    const base = 'trust_domain: example.org\nserver_port: 9000\n';
    assert.deepEqual(parseAgentConfig(`${base}server_address: tessera.internal\n`).server_address, [
      'tessera.internal',
    ]);
    const c = parseAgentConfig(
      `${base}server_address:\n  - tessera-1.internal\n  - 10.0.0.7:8443\n  - '[::1]:8081'\n  - '[2001:db8::5]'\n`,
    );
    assert.deepEqual(c.server_address, [
      'tessera-1.internal',
      '10.0.0.7:8443',
      '[::1]:8081',
      '[2001:db8::5]',
    ]);
    assert.deepEqual(
      c.server_address.map((item) => parseServerAddress(item, c.server_port)),
      [
        { item: 'tessera-1.internal', host: 'tessera-1.internal', port: 9000 },
        { item: '10.0.0.7:8443', host: '10.0.0.7', port: 8443 },
        { item: '[::1]:8081', host: '::1', port: 8081 },
        { item: '[2001:db8::5]', host: '2001:db8::5', port: 9000 },
      ],
    );
    assert.deepEqual(parseAgentConfig(`${base}server_address: [a.internal, b.internal]\n`).server_address, [
      'a.internal',
      'b.internal',
    ]);
    assert.ok(Object.isFrozen(c.server_address));
  });

  it('names each bad server_address item, with its line, and says what an item may be', () => {
    const shapes =
      'each item is host, host:port or [IPv6]:port, e.g. tessera.internal, 10.0.0.5:8081, [2001:db8::5]:8081';
    assert.deepEqual(
      problems(
        [
          'trust_domain: example.org',
          'server_address:',
          '  - ok.internal:8081',
          '  - https://tessera.internal',
          '  - ::1',
          "  - '[::1'",
          "  - '[not-v6]:8081'",
          '  - tessera.internal:http',
          '  - tessera.internal:0',
          '  - tessera.internal:65536',
          "  - ''",
          '  - under_score.internal',
          '  - 10.0.0',
          '  -',
          '  - { host: a }',
        ].join('\n'),
      ),
      [
        `4:server_address[1]: "https://tessera.internal" is not an address (no scheme, path or spaces); ${shapes}`,
        `5:server_address[2]: "::1" is an IPv6 address without brackets; write it as [::1]:<port>; ${shapes}`,
        `6:server_address[3]: "[::1" has an unclosed or misplaced "]"; ${shapes}`,
        `7:server_address[4]: "[not-v6]:8081" has "not-v6" in brackets, which is not an IPv6 address; ${shapes}`,
        `8:server_address[5]: "tessera.internal:http" has port "http"; a port is 1 to 65535; ${shapes}`,
        `9:server_address[6]: "tessera.internal:0" has port "0"; a port is 1 to 65535; ${shapes}`,
        `10:server_address[7]: "tessera.internal:65536" has port "65536"; a port is 1 to 65535; ${shapes}`,
        `11:server_address[8]: "" is empty; ${shapes}`,
        `12:server_address[9]: "under_score.internal" has "under_score.internal" as its host, which is neither an IPv4 address nor a DNS name (letters, digits, inner hyphens, dots); ${shapes}`,
        `13:server_address[10]: "10.0.0" has "10.0.0" as its host, which is neither an IPv4 address nor a DNS name (letters, digits, inner hyphens, dots); ${shapes}`,
        '14:server_address[11]: is required',
        '15:server_address[12]: must be a string; got a mapping',
      ],
    );
    assert.deepEqual(problems('trust_domain: example.org\nserver_address: []\n'), [
      '2:server_address: must have at least 1 item',
    ]);
    assert.deepEqual(problems('trust_domain: example.org\nserver_address: a.internal:1:2\n'), [
      `2:server_address: "a.internal:1:2" has more than one ":"; ${shapes}`,
    ]);
    assert.deepEqual(problems('trust_domain: example.org\nserver_address: { host: a }\n'), [
      '2:server_address: must be one item or a list (lines starting with "- "); got a mapping',
    ]);
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
