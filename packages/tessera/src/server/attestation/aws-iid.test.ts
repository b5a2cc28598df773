// The aws_iid attestor on its own, against a real SQLite datastore, with documents signed by
// openssl as AWS signs them: what is accepted, each refusal and the check it names, and how trust on
// first use and replay refusal play together (the clock is passed in, so the replay window is moved).
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { parseTrustDomain } from '@tessera/spiffe';
import { makeTempDir, type TempDir, TestCa } from '@tessera/testkit';
import { isTesseraError, TesseraErrorCode } from '../../common/errors.js';
import type { SqlDatastore } from '../datastore/sql-datastore.js';
import { openSqliteDatastore } from '../datastore/sqlite.js';
import { AwsIidAttestor, type AwsIidAttestorOptions } from './aws-iid.js';
import {
  type AwsRegionSigner,
  createAwsRegionSigner,
  identityDocument,
  signIdentityDocument,
} from './aws-iid.test.util.js';
import { decodeSignature, parseSignedData } from './aws-iid-signature.js';

const td = parseTrustDomain('example.org');
const HOUR = 3600_000;
const noChallenge = async (): Promise<Uint8Array> => {
  throw new Error('aws_iid asks no challenge');
};

describe('aws_iid attestor', () => {
  let tmp: TempDir;
  let ds: SqlDatastore;
  let west: AwsRegionSigner;
  let east: AwsRegionSigner;
  let lookAlike: AwsRegionSigner;
  let instanceSeq = 0;

  before(async () => {
    tmp = await makeTempDir('aws-iid-');
    ds = await openSqliteDatastore(`${tmp.path}/ds.db`);
    const aws = TestCa.create({ trustDomain: 'aws.test', keyType: 'rsa-2048' });
    west = createAwsRegionSigner(tmp.path, 'us-west-2', 'us-west-2', aws);
    east = createAwsRegionSigner(tmp.path, 'us-east-1', 'us-east-1', aws);
    // Same subject, another CA and key: what someone who is not AWS can make.
    lookAlike = createAwsRegionSigner(tmp.path, 'us-west-2', 'look-alike');
  });
  after(async () => {
    await ds?.close();
    await tmp?.cleanup();
  });

  const attestor = (o: Partial<AwsIidAttestorOptions> = {}) =>
    new AwsIidAttestor({
      trustDomain: td,
      datastore: ds,
      accountIds: ['123456789012'],
      certificates: [west.certificate, east.certificate],
      regionCertificates: new Map(),
      allowReattestation: false,
      replayWindowMs: HOUR,
      ...o,
    });
  /** A fresh instance ID each time, so tests do not see each other's agents and documents. */
  const instance = () => `i-${(0x1000000000000000n + BigInt(++instanceSeq)).toString(16).padStart(17, '0')}`;
  const payload = (document: string, rsa2048: string) => Buffer.from(JSON.stringify({ document, rsa2048 }));
  const signed = (document: string, signer = west, options = {}) =>
    payload(document, signIdentityDocument(tmp.path, signer, document, options));
  const refusal = async (p: Promise<unknown>, message: RegExp) => {
    await assert.rejects(p, (err: unknown) => {
      assert.ok(isTesseraError(err, TesseraErrorCode.ATTESTATION_FAILED), String(err));
      assert.match(err.message, message);
      return true;
    });
  };

  it('accepts a document signed as AWS signs it, with the agent ID and selectors of the document', async () => {
    const id = instance();
    const doc = identityDocument({ instanceId: id });
    const sig = signIdentityDocument(tmp.path, west, doc);
    // The fixture has AWS's shape: BER with indefinite lengths, as the real rsa2048 endpoint serves.
    assert.ok(sig.startsWith('MIAGCSqGSIb3DQEHAqCAMIACAQEx'), sig.slice(0, 40));
    assert.equal(parseSignedData(decodeSignature(sig)).signedAttributes?.[0], 0x31);
    const r = await attestor().attest(payload(doc, sig), noChallenge, new Date());
    assert.equal(r.spiffeId, `spiffe://example.org/tessera/agent/aws_iid/123456789012/us-west-2/${id}`);
    assert.deepEqual(
      r.selectors.map((s) => `${s.type}:${s.value}`),
      [
        'aws_iid:account:id:123456789012',
        'aws_iid:az:us-west-2b',
        'aws_iid:image:id:ami-0abcdef1234567890',
        `aws_iid:instance:id:${id}`,
        'aws_iid:instance:type:t3.micro',
        'aws_iid:region:us-west-2',
      ],
    );
  });

  it('accepts a signature without signed attributes, and a detached one with the document beside it', async () => {
    const a = identityDocument({ instanceId: instance() });
    await attestor().attest(signed(a, west, { attributes: false }), noChallenge, new Date());
    const b = identityDocument({ instanceId: instance() });
    await attestor().attest(signed(b, west, { detached: true }), noChallenge, new Date());
  });

  it('refuses a signature by a certificate that is not configured (a look-alike of the region certificate)', async () => {
    const doc = identityDocument({ instanceId: instance() });
    await refusal(
      attestor().attest(signed(doc, lookAlike), noChallenge, new Date()),
      /^aws_iid: rsa2048 \(instance i-[0-9a-f]+, region us-west-2\): the signer \(serial [0-9A-F]+\) is none of the 2 configured AWS certificate\(s\)$/,
    );
  });

  it('refuses a tampered document: enveloped, detached, and a signature value changed', async () => {
    const id = instance();
    const doc = identityDocument({ instanceId: id, accountId: '123456789012' });
    const forged = doc.replace('t3.micro', 'm5.24xlarge');
    const sig = signIdentityDocument(tmp.path, west, doc);
    await refusal(
      attestor().attest(payload(forged, sig), noChallenge, new Date()),
      /^aws_iid: the document is not the one signed: it differs from the document inside the rsa2048 signature$/,
    );
    const detached = signIdentityDocument(tmp.path, west, doc, { detached: true });
    await refusal(
      attestor().attest(payload(forged, detached), noChallenge, new Date()),
      /the document is not the one signed \(its digest differs from the signed message digest\)$/,
    );
    // The RSA signature value itself changed by one bit.
    const der = decodeSignature(sig);
    const value = Buffer.from(parseSignedData(der).signerInfo.signature.buffer);
    const at = der.indexOf(value);
    der[at + 10] = (der[at + 10] as number) ^ 0x01;
    await refusal(
      attestor().attest(payload(doc, der.toString('base64')), noChallenge, new Date()),
      /: the signature does not verify with the AWS certificate .*CN=us-west-2/,
    );
  });

  it('refuses an account that is not in account_ids', async () => {
    const doc = identityDocument({ instanceId: instance(), accountId: '999988887777' });
    await refusal(
      attestor().attest(signed(doc), noChallenge, new Date()),
      /^aws_iid: account 999988887777 \(instance i-[0-9a-f]+\) is not in account_ids \(123456789012\)$/,
    );
  });

  it('with region_certificate_paths, verifies a region with its own certificate only', async () => {
    const regional = attestor({
      certificates: [],
      regionCertificates: new Map([
        ['us-west-2', [west.certificate]],
        ['us-east-1', [east.certificate]],
      ]),
    });
    const doc = identityDocument({ instanceId: instance() });
    await regional.attest(signed(doc, west), noChallenge, new Date());
    const other = identityDocument({ instanceId: instance() });
    await refusal(
      regional.attest(signed(other, east), noChallenge, new Date()),
      /region us-west-2\): the signer \(serial [0-9A-F]+\) is none of the 1 configured/,
    );
    const unknownRegion = identityDocument({ instanceId: instance(), region: 'eu-central-1' });
    await refusal(
      regional.attest(signed(unknownRegion, west), noChallenge, new Date()),
      /^aws_iid: no AWS certificate is configured for region eu-central-1 \(region_certificate_paths has us-west-2, us-east-1; certificate_bundle_path is not set\)$/,
    );
  });

  it('refuses the other signatures and malformed payloads, saying what to send', async () => {
    const doc = identityDocument({ instanceId: instance() });
    await refusal(
      attestor().attest(signed(doc, west, { digest: 'sha1' }), noChallenge, new Date()),
      /uses SHA-1 or DSA \(as the instance-identity\/pkcs7 one does\); send the instance-identity\/rsa2048 signature/,
    );
    await refusal(
      attestor().attest(
        Buffer.from(JSON.stringify({ document: doc, signature: 'abc' })),
        noChallenge,
        new Date(),
      ),
      /^aws_iid: the payload has only the RSA-1024 "signature"; the "rsa2048" PKCS#7 signature is required$/,
    );
    await refusal(
      attestor().attest(Buffer.from('{'), noChallenge, new Date()),
      /^aws_iid: the payload is not JSON/,
    );
    await refusal(
      attestor().attest(payload(doc, 'not base64!'), noChallenge, new Date()),
      /^aws_iid: rsa2048: the signature is not base64/,
    );
    const badId = identityDocument({ instanceId: 'i-../../admin' });
    await refusal(
      attestor().attest(signed(badId), noChallenge, new Date()),
      /instanceId "i-..\/..\/admin" is not of the form AWS gives it/,
    );
  });

  it('trusts on first use: a second attestation of the instance is refused, unless allow_reattestation', async () => {
    const id = instance();
    const now = new Date();
    const first = await attestor().attest(signed(identityDocument({ instanceId: id })), noChallenge, now);
    await ds.attestAgent({
      spiffeId: first.spiffeId,
      attestor: 'aws_iid',
      selectors: first.selectors,
      serial: 'A1',
      expiresAt: new Date(now.getTime() + HOUR),
    });
    // After a stop and start the instance has a new document (pendingTime), still the same instance.
    const restarted = signed(identityDocument({ instanceId: id, pendingTime: '2026-11-20T08:00:00Z' }));
    await refusal(
      attestor().attest(restarted, noChallenge, now),
      new RegExp(
        `^aws_iid: instance ${id} has already attested as ${first.spiffeId}; an instance attests once \\(trust on first use\\): evict that agent \\(tessera agent evict --spiffe-id ${first.spiffeId}\\) to let it attest again, or set allow_reattestation$`,
      ),
    );
    const again = await attestor({ allowReattestation: true }).attest(restarted, noChallenge, now);
    assert.equal(again.spiffeId, first.spiffeId);
  });

  it('refuses a replayed document within replay_window, and accepts it again after', async () => {
    const doc = signed(identityDocument({ instanceId: instance() }));
    const reattesting = attestor({ allowReattestation: true });
    const t0 = new Date();
    await reattesting.attest(doc, noChallenge, t0);
    await refusal(
      reattesting.attest(doc, noChallenge, new Date(t0.getTime() + HOUR - 1000)),
      /^aws_iid: this instance identity document \(instance i-[0-9a-f]+\) was already used to attest within replay_window \(1h\); a replay is refused$/,
    );
    await reattesting.attest(doc, noChallenge, new Date(t0.getTime() + HOUR + 1));
  });

  it('two first attestations of one document at once: exactly one wins (TOFU alone would let both through)', async () => {
    const doc = signed(identityDocument({ instanceId: instance() }));
    const now = new Date();
    const results = await Promise.allSettled([
      attestor().attest(doc, noChallenge, now),
      attestor().attest(doc, noChallenge, now),
    ]);
    assert.deepEqual(results.map((r) => r.status).sort(), ['fulfilled', 'rejected']);
    const lost = results.find((r) => r.status === 'rejected') as PromiseRejectedResult;
    assert.match((lost.reason as Error).message, /a replay is refused$/);
  });

  it('a refusal by trust on first use does not use up the document; an evicted instance attests again after its window', async () => {
    const id = instance();
    const doc = signed(identityDocument({ instanceId: id }));
    const t0 = new Date();
    const first = await attestor().attest(doc, noChallenge, t0);
    await ds.attestAgent({
      spiffeId: first.spiffeId,
      attestor: 'aws_iid',
      selectors: first.selectors,
      serial: 'B1',
      expiresAt: new Date(t0.getTime() + HOUR),
    });
    await refusal(attestor().attest(doc, noChallenge, t0), /has already attested/);
    await ds.deleteAgent(first.spiffeId);
    // Evicted at once: the document that attested is still inside its window.
    await refusal(
      attestor().attest(doc, noChallenge, new Date(t0.getTime() + 60_000)),
      /a replay is refused$/,
    );
    const later = await attestor().attest(doc, noChallenge, new Date(t0.getTime() + HOUR + 1));
    assert.equal(later.spiffeId, first.spiffeId);
  });
});
