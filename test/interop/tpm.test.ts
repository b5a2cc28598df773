// The tpm node attestor against a real software TPM: two swtpm instances, each manufactured by
// swtpm_setup with an EK certificate from its own local CA, driven by the agent through tpm2-tools
// (a TPM stack nobody here wrote), the server's side (MakeCredential, quote checks) in node:crypto.
import assert from 'node:assert/strict';
import { createHash, createPublicKey, X509Certificate } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { createWorkloadApiClient, parseTrustDomain } from '@tessera/spiffe';
import { parseAgentConfig } from '@tessera/tessera/dist/agent/config.js';
import { tpmEvidence } from '@tessera/tessera/dist/agent/node-attestation/tpm.js';
import { type RunningAgent, startAgent } from '@tessera/tessera/dist/agent/run.js';
import { createLogger } from '@tessera/tessera/dist/common/log.js';
import {
  encodeTpmPayload,
  encodeTpmResponse,
  parseTpmChallenge,
  parseTpmPayload,
  parseTpmResponse,
} from '@tessera/tessera/dist/common/tpm/tpm-wire.js';
import { startTestServer } from '@tessera/tessera/dist/server/api/test-server.test.util.js';
import { readEkCas, TpmAttestor } from '@tessera/tessera/dist/server/attestation/tpm/tpm.js';
import type { RunningServer } from '@tessera/tessera/dist/server/run.js';
import { makeTempDir, type TempDir } from '@tessera/testkit';
import { runCommand, TESSERA_BIN } from '../e2e/tessera-process.js';
import { type Swtpm, startSwtpm, tpmUnavailable } from './swtpm.js';

const quiet = createLogger({ level: 'error', write: () => undefined });
const td = parseTrustDomain('example.org');
const uid = process.getuid?.() ?? 0;

async function ekHashOf(tpm: Swtpm, alg = 'rsa'): Promise<string> {
  const r = await runCommand(process.execPath, [
    TESSERA_BIN,
    'agent',
    'tpm',
    'ek-hash',
    '--tcti',
    tpm.tcti,
    '--ek-algorithm',
    alg,
  ]);
  assert.equal(r.code, 0, r.stderr);
  return r.stdout.trim();
}

/** Expects `p` to reject with an ERR_ATTESTATION_FAILED whose message matches `re`. */
async function refused(p: Promise<unknown>, re: RegExp): Promise<void> {
  await assert.rejects(p, (err: Error & { code?: string }) => {
    assert.equal(err.code, 'ERR_ATTESTATION_FAILED', err.message);
    assert.match(err.message, re);
    return true;
  });
}

if (!tpmUnavailable('tpm node attestation (swtpm)')) {
  describe('tpm node attestation with swtpm and tpm2-tools', () => {
    let tmp: TempDir;
    let tpmA: Swtpm;
    let tpmB: Swtpm;
    let hashA: string;
    let hashB: string;
    let byHash: RunningServer;
    let byCa: RunningServer;
    const agents: RunningAgent[] = [];
    // PCR 7 of TPM A is extended once, so its quoted value is known and not all zeros.
    const measured = createHash('sha256').update('tessera tpm test').digest();
    const pcr7 = createHash('sha256')
      .update(Buffer.concat([Buffer.alloc(32), measured]))
      .digest('hex');

    before(async () => {
      tmp = await makeTempDir('tpm-');
      [tpmA, tpmB] = await Promise.all([
        startSwtpm(join(tmp.path, 'a'), { ekCertificate: true }),
        startSwtpm(join(tmp.path, 'b'), { ekCertificate: true }),
      ]);
      await tpmA.tool('tpm2_pcrextend', [`7:sha256=${measured.toString('hex')}`]);
      hashA = await ekHashOf(tpmA);
      hashB = await ekHashOf(tpmB);
      byHash = await startTestServer(join(tmp.path, 's1'), [
        `node_attestors: { tpm: { ek_hashes: [${hashA}], pcrs: [0, 7] } }`,
      ]);
      byCa = await startTestServer(join(tmp.path, 's2'), [
        `node_attestors: { tpm: { ek_ca_path: ${tpmA.ekIssuerPath} } }`,
      ]);
    });
    after(async () => {
      for (const a of agents) await a.stop();
      await byHash?.stop();
      await byCa?.stop();
      await tpmA?.stop();
      await tpmB?.stop();
      await tmp?.cleanup();
    });

    const agentOn = async (server: RunningServer, tpm: Swtpm, name: string) => {
      const agent = await startAgent(
        parseAgentConfig(
          [
            'trust_domain: example.org',
            'server_address: 127.0.0.1',
            `server_port: ${server.agentApiPort}`,
            'insecure_bootstrap: true',
            `socket_path: ${tmp.path}/${name}.sock`,
            `data_dir: ${tmp.path}/${name}`,
            'health: { port: 0 }',
            `node_attestor: { tpm: { tcti: "${tpm.tcti}" } }`,
          ].join('\n'),
        ),
        { logger: quiet },
      );
      agents.push(agent);
      return agent;
    };

    it('tessera agent tpm ek-hash prints the SHA-256 of the EK SubjectPublicKeyInfo, as tpm2_readpublic and a DER digest give it', async () => {
      await tpmA.tool('tpm2_createek', ['-c', join(tmp.path, 'ek.ctx'), '-G', 'rsa']);
      await tpmA.tool('tpm2_readpublic', [
        '-c',
        join(tmp.path, 'ek.ctx'),
        '-f',
        'pem',
        '-o',
        join(tmp.path, 'ek.pem'),
      ]);
      await tpmA.tool('tpm2_flushcontext', ['-t']);
      const spki = createPublicKey(readFileSync(join(tmp.path, 'ek.pem'))).export({
        type: 'spki',
        format: 'der',
      });
      assert.match(hashA, /^[0-9a-f]{64}$/);
      assert.equal(hashA, createHash('sha256').update(spki).digest('hex'));
      assert.notEqual(hashA, hashB);
    });

    it('an EK in ek_hashes attests: the agent gets its SVID (…/tpm/<EK hash>, PCR selectors from a quote) and serves an entry given to a tpm:ek_hash node alias', async () => {
      await byHash.datastore.createEntry({
        spiffeId: 'spiffe://example.org/tpm-nodes',
        parentId: 'spiffe://example.org/tessera/server',
        selectors: [{ type: 'tpm', value: `ek_hash:${hashA}` }],
      });
      await byHash.datastore.createEntry({
        spiffeId: 'spiffe://example.org/on-tpm',
        parentId: 'spiffe://example.org/tpm-nodes',
        selectors: [{ type: 'unix', value: `uid:${uid}` }],
      });
      const agent = await agentOn(byHash, tpmA, 'a-hash');
      const id = `spiffe://example.org/tessera/agent/tpm/${hashA}`;
      assert.equal(agent.manager.id, id);
      const stored = await byHash.datastore.getAgent(id);
      assert.deepEqual(stored?.selectors.map((s) => `${s.type}:${s.value}`).sort(), [
        `tpm:ek_hash:${hashA}`,
        `tpm:pcr:sha256:0:${'0'.repeat(64)}`,
        `tpm:pcr:sha256:7:${pcr7}`,
      ]);
      const client = createWorkloadApiClient({ address: `unix://${agent.socketPath}` });
      try {
        const ctx = await client.fetchX509Context();
        assert.deepEqual(
          ctx.svids.map((s) => s.id.toString()),
          ['spiffe://example.org/on-tpm'],
        );
      } finally {
        client.close();
      }
    });

    it('an EK not in ek_hashes is refused, the agent told which rule failed', async () => {
      await assert.rejects(agentOn(byHash, tpmB, 'b-hash'), (err: Error) => {
        assert.match(
          err.message,
          new RegExp(`tpm: the TPM is not trusted: EK hash ${hashB} is not in ek_hashes`),
        );
        return true;
      });
      assert.equal(
        await byHash.datastore.getAgent(`spiffe://example.org/tessera/agent/tpm/${hashB}`),
        undefined,
      );
    });

    it('an EK certificate issued by a CA of ek_ca_path attests, with tpm:ek_ca selectors', async () => {
      const agent = await agentOn(byCa, tpmA, 'a-ca');
      const id = `spiffe://example.org/tessera/agent/tpm/${hashA}`;
      assert.equal(agent.manager.id, id);
      const [ca] = readEkCas(tpmA.ekIssuerPath as string);
      const fingerprint = createHash('sha256')
        .update(ca?.raw ?? '')
        .digest('hex');
      assert.deepEqual(
        (await byCa.datastore.getAgent(id))?.selectors.map((s) => `${s.type}:${s.value}`).sort(),
        [
          `tpm:ek_ca:fingerprint:${fingerprint}`,
          'tpm:ek_ca:subject:CN=swtpm-localca',
          `tpm:ek_hash:${hashA}`,
        ],
      );
    });

    it('the EK certificate is read from its NV index, or from ek_certificate_path (PEM) when given', async () => {
      const fromNv = parseTpmPayload((await tpmEvidence({ tcti: tpmA.tcti, ek_algorithm: 'rsa' })).payload);
      assert.ok(fromNv.ekCertificate !== undefined);
      const pem = join(tmp.path, 'ek-cert.pem');
      writeFileSync(pem, new X509Certificate(fromNv.ekCertificate).toString());
      const fromFile = parseTpmPayload(
        (await tpmEvidence({ tcti: tpmA.tcti, ek_algorithm: 'rsa', ek_certificate_path: pem })).payload,
      );
      assert.deepEqual(fromFile.ekCertificate, fromNv.ekCertificate);
      assert.deepEqual(fromFile.ekPublic, fromNv.ekPublic);
    });

    it("an EK certificate from another CA is refused (ek_ca_path holds TPM A's CA, not B's)", async () => {
      await assert.rejects(agentOn(byCa, tpmB, 'b-ca'), (err: Error) => {
        assert.match(
          err.message,
          /tpm: the TPM is not trusted: its EK certificate \(issuer CN=swtpm-localca\) is not issued by a CA of ek_ca_path/,
        );
        return true;
      });
      // The root above the issuing CA is not enough: ek_ca_path must hold the CA that issued the EK certificate.
      const rootOnly = new TpmAttestor(td, {
        ekHashes: [],
        ekCas: readEkCas(tpmA.ekRootPath as string),
        pcrs: [],
      });
      const a = await tpmEvidence({ tcti: tpmA.tcti, ek_algorithm: 'rsa' });
      await refused(
        rootOnly.attest(a.payload, () => assert.fail('no challenge for an untrusted EK'), new Date()),
        /is not issued by a CA of ek_ca_path/,
      );
    });

    it("an EK certificate of another TPM is refused: its key is not the EK's", async () => {
      const attestor = new TpmAttestor(td, {
        ekHashes: [],
        ekCas: readEkCas(tpmA.ekIssuerPath as string),
        pcrs: [],
      });
      const a = parseTpmPayload((await tpmEvidence({ tcti: tpmA.tcti, ek_algorithm: 'rsa' })).payload);
      const b = parseTpmPayload((await tpmEvidence({ tcti: tpmB.tcti, ek_algorithm: 'rsa' })).payload);
      const forged = encodeTpmPayload({
        ekPublic: b.ekPublic,
        ekCertificate: a.ekCertificate as Buffer,
        akPublic: b.akPublic,
      });
      await refused(
        attestor.attest(forged, () => assert.fail('no challenge for a mismatched certificate'), new Date()),
        new RegExp(`is for another key than the EK sent \\(EK hash ${hashB}\\)`),
      );
    });

    it("a credential made for TPM A's EK cannot be activated by TPM B, and B's answer is refused", async () => {
      const attestor = new TpmAttestor(td, { ekHashes: [hashA], ekCas: [], pcrs: [] });
      const a = parseTpmPayload((await tpmEvidence({ tcti: tpmA.tcti, ek_algorithm: 'rsa' })).payload);
      const b = await tpmEvidence({ tcti: tpmB.tcti, ek_algorithm: 'rsa' });
      // Holding TPM B, claim A's (public) EK with B's AK.
      const claim = encodeTpmPayload({ ekPublic: a.ekPublic, akPublic: parseTpmPayload(b.payload).akPublic });
      let activation: unknown;
      await refused(
        attestor.attest(
          claim,
          async (challenge) => {
            try {
              return await (b.respond as (c: Uint8Array) => Promise<Uint8Array>)(challenge);
            } catch (err) {
              activation = err;
              return encodeTpmResponse({ secret: Buffer.alloc(32, 7) });
            }
          },
          new Date(),
        ),
        /tpm: the credential activation answer is wrong/,
      );
      assert.match(String(activation), /tpm2_activatecredential failed/);
    });

    it('a recorded answer does not answer a new challenge (replay)', async () => {
      const attestor = new TpmAttestor(td, { ekHashes: [hashA], ekCas: [], pcrs: [7] });
      const ev = await tpmEvidence({ tcti: tpmA.tcti, ek_algorithm: 'rsa' });
      const respond = ev.respond as (c: Uint8Array) => Promise<Uint8Array>;
      let first: Uint8Array | undefined;
      let recorded: Uint8Array | undefined;
      const ok = await attestor.attest(
        ev.payload,
        async (c) => {
          first = c;
          recorded = await respond(c);
          return recorded;
        },
        new Date(),
      );
      assert.equal(ok.spiffeId, `spiffe://example.org/tessera/agent/tpm/${hashA}`);
      let second: Uint8Array | undefined;
      await refused(
        attestor.attest(
          ev.payload,
          async (c) => {
            second = c;
            return recorded as Uint8Array;
          },
          new Date(),
        ),
        /the credential activation answer is wrong/,
      );
      const [c1, c2] = [parseTpmChallenge(first as Uint8Array), parseTpmChallenge(second as Uint8Array)];
      assert.notDeepEqual(c1.encryptedSecret, c2.encryptedSecret);
      assert.notDeepEqual(c1.nonce, c2.nonce);
      // The recorded quote with a fresh, correctly activated secret: still refused, by its nonce.
      await refused(
        attestor.attest(
          ev.payload,
          async (c) => {
            const fresh = parseTpmResponse(await respond(c));
            const old = parseTpmResponse(recorded as Uint8Array);
            return encodeTpmResponse({
              secret: fresh.secret,
              ...(old.quote === undefined ? {} : { quote: old.quote }),
            });
          },
          new Date(),
        ),
        /the quote .*: the quote is not over this attestation's nonce/,
      );
    });

    it('PCR values that are not the ones the TPM quoted are refused', async () => {
      const attestor = new TpmAttestor(td, { ekHashes: [hashA], ekCas: [], pcrs: [7] });
      const ev = await tpmEvidence({ tcti: tpmA.tcti, ek_algorithm: 'rsa' });
      await refused(
        attestor.attest(
          ev.payload,
          async (c) => {
            const r = parseTpmResponse(await (ev.respond as (c: Uint8Array) => Promise<Uint8Array>)(c));
            const q = r.quote;
            assert.ok(q !== undefined);
            assert.equal(q.pcrValues[0]?.toString('hex'), pcr7);
            return encodeTpmResponse({ secret: r.secret, quote: { ...q, pcrValues: [Buffer.alloc(32)] } });
          },
          new Date(),
        ),
        /the PCR values sent do not match the digest the TPM quoted/,
      );
    });

    it('an AK that is not a restricted signing key is refused before any challenge', async () => {
      const attestor = new TpmAttestor(td, { ekHashes: [hashA], ekCas: [], pcrs: [] });
      const p = parseTpmPayload((await tpmEvidence({ tcti: tpmA.tcti, ek_algorithm: 'rsa' })).payload);
      const ak = Buffer.from(p.akPublic);
      // TPM2B_PUBLIC: size(2) type(2) nameAlg(2) objectAttributes(4): clear `restricted` (bit 16).
      ak.writeUInt32BE(ak.readUInt32BE(6) & ~(1 << 16), 6);
      await refused(
        attestor.attest(
          encodeTpmPayload({ ekPublic: p.ekPublic, akPublic: ak }),
          () => assert.fail('no challenge for an unrestricted AK'),
          new Date(),
        ),
        /the AK \(attributes 0x[0-9a-f]{8}\) is not a restricted signing key/,
      );
    });

    it('an ECC (NIST P-256) EK attests too: the credential is made by ECDH and activated by the TPM, the quote is ECDSA', async () => {
      const hash = await ekHashOf(tpmA, 'ecc');
      assert.notEqual(hash, hashA);
      const attestor = new TpmAttestor(td, { ekHashes: [hash], ekCas: [], pcrs: [7] });
      const ev = await tpmEvidence({ tcti: tpmA.tcti, ek_algorithm: 'ecc' });
      const r = await attestor.attest(
        ev.payload,
        async (c) => (ev.respond as (c: Uint8Array) => Promise<Uint8Array>)(c),
        new Date(),
      );
      assert.equal(r.spiffeId, `spiffe://example.org/tessera/agent/tpm/${hash}`);
      assert.deepEqual(
        r.selectors.map((s) => `${s.type}:${s.value}`),
        [`tpm:ek_hash:${hash}`, `tpm:pcr:sha256:7:${pcr7}`],
      );
    });
  });
}
