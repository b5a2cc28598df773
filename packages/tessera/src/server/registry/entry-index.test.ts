// The entry index against a real SQLite datastore: what it holds after changes told while it loads.
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { makeTempDir, type TempDir } from '@tessera/testkit';
import type { SqlDatastore } from '../datastore/sql-datastore.js';
import { openSqliteDatastore } from '../datastore/sqlite.js';
import { EntryIndex } from './entry-index.js';

const PARENT = 'spiffe://example.org/tessera/agent/join_token/index';
const entry = (path: string) => ({
  spiffeId: `spiffe://example.org${path}`,
  parentId: PARENT,
  selectors: [{ type: 'unix', value: 'uid:1000' }],
});

describe('EntryIndex', () => {
  let tmp: TempDir;
  let ds: SqlDatastore;
  before(async () => {
    tmp = await makeTempDir('index-');
    ds = await openSqliteDatastore(join(tmp.path, 'ds.db'));
  });
  after(async () => {
    await ds.close();
    await tmp.cleanup();
  });

  it('changes committed while its snapshot is read are applied after it, never undone by it', async () => {
    const gone = await ds.createEntry(entry('/gone'));
    const changed = await ds.createEntry(entry('/changed'));
    const read = ds.snapshotEntries.bind(ds);
    // The snapshot is read, then (before the index has it) a delete, an update and a create commit.
    ds.snapshotEntries = async () => {
      const snapshot = await read();
      await ds.deleteEntry(gone.id);
      await ds.updateEntry(changed.id, changed.revision, { ...entry('/changed'), hint: 'new' });
      await ds.createEntry(entry('/new'));
      return snapshot;
    };
    let index: EntryIndex | undefined;
    try {
      index = await EntryIndex.load(ds, 'spiffe://example.org/tessera/server');
    } finally {
      ds.snapshotEntries = read;
    }
    try {
      assert.equal(index.get(gone.id), undefined, 'the deleted entry is not brought back by the snapshot');
      assert.equal(index.get(changed.id)?.hint, 'new');
      assert.deepEqual(
        index
          .children(PARENT)
          .map((e) => e.spiffeId)
          .sort(),
        ['spiffe://example.org/changed', 'spiffe://example.org/new'],
      );
      assert.equal(index.revision, ds.revision);
    } finally {
      index.close();
    }
  });
});
