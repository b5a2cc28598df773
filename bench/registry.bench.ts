// npm run bench: the registry on SQLite — batch creation rate, full paginated listing of 100,000
// entries, and the process's resident memory with them loaded. These have goals but no reference.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { openSqliteDatastore } from '@tessera/tessera/dist/server/datastore/sqlite.js';
import type { EntryInput } from '@tessera/tessera/dist/server/datastore/types.js';

const dir = mkdtempSync(join(tmpdir(), 'registry-bench-'));
const ds = await openSqliteDatastore(join(dir, 'bench.db'));
const entry = (i: number): EntryInput => ({
  spiffeId: `spiffe://example.org/ns/team-${i % 100}/sa/svc-${i}`,
  parentId: `spiffe://example.org/tessera/agent/join_token/node-${i % 500}`,
  selectors: [
    { type: 'unix', value: `uid:${1000 + (i % 50)}` },
    { type: 'unix', value: `path:/opt/svc-${i}/bin/run` },
  ],
  dnsNames: [`svc-${i}.example.org`],
  metadata: { owner: `team-${i % 100}` },
});

const BATCH = 500;
async function create(from: number, to: number): Promise<number> {
  const t0 = process.hrtime.bigint();
  for (let i = from; i < to; i += BATCH) {
    await ds.createEntries(Array.from({ length: Math.min(BATCH, to - i) }, (_, k) => entry(i + k)));
  }
  return Number(process.hrtime.bigint() - t0) / 1e9;
}

const createSeconds = await create(0, 10_000);
await create(10_000, 100_000);
const t0 = process.hrtime.bigint();
let listed = 0;
let token: string | undefined;
do {
  const page = await ds.listEntries({ pageSize: 1000, ...(token === undefined ? {} : { pageToken: token }) });
  listed += page.entries.length;
  token = page.nextPageToken;
} while (token !== undefined);
const listSeconds = Number(process.hrtime.bigint() - t0) / 1e9;
const rssMb = process.memoryUsage().rss / 1024 / 1024;
await ds.close();
rmSync(dir, { recursive: true, force: true });

const row = (name: string, opsPerSec: number, goal: string, pass: boolean) => ({
  name,
  opsPerSec,
  goal,
  pass,
});
const rows = [
  row(
    `create 10,000 entries in batches of ${BATCH} (entries/s)`,
    10_000 / createSeconds,
    '>= 5,000/s',
    10_000 / createSeconds >= 5000,
  ),
  row(
    `list ${listed.toLocaleString('en-US')} entries, pages of 1,000 (seconds)`,
    listSeconds,
    '< 2 s',
    listSeconds < 2,
  ),
  row('resident memory with 100,000 entries listed (MB)', rssMb, '< 300 MB', rssMb < 300),
];
console.log('\nRegistry on SQLite');
for (const r of rows)
  console.log(
    `${r.name.padEnd(58)} ${r.opsPerSec.toFixed(r.opsPerSec < 10 ? 2 : 0).padStart(10)}  goal ${r.goal.padEnd(11)} ${r.pass ? 'PASS' : 'FAIL'}`,
  );
if (rows.some((r) => !r.pass)) process.exitCode = 1;
