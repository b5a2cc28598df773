// CA rotation as an agent lives it, on second-scale TTLs: the next CA reaches the agent's push
// stream before it signs anything, so an SVID signed after activation verifies against the bundle
// the agent fetched before — checked by our verifier and by `openssl verify`.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { generateKeyPairSync, X509Certificate } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { connect as tlsConnect } from 'node:tls';
import {
  parseSpiffeBundle,
  parseSpiffeId,
  parseTrustDomain,
  verifyX509Svid,
  X509Svid,
} from '@tessera/spiffe';
import { createCsr, makeTempDir, type TempDir } from '@tessera/testkit';
import { ServerClient } from '../../agent/server-client.js';
import type { SyncResponse } from '../../gen/tessera/agent/v1/agent_pb.js';
import type { RunningServer } from '../run.js';
import { startTestServer } from './test-server.test.util.js';

const td = parseTrustDomain('example.org');

describe('CA rotation with second-scale TTLs', () => {
  let tmp: TempDir;
  let server: RunningServer;
  const clients: ServerClient[] = [];

  before(async () => {
    tmp = await makeTempDir('rotation-');
    server = await startTestServer(tmp.path, ['ca: { ttl: 12s }']);
  });

  after(async () => {
    for (const c of clients) c.close();
    await server?.stop();
    await tmp?.cleanup();
  });

  it('an SVID signed after activation verifies against the bundle fetched before it', async () => {
    const activated = new Promise<void>((resolve) =>
      server.authority.onRotation((kind, step) => {
        if (kind === 'x509' && step === 'activated') resolve();
      }),
    );
    const firstCa = server.authority.x509.certificate.fingerprint256;
    const bootstrap = (await server.datastore.getBundle(td))?.x509Bundle();
    assert.ok(bootstrap);
    const token = 'rotation-token-0123456789';
    await server.datastore.createJoinToken({
      token,
      expiresAt: new Date(Date.now() + 60_000),
      agentName: 'rot',
    });
    const key = generateKeyPairSync('ec', { namedCurve: 'P-256' });
    const address = `127.0.0.1:${server.agentApiPort}`;
    const attestClient = new ServerClient({ address, trustDomain: td, bundle: bootstrap });
    clients.push(attestClient);
    const r = await attestClient.attest({
      type: 'join_token',
      payload: Buffer.from(token),
      csr: createCsr(key.publicKey, key.privateKey),
    });
    const entry = await server.datastore.createEntry({
      spiffeId: 'spiffe://example.org/rotating',
      parentId: r.spiffeId,
      selectors: [{ type: 'unix', value: 'uid:1' }],
    });
    const agent = new ServerClient({
      address,
      trustDomain: td,
      bundle: bootstrap,
      svid: new X509Svid(
        parseSpiffeId(r.spiffeId),
        r.svidChain.map((d) => new X509Certificate(d)),
        key.privateKey,
      ),
    });
    clients.push(agent);

    // The push stream delivers the bundle holding the prepared (not yet active) CA.
    const stream = agent.sync();
    const withNext = await new Promise<SyncResponse>((resolve, reject) => {
      stream.on('data', (m: SyncResponse) => {
        if (m.bundle === undefined) return;
        const b = parseSpiffeBundle(td, Buffer.from(m.bundle.spiffeBundle).toString());
        if (b.x509Authorities.length === 2) resolve(m);
      });
      stream.on('error', reject);
    });
    assert.equal(server.authority.x509.certificate.fingerprint256, firstCa, 'the new CA does not sign yet');
    const fetchedBefore = parseSpiffeBundle(td, Buffer.from(withNext.bundle?.spiffeBundle ?? []).toString());

    await activated;
    assert.notEqual(server.authority.x509.certificate.fingerprint256, firstCa);
    const w = generateKeyPairSync('ec', { namedCurve: 'P-256' });
    // The agent SVID was signed by the first CA, which is still in the bundle: the call is accepted.
    const res = await agent.batchNewX509Svid([
      { entryId: entry.id, csr: createCsr(w.publicKey, w.privateKey) },
    ]);
    const result = res.results[0];
    assert.equal(result?.code, 0, result?.message);
    const chain = result?.certChain ?? [];
    const leaf = new X509Certificate(chain[0] as Uint8Array);
    assert.ok(leaf.checkIssued(server.authority.x509.certificate), 'signed by the newly active CA');
    assert.equal(
      verifyX509Svid(chain, fetchedBefore.x509Bundle()).id.toString(),
      'spiffe://example.org/rotating',
    );

    writeFileSync(
      join(tmp.path, 'bundle.pem'),
      fetchedBefore.x509Authorities.map((c) => c.toString()).join(''),
    );
    writeFileSync(join(tmp.path, 'svid.pem'), leaf.toString());
    const out = execFileSync(
      'openssl',
      ['verify', '-CAfile', join(tmp.path, 'bundle.pem'), join(tmp.path, 'svid.pem')],
      {
        encoding: 'utf8',
      },
    );
    assert.match(out, /svid.pem: OK/);
    stream.cancel();
    const audit = readFileSync(join(tmp.path, 'data', 'audit.log'), 'utf8');
    assert.match(
      audit,
      /"event":"authority.prepared","kind":"x509","authority_id":"[0-9a-f]{40}","trigger":"schedule"/,
    );
    assert.match(
      audit,
      /"event":"authority.activated","kind":"x509","authority_id":"[0-9a-f]{40}","trigger":"schedule"/,
    );
  });
});

describe('the server SVID on the agent API', () => {
  let tmp: TempDir;
  let server: RunningServer;

  before(async () => {
    tmp = await makeTempDir('server-svid-');
    // The CA's rotation loop runs every 10 s here; the server SVID lives 2 s.
    server = await startTestServer(tmp.path, ['x509_svid_ttl: 2s']);
  });

  after(async () => {
    await server?.stop();
    await tmp?.cleanup();
  });

  /** The certificate the agent API presents in a real TLS handshake. */
  const presented = () =>
    new Promise<X509Certificate>((resolve, reject) => {
      const socket = tlsConnect(
        { host: '127.0.0.1', port: server.agentApiPort, rejectUnauthorized: false, ALPNProtocols: ['h2'] },
        () => {
          const raw = socket.getPeerCertificate().raw;
          socket.destroy();
          resolve(new X509Certificate(raw));
        },
      );
      socket.on('error', reject);
    });

  it('is renewed at half-life even when its TTL is shorter than the rotation loop, and is never presented expired', async () => {
    const serials = new Set<string>();
    const end = Date.now() + 5_000;
    while (Date.now() < end) {
      const cert = await presented();
      const now = Date.now();
      assert.ok(
        new Date(cert.validTo).getTime() > now,
        `the agent API presented an expired SVID (serial ${cert.serialNumber}, notAfter ${cert.validTo})`,
      );
      assert.equal(cert.subjectAltName, 'URI:spiffe://example.org/tessera/server');
      serials.add(cert.serialNumber);
      await new Promise((r) => setTimeout(r, 100));
    }
    // 5 s at a 2 s TTL renewed each second: at least four SVIDs were presented.
    assert.ok(serials.size >= 4, `only ${serials.size} server SVIDs were presented in 5 s`);
  });
});

describe('the server SVID after an operator activates a new CA', () => {
  let tmp: TempDir;
  let server: RunningServer;

  before(async () => {
    tmp = await makeTempDir('server-svid-activate-');
    // Default TTLs: nothing but the activation itself would re-issue the server SVID within the test.
    server = await startTestServer(tmp.path);
  });

  after(async () => {
    await server?.stop();
    await tmp?.cleanup();
  });

  const presented = () =>
    new Promise<X509Certificate>((resolve, reject) => {
      const socket = tlsConnect(
        { host: '127.0.0.1', port: server.agentApiPort, rejectUnauthorized: false, ALPNProtocols: ['h2'] },
        () => {
          const raw = socket.getPeerCertificate().raw;
          socket.destroy();
          resolve(new X509Certificate(raw));
        },
      );
      socket.on('error', reject);
    });

  it('is re-issued by the new CA at once, so a quick taint and revoke of the old one cuts no agent off', async () => {
    const old = server.authority.x509.certificate;
    assert.ok((await presented()).checkIssued(old));
    await server.authority.prepare('x509');
    await server.authority.activate('x509');
    const next = server.authority.x509.certificate;
    assert.notEqual(next.fingerprint256, old.fingerprint256);
    // Not at the rotation loop's next tick (every 10 s): the next handshake already presents it.
    const cert = await presented();
    assert.ok(
      cert.checkIssued(next) && cert.verify(next.publicKey),
      `presented ${cert.serialNumber}, issued by ${cert.issuer}`,
    );
  });
});
