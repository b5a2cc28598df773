import assert from 'node:assert/strict';
import { it } from 'node:test';
import { Metrics } from './metrics.js';

it('renders counters, gauges and scrape-time gauges in the Prometheus text format', async () => {
  const m = new Metrics();
  m.inc('tessera_svids_issued_total', 'SVIDs issued', { type: 'x509' });
  m.inc('tessera_svids_issued_total', 'SVIDs issued', { type: 'x509' }, 2);
  m.inc('tessera_svids_issued_total', 'SVIDs issued', { type: 'jwt' });
  m.set('tessera_ca_expiry_timestamp_seconds', 'CA expiry', 1_800_000_000, { kind: 'x509' });
  m.gaugeFn('tessera_entries', 'Registration entries', async () => 42);
  assert.equal(
    await m.render(),
    [
      '# HELP tessera_svids_issued_total SVIDs issued',
      '# TYPE tessera_svids_issued_total counter',
      'tessera_svids_issued_total{type="x509"} 3',
      'tessera_svids_issued_total{type="jwt"} 1',
      '# HELP tessera_ca_expiry_timestamp_seconds CA expiry',
      '# TYPE tessera_ca_expiry_timestamp_seconds gauge',
      'tessera_ca_expiry_timestamp_seconds{kind="x509"} 1800000000',
      '# HELP tessera_entries Registration entries',
      '# TYPE tessera_entries gauge',
      'tessera_entries 42',
      '',
    ].join('\n'),
  );
  assert.throws(() => m.set('tessera_svids_issued_total', 'x', 1), /is a counter/);
  assert.throws(() => m.inc('bad-name', 'x'), /invalid metric name/);
});
