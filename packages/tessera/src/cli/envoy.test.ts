// `tessera envoy bootstrap` as users run it: exit codes and one-line errors for bad flags. That the
// output is a valid Envoy bootstrap is proven against Envoy's protos in test/interop/envoy-bootstrap.test.ts.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { parse } from 'yaml';
import { tessera } from './main.test.util.js';

const bin = fileURLToPath(new URL('../../bin/tessera.js', import.meta.url));

const ID = 'spiffe://example.org/vm/catalog-client';
const OUTBOUND =
  '127.0.0.1:15001=catalogue.sock-shop.svc:8080@spiffe://example.org/ns/sock-shop/sa/catalogue';

const bootstrap = (...args: string[]) => tessera('envoy', 'bootstrap', ...args);

/** Runs the command and checks it is a usage error: exit 2, one line on stderr, nothing on stdout. */
async function usageError(args: string[], message: RegExp): Promise<string> {
  const r = await bootstrap(...args);
  assert.equal(r.code, 2, `exit ${r.code}: ${r.stderr}`);
  assert.equal(r.stdout, '');
  const lines = r.stderr.trimEnd().split('\n');
  assert.equal(lines.length, 1, `not one line:\n${r.stderr}`);
  assert.match(lines[0]!, /^tessera envoy bootstrap: /);
  assert.match(lines[0]!, message);
  return lines[0]!;
}

describe('tessera envoy bootstrap', () => {
  it('the binary prints a bootstrap, its header saying where the certificates come from', async () => {
    const r = await new Promise<{ code: number; stdout: string; stderr: string }>((resolve) => {
      const args = [
        'envoy',
        'bootstrap',
        '--spiffe-id',
        ID,
        '--outbound',
        OUTBOUND,
        '--agent-socket',
        '/tmp/agent.sock',
      ];
      execFile(process.execPath, [bin, ...args], (err, stdout, stderr) => {
        resolve({ code: err === null ? 0 : Number((err as { code?: number }).code ?? 1), stdout, stderr });
      });
    });
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /^# Envoy bootstrap for spiffe:\/\/example.org\/vm\/catalog-client/);
    assert.match(r.stdout, /# Every certificate comes from the Tessera agent over SDS on \/tmp\/agent.sock:/);
    const b = parse(r.stdout);
    assert.equal(b.static_resources.clusters[0].name, 'tessera_agent');
    assert.equal(
      b.static_resources.clusters[0].load_assignment.endpoints[0].lb_endpoints[0].endpoint.address.pipe.path,
      '/tmp/agent.sock',
    );
  });

  it('a malformed --outbound is a one-line usage error naming the form and an example', async () => {
    const line = await usageError(
      ['--spiffe-id', ID, '--outbound', '127.0.0.1:15001=catalogue.sock-shop.svc:8080'],
      /--outbound "127.0.0.1:15001=catalogue.sock-shop.svc:8080": no "@SPIFFE_ID"/,
    );
    assert.match(line, /the form is LISTEN=UPSTREAM@SPIFFE_ID, e.g. 127.0.0.1:15001=catalogue/);
    await usageError(['--spiffe-id', ID, '--outbound', 'catalogue:8080@spiffe://example.org/x'], /no "="/);
    await usageError(
      ['--spiffe-id', ID, '--outbound', 'localhost:15001=catalogue:8080@spiffe://example.org/x'],
      /listen address "localhost:15001" is not an IP address and port; give ip:port/,
    );
    await usageError(
      ['--spiffe-id', ID, '--outbound', '127.0.0.1:15001=catalogue:http@spiffe://example.org/x'],
      /upstream "catalogue:http": port "http" is not a number from 1 to 65535/,
    );
    await usageError(
      ['--spiffe-id', ID, '--outbound', '127.0.0.1:15001=catalogue:8080@spiffe://Example.org/x'],
      /trust domain characters are limited to lowercase letters/,
    );
    await usageError(
      ['--spiffe-id', ID, '--outbound', '127.0.0.1:0=catalogue:8080@spiffe://example.org/x'],
      /port "0"/,
    );
  });

  it('inbound needs --allow, and --allow needs an inbound', async () => {
    await usageError(
      ['--spiffe-id', ID, '--inbound', '0.0.0.0:8443=127.0.0.1:8080'],
      /--inbound needs at least one --allow/,
    );
    await usageError(
      ['--spiffe-id', ID, '--outbound', OUTBOUND, '--allow', 'spiffe://example.org/a'],
      /--allow applies to --inbound listeners, and none is given/,
    );
    await usageError(
      ['--spiffe-id', ID, '--inbound', '0.0.0.0:8443', '--allow', 'spiffe://example.org/a'],
      /--inbound "0.0.0.0:8443": no "="/,
    );
    await usageError(
      ['--spiffe-id', ID, '--inbound', '0.0.0.0:8443=127.0.0.1:8080', '--allow', 'example.org/a'],
      /--allow: spiffeid: invalid SPIFFE ID "example.org\/a": scheme is missing or invalid/,
    );
  });

  it('refuses missing or contradictory flags', async () => {
    await usageError(['--outbound', OUTBOUND], /--spiffe-id is required/);
    await usageError(['--spiffe-id', ID], /give at least one --outbound \(e.g. .*\) or --inbound/);
    await usageError(
      ['--spiffe-id', ID, '--outbound', OUTBOUND, '--federated', '--bundle-name', 'ROOTCA'],
      /give --federated \(bundle "ALL"\) or --bundle-name, not both/,
    );
    await usageError(
      ['--spiffe-id', ID, '--outbound', OUTBOUND, '--agent-socket', 'agent.sock'],
      /--agent-socket "agent.sock" must be an absolute path/,
    );
    await usageError(
      ['--spiffe-id', ID, '--outbound', OUTBOUND.replace('15001', '9901')],
      /127.0.0.1:9901 and 127.0.0.1:9901 are both listened on/,
    );
    await usageError(
      ['--spiffe-id', ID, '--outbound', OUTBOUND, '--inbound', '0.0.0.0:15001=127.0.0.1:8080', '--allow', ID],
      /127.0.0.1:15001 and 0.0.0.0:15001 are both listened on/,
    );
    await usageError(['--spiffe-id', ID, '--outbound', OUTBOUND, '--colour'], /Unknown option '--colour'/);
  });

  it('an unknown subcommand is a usage error; --help is not', async () => {
    const help = await bootstrap('--help');
    assert.equal(help.code, 0);
    assert.match(help.stdout, /--outbound LISTEN=UPSTREAM@SPIFFE_ID/);
    const r = await tessera('envoy', 'frobnicate');
    assert.equal(r.code, 2);
    assert.match(r.stderr, /tessera envoy: unknown command "frobnicate"/);
  });
});
