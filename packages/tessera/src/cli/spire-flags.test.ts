// SPIRE's single-dash camelCase flags on tessera's admin commands, against a real server.
import assert from 'node:assert/strict';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { makeTempDir, type TempDir } from '@tessera/testkit';
import { startTestServer } from '../server/api/test-server.test.util.js';
import type { RunningServer } from '../server/run.js';
import { spireFlags } from './admin-client.js';
import { tessera } from './main.test.util.js';

describe("SPIRE's flag spellings", () => {
  let tmp: TempDir;
  let server: RunningServer;
  let sock: string;
  before(async () => {
    tmp = await makeTempDir('spire-flags-');
    server = await startTestServer(tmp.path);
    sock = join(tmp.path, 'admin.sock');
  });
  after(async () => {
    await server?.stop();
    await tmp?.cleanup();
  });

  it('maps -camelCase to --kebab-case where the command has the flag', () => {
    assert.deepEqual(
      spireFlags(
        [
          '-spiffeID',
          'a',
          '-parentID=b',
          '-socketPath',
          's',
          '-x509SVIDTTL',
          '60',
          '-bundleEndpointURL',
          'u',
          '-h',
        ],
        ['spiffe-id', 'parent-id', 'socket', 'x509-svid-ttl', 'bundle-endpoint-url'],
      ),
      [
        '--spiffe-id',
        'a',
        '--parent-id=b',
        '--socket',
        's',
        '--x509-svid-ttl',
        '60',
        '--bundle-endpoint-url',
        'u',
        '-h',
      ],
    );
  });

  it('entry create and show take -spiffeID, -parentID, -selector, -socketPath, -entryID as SPIRE does', async () => {
    const created = await tessera(
      'entry',
      'create',
      '-spiffeID',
      'spiffe://example.org/web',
      '-parentID',
      'spiffe://example.org/tessera/agent/join_token/web-1',
      '-selector',
      'unix:uid:1000',
      '-socketPath',
      sock,
      '-output',
      'json',
    );
    assert.equal(created.code, 0, created.stderr);
    const id =
      (JSON.parse(created.stdout) as { results: { entry: { id: string } }[] }).results[0]?.entry.id ?? '';
    const shown = await tessera('entry', 'show', '-entryID', id, '-socketPath', sock);
    assert.equal(shown.code, 0, shown.stderr);
    assert.match(shown.stdout, /spiffe:\/\/example\.org\/web/);
  });

  it('a SPIRE flag tessera does not have is a usage error listing the flags it has', async () => {
    const r = await tessera('entry', 'show', '-storeSVID', '-socketPath', sock);
    assert.equal(r.code, 2);
    assert.match(
      r.stderr,
      /unknown flag -storeSVID; this command's flags are --socket, --output, --entry-id/,
    );
  });

  it("the README's --data example (SPIRE's -data format) creates its entries", async () => {
    const readme = readFileSync(new URL('../../README.md', import.meta.url), 'utf8');
    const at = readme.indexOf("The `--data` file of `tessera entry create` is SPIRE's `-data` format");
    assert.ok(at >= 0, 'the README describes the --data format');
    const block = readme.slice(at).match(/```json\n([\s\S]*?)```/)?.[1];
    assert.ok(block !== undefined, 'with a JSON example');
    const file = join(tmp.path, 'entries.json');
    writeFileSync(file, block);
    const r = await tessera('entry', 'create', '--data', file, '--socket', sock, '--output', 'json');
    assert.equal(r.code, 0, `${r.stdout}${r.stderr}`);
    const made = (
      JSON.parse(r.stdout) as { results: { entry: { spiffe_id: string; selectors: unknown[] } }[] }
    ).results;
    assert.deepEqual(
      made.map((m) => [m.entry.spiffe_id, m.entry.selectors.length]),
      [
        ['spiffe://example.org/billing', 1],
        ['spiffe://example.org/db', 2],
      ],
    );
  });
});
