import assert from 'node:assert/strict';
import { readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { makeTempDir } from '@tessera/testkit';
import { createAuditLog } from './audit.js';
import { createLogger } from './log.js';

const at = () => new Date('2026-01-01T00:00:00Z');

describe('logger', () => {
  it('filters by level and writes JSON or text lines with fields', () => {
    const lines: string[] = [];
    const json = createLogger({ level: 'info', format: 'json', write: (l) => lines.push(l), now: at }).with({
      subsystem: 'ca',
    });
    json.debug('hidden');
    json.info('prepared X.509 authority', { slot: 'B' });
    assert.deepEqual(
      lines.map((l) => JSON.parse(l)),
      [
        {
          time: '2026-01-01T00:00:00.000Z',
          level: 'info',
          msg: 'prepared X.509 authority',
          subsystem: 'ca',
          slot: 'B',
        },
      ],
    );
    const text: string[] = [];
    createLogger({ level: 'debug', format: 'text', write: (l) => text.push(l), now: at }).warn(
      'peer refused',
      { peer: 'spiffe://a/b', why: 'unexpected ID' },
    );
    assert.deepEqual(text, [
      '2026-01-01T00:00:00.000Z WARN  peer refused peer=spiffe://a/b why="unexpected ID"',
    ]);
  });
});

describe('audit log', () => {
  it('appends JSON lines to a 0600 file and refuses fields that would record a secret', async () => {
    const tmp = await makeTempDir('audit-');
    try {
      const path = join(tmp.path, 'audit.log');
      const audit = createAuditLog({ path, now: at });
      audit.record('join_token.used', {
        agent_id: 'spiffe://example.org/tessera/agent/join_token/x',
        token_sha256_prefix: 'ab12',
      });
      audit.record('svid.issued', {
        spiffe_id: 'spiffe://example.org/w',
        serial: '0a',
        expires_at: '2026-01-01T01:00:00Z',
        skipped: undefined,
      });
      assert.equal(statSync(path).mode & 0o777, 0o600);
      const events = readFileSync(path, 'utf8')
        .trim()
        .split('\n')
        .map((l) => JSON.parse(l));
      assert.deepEqual(
        events.map((e) => e.event),
        ['join_token.used', 'svid.issued'],
      );
      assert.equal(events[1].skipped, undefined);
      assert.throws(
        () => audit.record('join_token.refused', { token: 'secret-value' }),
        /would record a secret/,
      );
      assert.ok(!readFileSync(path, 'utf8').includes('secret-value'));
    } finally {
      await tmp.cleanup();
    }
  });
});
