import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { isTesseraError, TesseraErrorCode } from '../common/errors.js';
import { type LookupAll, parseServerAddress, resolveServers } from './server-address.js';

/** A resolver answering from a table, recording what it was asked. */
function fakeDns(table: Record<string, string[]>): LookupAll & { asked: string[] } {
  const asked: string[] = [];
  const lookup = async (host: string) => {
    asked.push(host);
    const found = table[host];
    if (found === undefined)
      throw Object.assign(new Error(`getaddrinfo ENOTFOUND ${host}`), { code: 'ENOTFOUND' });
    return found.map((address) => ({ address }));
  };
  return Object.assign(lookup, { asked });
}

describe('server addresses', () => {
  it('a name stands for every address it resolves to, each a server of its own, in order and once', async () => {
    const dns = fakeDns({
      'tessera.internal': ['10.0.0.1', '10.0.0.2', '2001:db8::3'],
      'other.internal': ['10.0.0.2', '10.0.0.9'],
    });
    const targets = ['tessera.internal', '[::1]:9443', '192.0.2.7', 'other.internal:8081'].map((i) =>
      parseServerAddress(i, 8081),
    );
    const r = await resolveServers(targets, dns);
    assert.deepEqual(r.addresses, [
      '10.0.0.1:8081',
      '10.0.0.2:8081',
      '[2001:db8::3]:8081',
      '[::1]:9443',
      '192.0.2.7:8081',
      '10.0.0.9:8081',
    ]);
    assert.deepEqual(r.failures, []);
    assert.deepEqual(
      dns.asked.sort(),
      ['other.internal', 'tessera.internal'],
      'IP literals are not looked up',
    );
  });

  it('a name that does not resolve stays in the list as name:port, and is reported', async () => {
    const dns = fakeDns({ 'up.internal': ['10.0.0.1'] });
    const r = await resolveServers(
      ['gone.internal:7000', 'up.internal'].map((i) => parseServerAddress(i, 8081)),
      dns,
    );
    assert.deepEqual(r.addresses, ['gone.internal:7000', '10.0.0.1:8081']);
    assert.deepEqual(r.failures, [{ item: 'gone.internal:7000', error: 'ENOTFOUND' }]);
  });

  it('parseServerAddress refuses what the configuration refuses, with a coded error', () => {
    assert.throws(
      () => parseServerAddress('::1', 8081),
      (e: unknown) =>
        isTesseraError(e, TesseraErrorCode.INVALID_ARGUMENT) &&
        e.message.startsWith('agent: server_address: "::1" is an IPv6 address without brackets'),
    );
  });
});
