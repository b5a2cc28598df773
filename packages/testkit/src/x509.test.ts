import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { makeTempDir, type TempDir } from './tmp.js';
import { type KeyType, TestCa } from './x509.js';

// The test CA must emit certificates that a real X.509 implementation accepts; openssl is the judge.
function opensslVerify(dir: string, root: string, untrusted: string[], leaf: string): string {
  const rootFile = join(dir, 'root.pem');
  writeFileSync(rootFile, root);
  const leafFile = join(dir, 'leaf.pem');
  writeFileSync(leafFile, leaf);
  const args = ['verify', '-CAfile', rootFile];
  if (untrusted.length > 0) {
    const u = join(dir, 'untrusted.pem');
    writeFileSync(u, untrusted.join(''));
    args.push('-untrusted', u);
  }
  args.push(leafFile);
  return execFileSync('openssl', args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
}

describe('TestCa', () => {
  let tmp: TempDir;
  before(async () => {
    tmp = await makeTempDir('testkit-');
  });
  after(() => tmp.cleanup());

  for (const keyType of ['ec-p256', 'ec-p384', 'rsa-2048', 'ed25519'] as KeyType[]) {
    it(`issues a ${keyType} chain through an intermediate that openssl verifies`, () => {
      const root = TestCa.create({ trustDomain: 'example.org', keyType });
      const inter = root.createIntermediate({ keyType });
      const svid = inter.issueX509Svid('spiffe://example.org/workload', { keyType });
      assert.equal(svid.certificates.length, 2);
      const [leaf, mid] = svid.certificates;
      assert.ok(leaf && mid);
      assert.equal(leaf.subjectAltName, 'URI:spiffe://example.org/workload');
      assert.equal(leaf.ca, false);
      assert.equal(mid.ca, true);
      assert.ok(leaf.checkIssued(mid));
      assert.ok(leaf.verify(mid.publicKey));
      assert.ok(mid.verify(root.root.publicKey));
      assert.ok(leaf.checkPrivateKey(svid.privateKey));
      const out = opensslVerify(tmp.path, root.rootPem(), [mid.toString()], leaf.toString());
      assert.match(out, /OK/);
      assert.equal(Buffer.compare(svid.certificatesDer, Buffer.concat([leaf.raw, mid.raw])), 0);
    });
  }

  it('builds the broken forms tests ask for', () => {
    const ca = TestCa.create({ trustDomain: 'example.org' });
    const noSan = ca.issueX509Svid('spiffe://example.org/a', { uris: [] });
    assert.equal(noSan.certificates[0]?.subjectAltName, undefined);
    const caLeaf = ca.issueX509Svid('spiffe://example.org/a', { isCa: true });
    assert.equal(caLeaf.certificates[0]?.ca, true);
    const expired = ca.issueX509Svid('spiffe://example.org/a', {
      notBefore: new Date(Date.now() - 7200_000),
      notAfter: new Date(Date.now() - 3600_000),
    });
    assert.ok(new Date(expired.certificates[0]?.validTo ?? 0) < new Date());
    const other = ca.issueX509Svid('spiffe://example.org/b');
    const mismatch = ca.issueX509Svid('spiffe://example.org/a', { privateKey: other.privateKey });
    assert.equal(mismatch.certificates[0]?.checkPrivateKey(mismatch.privateKey), false);
  });
});
