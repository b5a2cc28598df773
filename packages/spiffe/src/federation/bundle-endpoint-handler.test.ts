import assert from 'node:assert/strict';
import { createServer, request, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, describe, it } from 'node:test';
import { TestCa } from '@tessera/testkit';
import { parseSpiffeBundle, SpiffeBundle } from '../bundle/spiffe-bundle.js';
import { parseTrustDomain } from '../spiffeid/trust-domain.js';
import { createBundleEndpointHandler } from './bundle-endpoint-handler.js';

const td = parseTrustDomain('example.org');
const ca = TestCa.create({ trustDomain: 'example.org' });

interface Answer {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: string;
}

function call(port: number, method: string, path = '/'): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port, method, path }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () =>
        resolve({
          status: res.statusCode ?? 0,
          headers: res.headers,
          body: Buffer.concat(chunks).toString('utf8'),
        }),
      );
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end();
  });
}

describe('createBundleEndpointHandler', () => {
  let current: SpiffeBundle | undefined = new SpiffeBundle({
    trustDomain: td,
    x509Authorities: [ca.root],
    sequenceNumber: 2n ** 63n + 1n,
    refreshHint: 300,
  });
  const logged: Array<{ message: string; fields: Record<string, unknown> | undefined }> = [];
  let server: Server;
  let port: number;
  before(async () => {
    const handler = createBundleEndpointHandler(
      () => {
        if (current === undefined) throw new Error('no bundle yet');
        return current;
      },
      { logger: { error: (message, fields) => logged.push({ message, fields }) } },
    );
    server = createServer(handler);
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    port = (server.address() as AddressInfo).port;
  });
  after(() => new Promise<void>((resolve) => server.close(() => resolve())));

  it('answers GET with the current bundle as application/json', async () => {
    const answer = await call(port, 'GET', '/anything');
    assert.equal(answer.status, 200);
    assert.equal(answer.headers['content-type'], 'application/json');
    assert.equal(answer.body, current?.marshal());
    const parsed = parseSpiffeBundle(td, answer.body);
    assert.ok(current !== undefined && parsed.equals(current));
    assert.equal(parsed.sequenceNumber, 2n ** 63n + 1n);
  });

  it('serves the newest bundle on each request', async () => {
    const next = current?.with({ sequenceNumber: 9n });
    current = next;
    const answer = await call(port, 'GET');
    assert.equal(parseSpiffeBundle(td, answer.body).sequenceNumber, 9n);
  });

  it('answers other methods with 405', async () => {
    for (const method of ['POST', 'PUT', 'DELETE', 'HEAD']) {
      const answer = await call(port, method);
      assert.equal(answer.status, 405, method);
      assert.equal(answer.headers.allow, 'GET');
      if (method !== 'HEAD') assert.equal(answer.body, 'method is not allowed\n');
    }
  });

  it('answers 500 and logs when the source fails', async () => {
    const saved = current;
    current = undefined;
    try {
      const answer = await call(port, 'GET');
      assert.equal(answer.status, 500);
      assert.equal(answer.body, 'unable to serve bundle\n');
      assert.equal(logged.length, 1);
      assert.match(logged[0]?.message ?? '', /cannot serve the bundle/);
      assert.equal(logged[0]?.fields?.error, 'no bundle yet');
    } finally {
      current = saved;
    }
  });

  it('refuses a source that is not a function', () => {
    assert.throws(() => createBundleEndpointHandler('bundle' as never), TypeError);
  });
});
