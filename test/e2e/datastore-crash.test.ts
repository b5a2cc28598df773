// kill -9 in the middle of writes: the datastore opens cleanly afterwards and every write that was
// acknowledged is there, complete (entry and its selectors).
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { openPostgresDatastore } from '@tessera/tessera/dist/server/datastore/postgres.js';
import { openSqliteDatastore } from '@tessera/tessera/dist/server/datastore/sqlite.js';
import type { Datastore } from '@tessera/tessera/dist/server/datastore/types.js';
import {
  makeTempDir,
  type PostgresCluster,
  postgresAvailable,
  startPostgres,
  type TempDir,
} from '@tessera/testkit';

const writer = fileURLToPath(new URL('../../e2e/fixtures/datastore-writer.mjs', import.meta.url));

/** Runs the writer, SIGKILLs it after `acks` acknowledged writes, returns the acknowledged IDs. */
async function writeThenKill(kind: string, target: string, acks: number): Promise<string[]> {
  const child = spawn(process.execPath, [writer, kind, target], { stdio: ['ignore', 'pipe', 'inherit'] });
  const ids: string[] = [];
  let buf = '';
  await new Promise<void>((resolve) => {
    child.stdout.setEncoding('utf8').on('data', (d: string) => {
      buf += d;
      const lines = buf.split('\n');
      buf = lines.pop() ?? '';
      ids.push(...lines);
      if (ids.length >= acks && !child.killed) {
        child.kill('SIGKILL');
        resolve();
      }
    });
  });
  const [, signal] = await once(child, 'exit');
  assert.equal(signal, 'SIGKILL');
  return ids;
}

async function checkAll(ds: Datastore, ids: string[]): Promise<void> {
  for (const id of ids) {
    const e = await ds.getEntry(id);
    assert.ok(e !== undefined, `acknowledged entry ${id} was lost`);
    assert.equal(e.selectors.length, 2, `entry ${id} lost its selectors`);
  }
}

describe('datastore survives kill -9', () => {
  let tmp: TempDir;
  before(async () => {
    tmp = await makeTempDir('crash-');
  });
  after(() => tmp.cleanup());

  it('SQLite: opens cleanly and keeps every acknowledged write', async () => {
    const path = join(tmp.path, 'crash.db');
    (await openSqliteDatastore(path)).close();
    const ids = await writeThenKill('sqlite', path, 300);
    const ds = await openSqliteDatastore(path);
    try {
      await checkAll(ds, ids);
      assert.ok((await ds.countEntries()) >= ids.length);
    } finally {
      await ds.close();
    }
  });

  if (postgresAvailable('kill -9 test')) {
    it('PostgreSQL: keeps every acknowledged write', async () => {
      const cluster: PostgresCluster = await startPostgres();
      try {
        (await openPostgresDatastore(cluster.connectionString)).close();
        const ids = await writeThenKill('postgres', cluster.connectionString, 300);
        const ds = await openPostgresDatastore(cluster.connectionString);
        try {
          await checkAll(ds, ids);
        } finally {
          await ds.close();
        }
      } finally {
        await cluster.stop();
      }
    });
  }
});
