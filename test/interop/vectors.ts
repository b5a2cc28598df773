/**
 * Interop vectors: inputs every implementation (ours, go-spiffe, py-spiffe) judges, built fresh at
 * test time with the test kit. The JSON form is what test/interop/go/verdicts.go and
 * test/interop/python/verdicts.py read: an array of `Vector`.
 *
 * X.509 vectors carry a fixed `now` where go-spiffe lets the verifier take one (x509svid.WithTime);
 * JWT-SVIDs cannot (jwtsvid.ParseAndValidate uses time.Now), so they are minted just before the run
 * with windows of minutes, never seconds.
 */
import type { X509Certificate } from 'node:crypto';
import { type IssuedSvid, TestCa, TestJwtAuthority, unsignedToken } from '@tessera/testkit';

interface VectorBase {
  id: string;
  /** Why this vector exists, for the disagreement table. */
  note?: string;
}
export interface SpiffeIdVector extends VectorBase {
  kind: 'spiffeid' | 'trustdomain';
  input: string;
}
export interface BundleVector extends VectorBase {
  kind: 'x509bundle' | 'jwtbundle' | 'spiffebundle';
  trustDomain: string;
  /** PEM (x509bundle), JWKS (jwtbundle) or SPIFFE bundle JSON (spiffebundle). */
  data: string;
}
export interface X509VerifyVector extends VectorBase {
  kind: 'x509svid-verify';
  /** Leaf first, then intermediates, as PEM CERTIFICATE blocks. */
  chainPem: string;
  /** Trust domain name -> PEM roots. */
  bundles: Record<string, string>;
  /** RFC 3339 instant to verify at; absent = now. */
  now?: string;
}
export interface X509ParseVector extends VectorBase {
  kind: 'x509svid-parse';
  chainPem: string;
  keyPem: string;
}
export interface JwtValidateVector extends VectorBase {
  kind: 'jwtsvid-validate';
  token: string;
  /** Trust domain name -> JWKS. */
  bundles: Record<string, string>;
  audience: string[];
}
export type Vector = SpiffeIdVector | BundleVector | X509VerifyVector | X509ParseVector | JwtValidateVector;
export type VectorKind = Vector['kind'];

/** One implementation's judgement of one vector. */
export interface Verdict {
  id: string;
  ok?: boolean;
  /** A canonical rendering of the result when ok (see each kind in verdicts.go). */
  value?: string;
  error?: string;
  /** The implementation has no API for this kind. */
  skipped?: boolean;
}

// ---------------------------------------------------------------------------------------------
// SPIFFE IDs and trust domains: the spec digest's table (§1.3), by row number.

const VALID_IDS: [string, string][] = [
  ['1', 'spiffe://trustdomain'],
  ['2', 'spiffe://trustdomain/path'],
  ['3', 'spiffe://trustdomain/.path'],
  ['4', 'spiffe://trustdomain/..path'],
  ['5', 'spiffe://trustdomain/...'],
  ['6a', 'spiffe://trustdomain./path'],
  ['6b', 'spiffe://trustdomain-/path'],
  ['6c', 'spiffe://trustdomain_/path'],
  ['6d', 'spiffe://trustdomain9/path'],
  ['7a', 'spiffe://trustdomain/pathZ'],
  ['7b', 'spiffe://trustdomain/path_'],
  ['7c', 'spiffe://trustdomain/path-'],
  ['7d', 'spiffe://trustdomain/path.'],
  ['8', 'spiffe://staging.example.com/payments/mysql'],
  ['9', 'spiffe://k8s-west.example.com/ns/staging/sa/default'],
  ['10', 'spiffe://example.com/9eebccd2-12bf-40a6-b262-65fe0487d453'],
  ['11', 'spiffe://192.168.1.1/x'],
  ['long-2048', `spiffe://example.org/${'a'.repeat(2048 - 'spiffe://example.org/'.length)}`],
  ['long-4096', `spiffe://example.org/${'b/'.repeat(2040)}c`],
  ['many-segments', `spiffe://example.org${'/s'.repeat(200)}`],
];

const INVALID_IDS: [string, string][] = [
  ['12', ''],
  ['13', 's'],
  ['14', 'spiffe:/'],
  ['15', 'Spiffe://'],
  ['16', 'SPIFFE://trustdomain'],
  ['17', 'spiffe:/trustdomain/path'],
  ['18', 'BAD'],
  ['19', 'spiffe://'],
  ['20', 'spiffe:///'],
  ['21', 'spiffe:///path'],
  ['22', 'spiffe://trustdomain/'],
  ['23', 'spiffe://trustdomain/path/'],
  ['24', 'spiffe://trustdomain//'],
  ['25', 'spiffe://trustdomain//path'],
  ['26', 'spiffe://trustdomain/.'],
  ['27a', 'spiffe://trustdomain/./path'],
  ['27b', 'spiffe://trustdomain/path/./other'],
  ['27c', 'spiffe://trustdomain/path/..'],
  ['27d', 'spiffe://trustdomain/..'],
  ['27e', 'spiffe://trustdomain/../path'],
  ['27f', 'spiffe://trustdomain/path/../other'],
  ['28', 'spiffe://%F0%9F%A4%AF/path'],
  ['29', 'spiffe://trustdomain/%F0%9F%A4%AF'],
  ['30', 'spiffe://%62%61%64/path'],
  ['31', 'spiffe://trustdomain/%62%61%64'],
  ['32', 'spiffe://trust$domain'],
  ['33', 'spiffe://trustdomain/path$'],
  ['34', 'spiffe://trustdomainA/path'],
  ['35', 'spiffe://trustdomain:8080/path'],
  ['36', 'spiffe://user@trustdomain/path'],
  ['37a', 'spiffe://trustdomain/path?x=1'],
  ['37b', 'spiffe://trustdomain/path#frag'],
  ['38', 'spiffe://[::1]/path'],
  ['39a', 'spiffe://trustdomain/pa th'],
  ['39b', 'spiffe://trustdomain/caf\u00e9'],
  ['39c', 'spiffe://caf\u00e9/path'],
  ['39d', 'spiffe://trustdomain/path\u0000'],
  ['39e', ' spiffe://trustdomain/path'],
  ['39f', 'spiffe://trustdomain/path\n'],
  ['upper-td-only', 'spiffe://EXAMPLE.ORG/path'],
];

const TRUST_DOMAINS: [string, string][] = [
  ['41a', 'trustdomain'],
  ['41b', 'spiffe://trustdomain/path'],
  ['41c', 'spiffe://trustdomain'],
  ['42', ''],
  ['dotted', 'example.org'],
  ['ipv4', '192.168.1.1'],
  ['chars', 'a-b_c.9'],
  ['upper', 'Example.org'],
  ['dollar', 'trust$domain'],
  ['port', 'trustdomain:8080'],
  ['slash', 'trustdomain/path'],
  ['id-missing-td', 'spiffe://'],
  ['id-bad-path', 'spiffe://trustdomain/path/'],
  ['id-upper-scheme', 'SPIFFE://trustdomain'],
  ['id-other-scheme', 'https://trustdomain/path'],
  ['id-one-slash', 'spiffe:/trustdomain'],
  ['space', 'trust domain'],
  ['non-ascii', 'caf\u00e9'],
];

// ---------------------------------------------------------------------------------------------
// Certificates and keys.

const TD = 'example.org';
const OTHER_TD = 'other.org';
const MINUTE = 60_000;
const HOUR = 60 * MINUTE;

function pemOf(certs: readonly X509Certificate[]): string {
  return certs.map((c) => c.toString()).join('');
}

function b64(cert: X509Certificate): string {
  return cert.raw.toString('base64');
}

/** The material the TLS tests share with the verdict vectors. */
export interface Fixtures {
  ca: TestCa;
  otherCa: TestCa;
  /** The instant X.509 verification vectors are judged at (well inside every valid window). */
  now: Date;
}

export function createFixtures(): Fixtures {
  return {
    ca: TestCa.create({ trustDomain: TD }),
    otherCa: TestCa.create({ trustDomain: OTHER_TD }),
    now: new Date(),
  };
}

function bundleVectors(f: Fixtures): BundleVector[] {
  const root = f.ca.root;
  const rsaCa = TestCa.create({ trustDomain: TD, keyType: 'rsa-2048' });
  const leaf = f.ca.issueX509Svid(`spiffe://${TD}/workload`).certificates[0] as X509Certificate;
  const jwtA = TestJwtAuthority.create({ trustDomain: TD, kid: 'kid-a' });
  const jwtB = TestJwtAuthority.create({ trustDomain: TD, keyType: 'rsa-2048', kid: 'kid-b' });
  const jwtC = TestJwtAuthority.create({ trustDomain: TD, keyType: 'ec-p384', kid: 'kid-c' });
  const x509Jwk = (cert: X509Certificate, extra: Record<string, unknown> = {}) => ({
    ...cert.publicKey.export({ format: 'jwk' }),
    use: 'x509-svid',
    x5c: [b64(cert)],
    ...extra,
  });
  const v = (
    kind: BundleVector['kind'],
    id: string,
    data: string | object,
    trustDomain = TD,
    note?: string,
  ): BundleVector => ({
    id: `${kind}/${id}`,
    kind,
    trustDomain,
    data: typeof data === 'string' ? data : JSON.stringify(data),
    ...(note === undefined ? {} : { note }),
  });
  const { kid: _dropKid, ...jwkNoKid } = jwtA.jwk();
  return [
    // X.509 bundles (PEM)
    v('x509bundle', 'one-root', pemOf([root])),
    v('x509bundle', 'two-roots', pemOf([root, rsaCa.root])),
    v('x509bundle', 'duplicate-root', pemOf([root, root]), TD, 'the same root twice counts once'),
    v('x509bundle', 'root-and-leaf', pemOf([root, leaf]), TD, 'a bundle may hold any certificate'),
    v('x509bundle', 'empty', ''),
    v('x509bundle', 'not-pem', 'not a PEM document'),
    v(
      'x509bundle',
      'private-key-block',
      f.ca.issueX509Svid(`spiffe://${TD}/w`).privateKeyPem,
      TD,
      'a PEM block that is not a certificate',
    ),
    v(
      'x509bundle',
      'garbage-certificate',
      `-----BEGIN CERTIFICATE-----\n${Buffer.from('definitely not DER').toString('base64')}\n-----END CERTIFICATE-----\n`,
    ),
    v('x509bundle', 'bad-trust-domain', pemOf([root]), 'Example.org'),
    // JWT bundles (JWKS)
    v('jwtbundle', 'one-key', jwtA.jwks()),
    v('jwtbundle', 'three-keys', { keys: [jwtA.jwk(), jwtB.jwk(), jwtC.jwk()] }),
    v('jwtbundle', 'empty-keys', { keys: [] }),
    v('jwtbundle', 'no-keys-member', {}),
    v('jwtbundle', 'missing-kid', { keys: [jwkNoKid] }),
    v('jwtbundle', 'empty-kid', { keys: [{ ...jwtA.jwk(), kid: '' }] }),
    v('jwtbundle', 'duplicate-kid', { keys: [jwtA.jwk(), { ...jwtB.jwk(), kid: 'kid-a' }] }),
    v('jwtbundle', 'not-json', '{"keys": ['),
    v('jwtbundle', 'keys-not-array', { keys: 'nope' }),
    v('jwtbundle', 'x509-use-ignored', { keys: [{ ...jwtA.jwk(), use: 'x509-svid' }] }, TD, 'use is ignored'),
    v('jwtbundle', 'ec-bad-point', {
      keys: [{ ...jwtA.jwk(), x: Buffer.alloc(32, 1).toString('base64url') }],
    }),
    v('jwtbundle', 'bad-trust-domain', jwtA.jwks(), ''),
    // SPIFFE bundles
    v('spiffebundle', 'full', {
      keys: [x509Jwk(root), jwtA.jwk()],
      spiffe_sequence: 42,
      spiffe_refresh_hint: 300,
    }),
    v('spiffebundle', 'x509-only', { keys: [x509Jwk(root), x509Jwk(rsaCa.root)] }),
    v('spiffebundle', 'jwt-only', { keys: [jwtA.jwk(), jwtB.jwk()], spiffe_refresh_hint: 60 }),
    v('spiffebundle', 'empty-keys', { keys: [] }),
    v('spiffebundle', 'no-keys-member', { spiffe_sequence: 1 }),
    v('spiffebundle', 'not-json', 'nope'),
    v('spiffebundle', 'max-sequence', '{"keys":[],"spiffe_sequence":18446744073709551615}'),
    v('spiffebundle', 'sequence-2^53+1', '{"keys":[],"spiffe_sequence":9007199254740993}'),
    v('spiffebundle', 'sequence-too-big', '{"keys":[],"spiffe_sequence":18446744073709551616}'),
    v('spiffebundle', 'negative-sequence', { keys: [], spiffe_sequence: -1 }),
    v('spiffebundle', 'sequence-string', { keys: [], spiffe_sequence: '5' }),
    v('spiffebundle', 'x5c-two-certs', { keys: [{ ...x509Jwk(root), x5c: [b64(root), b64(rsaCa.root)] }] }),
    v('spiffebundle', 'x5c-empty', { keys: [{ ...x509Jwk(root), x5c: [] }] }),
    v('spiffebundle', 'x5c-missing', {
      keys: [{ ...root.publicKey.export({ format: 'jwk' }), use: 'x509-svid' }],
    }),
    v('spiffebundle', 'x5c-key-mismatch', {
      keys: [{ ...rsaCa.root.publicKey.export({ format: 'jwk' }), use: 'x509-svid', x5c: [b64(root)] }],
    }),
    v('spiffebundle', 'x5c-base64url', {
      keys: [{ ...x509Jwk(root), x5c: [root.raw.toString('base64url')] }],
    }),
    v('spiffebundle', 'jwt-missing-kid', { keys: [{ ...jwkNoKid, use: 'jwt-svid' }] }),
    v('spiffebundle', 'unknown-use', { keys: [{ ...jwtA.jwk(), use: 'something-else' }] }),
    v('spiffebundle', 'no-use', { keys: [jwkNoKid] }),
    v('spiffebundle', 'duplicate-x509', { keys: [x509Jwk(root), x509Jwk(root)] }),
    v('spiffebundle', 'x509-with-kid', { keys: [x509Jwk(root, { kid: 'should-not-be-here' })] }),
    v('spiffebundle', 'refresh-hint-zero', { keys: [], spiffe_refresh_hint: 0 }),
    v('spiffebundle', 'refresh-hint-negative', { keys: [], spiffe_refresh_hint: -5 }),
    v('spiffebundle', 'refresh-hint-fraction', { keys: [], spiffe_refresh_hint: 1.5 }),
    v('spiffebundle', 'bad-trust-domain', { keys: [] }, 'Bad'),
  ];
}

function x509Vectors(f: Fixtures): (X509VerifyVector | X509ParseVector)[] {
  const { ca, otherCa } = f;
  const id = `spiffe://${TD}/workload`;
  const notBefore = new Date(f.now.getTime() - 10 * MINUTE);
  const notAfter = new Date(f.now.getTime() + HOUR);
  const at = { notBefore, notAfter };
  const bundles = { [TD]: pemOf([ca.root]), [OTHER_TD]: pemOf([otherCa.root]) };
  const now = f.now.toISOString();
  const intermediate = ca.createIntermediate();
  const nonCaIntermediate = ca.createIntermediate({ isCa: false });
  const noSignIntermediate = ca.createIntermediate({ keyUsage: ['digitalSignature', 'cRLSign'] });
  const otherInOurTd = otherCa.issueX509Svid(id, at);
  const ed25519Ca = TestCa.create({ trustDomain: TD, keyType: 'ed25519' });
  const rsaCa = TestCa.create({ trustDomain: TD, keyType: 'rsa-2048' });
  const p384Ca = TestCa.create({ trustDomain: TD, keyType: 'ec-p384' });
  const expiredWindow = {
    notBefore: new Date(f.now.getTime() - 3 * HOUR),
    notAfter: new Date(f.now.getTime() - HOUR),
  };
  const futureWindow = {
    notBefore: new Date(f.now.getTime() + HOUR),
    notAfter: new Date(f.now.getTime() + 2 * HOUR),
  };
  const expired = ca.issueX509Svid(id, expiredWindow);

  const cases: [
    string,
    IssuedSvid,
    { bundles?: Record<string, string>; now?: string | null; note?: string }?,
  ][] = [
    ['valid', ca.issueX509Svid(id, at)],
    ['valid-via-intermediate', intermediate.issueX509Svid(id, at)],
    ['valid-two-intermediates', intermediate.createIntermediate().issueX509Svid(id, at)],
    [
      'valid-rsa',
      rsaCa.issueX509Svid(id, { ...at, keyType: 'rsa-2048' }),
      { bundles: { [TD]: pemOf([rsaCa.root]) } },
    ],
    [
      'valid-p384',
      p384Ca.issueX509Svid(id, { ...at, keyType: 'ec-p384' }),
      { bundles: { [TD]: pemOf([p384Ca.root]) } },
    ],
    [
      'valid-ed25519',
      ed25519Ca.issueX509Svid(id, { ...at, keyType: 'ed25519' }),
      { bundles: { [TD]: pemOf([ed25519Ca.root]) } },
    ],
    ['valid-with-dns-san', ca.issueX509Svid(id, { ...at, dnsNames: ['workload.example.org'] })],
    ['valid-other-td', otherCa.issueX509Svid(`spiffe://${OTHER_TD}/w`, at)],
    ['valid-no-eku', ca.issueX509Svid(id, { ...at, extKeyUsage: [] }), { note: 'EKU is not enforced' }],
    [
      'valid-server-eku-only',
      ca.issueX509Svid(id, { ...at, extKeyUsage: ['serverAuth'] }),
      { note: 'EKU is not enforced' },
    ],
    ['valid-at-now', ca.issueX509Svid(id, at), { now: null, note: 'verified at the real current time' }],
    ['expired-now', expired, { now: null }],
    ['expired-at-fixed-time', expired],
    ['expired-but-valid-at-given-time', expired, { now: new Date(f.now.getTime() - 2 * HOUR).toISOString() }],
    ['not-yet-valid', ca.issueX509Svid(id, futureWindow)],
    ['wrong-td-root', otherInOurTd, { note: 'example.org leaf signed by the other.org CA' }],
    ['wrong-td-root-only-bundle', otherInOurTd, { bundles: { [OTHER_TD]: pemOf([otherCa.root]) } }],
    ['no-bundle-for-td', ca.issueX509Svid(id, at), { bundles: { [OTHER_TD]: pemOf([otherCa.root]) } }],
    [
      'ca-leaf',
      ca.issueX509Svid(id, { ...at, isCa: true, keyUsage: ['digitalSignature', 'keyCertSign', 'cRLSign'] }),
    ],
    ['ca-flag-leaf', ca.issueX509Svid(id, { ...at, isCa: true })],
    ['keycertsign-leaf', ca.issueX509Svid(id, { ...at, keyUsage: ['digitalSignature', 'keyCertSign'] })],
    ['crlsign-leaf', ca.issueX509Svid(id, { ...at, keyUsage: ['digitalSignature', 'cRLSign'] })],
    ['no-digital-signature', ca.issueX509Svid(id, { ...at, keyUsage: ['keyEncipherment'] })],
    ['no-key-usage', ca.issueX509Svid(id, { ...at, keyUsage: null })],
    ['no-basic-constraints', ca.issueX509Svid(id, { ...at, basicConstraints: false })],
    ['no-san', ca.issueX509Svid(id, { ...at, uris: [] })],
    ['dns-san-only', ca.issueX509Svid(id, { ...at, uris: [], dnsNames: ['workload.example.org'] })],
    ['two-uri-sans', ca.issueX509Svid(id, { ...at, uris: [id, `spiffe://${TD}/other`] })],
    ['non-spiffe-uri', ca.issueX509Svid(id, { ...at, uris: ['https://example.org/workload'] })],
    ['bad-spiffe-uri', ca.issueX509Svid(id, { ...at, uris: [`spiffe://${TD}/a//b`] })],
    ['upper-td-uri', ca.issueX509Svid(id, { ...at, uris: ['spiffe://Example.org/workload'] })],
    ['td-id-leaf', ca.issueX509Svid(`spiffe://${TD}`, at), { note: 'leaf SPIFFE ID without a path' }],
    ['non-ca-intermediate', nonCaIntermediate.issueX509Svid(id, at)],
    ['no-keycertsign-intermediate', noSignIntermediate.issueX509Svid(id, at)],
    [
      'self-signed-leaf-as-root',
      ca.issueX509Svid(id, at),
      { bundles: { [TD]: pemOf([ca.issueX509Svid(id, at).certificates[0] as X509Certificate]) } },
    ],
  ];
  const out: (X509VerifyVector | X509ParseVector)[] = [];
  for (const [name, svid, opts = {}] of cases) {
    const verify: X509VerifyVector = {
      id: `x509svid-verify/${name}`,
      kind: 'x509svid-verify',
      chainPem: svid.certificatesPem,
      bundles: opts.bundles ?? bundles,
    };
    if (opts.now !== null) verify.now = opts.now ?? now;
    if (opts.note !== undefined) verify.note = opts.note;
    out.push(verify);
    out.push({
      id: `x509svid-parse/${name}`,
      kind: 'x509svid-parse',
      chainPem: svid.certificatesPem,
      keyPem: svid.privateKeyPem,
    });
  }
  const good = ca.issueX509Svid(id, at);
  const viaIntermediate = intermediate.issueX509Svid(id, at);
  const leafOnlyOfIntermediate = pemOf(viaIntermediate.certificates.slice(0, 1));
  out.push(
    { id: 'x509svid-verify/empty-chain', kind: 'x509svid-verify', chainPem: '', bundles, now },
    {
      id: 'x509svid-verify/missing-intermediate',
      kind: 'x509svid-verify',
      chainPem: leafOnlyOfIntermediate,
      bundles,
      now,
    },
    {
      id: 'x509svid-verify/root-in-chain',
      kind: 'x509svid-verify',
      chainPem: pemOf([...viaIntermediate.certificates, ca.root]),
      bundles,
      now,
      note: 'the peer also sends the root',
    },
    {
      id: 'x509svid-verify/intermediate-as-root',
      kind: 'x509svid-verify',
      chainPem: leafOnlyOfIntermediate,
      bundles: { [TD]: pemOf([intermediate.certificate]) },
      now,
      note: 'the bundle trusts the intermediate directly',
    },
    {
      id: 'x509svid-verify/garbage-cert',
      kind: 'x509svid-verify',
      chainPem: `-----BEGIN CERTIFICATE-----\n${Buffer.from('not DER at all').toString('base64')}\n-----END CERTIFICATE-----\n`,
      bundles,
      now,
    },
    {
      id: 'x509svid-parse/key-mismatch',
      kind: 'x509svid-parse',
      chainPem: good.certificatesPem,
      keyPem: ca.issueX509Svid(id, at).privateKeyPem,
    },
    {
      id: 'x509svid-parse/sec1-key',
      kind: 'x509svid-parse',
      chainPem: good.certificatesPem,
      keyPem: good.privateKey.export({ type: 'sec1', format: 'pem' }).toString(),
      note: 'an EC key in SEC 1 form, not PKCS#8',
    },
    {
      id: 'x509svid-parse/no-key',
      kind: 'x509svid-parse',
      chainPem: good.certificatesPem,
      keyPem: '',
    },
    {
      id: 'x509svid-parse/no-certs',
      kind: 'x509svid-parse',
      chainPem: '',
      keyPem: good.privateKeyPem,
    },
    {
      id: 'x509svid-parse/key-first',
      kind: 'x509svid-parse',
      chainPem: good.privateKeyPem + good.certificatesPem,
      keyPem: good.privateKeyPem,
    },
    {
      id: 'x509svid-parse/chain-via-intermediate',
      kind: 'x509svid-parse',
      chainPem: viaIntermediate.certificatesPem,
      keyPem: viaIntermediate.privateKeyPem,
    },
  );
  return out;
}

function jwtVectors(): JwtValidateVector[] {
  const sub = `spiffe://${TD}/workload`;
  const es256 = TestJwtAuthority.create({ trustDomain: TD, kid: 'es256' });
  const es384 = TestJwtAuthority.create({ trustDomain: TD, keyType: 'ec-p384', kid: 'es384' });
  const rs256 = TestJwtAuthority.create({ trustDomain: TD, keyType: 'rsa-2048', kid: 'rs256' });
  const ps256 = TestJwtAuthority.create({ trustDomain: TD, keyType: 'rsa-2048', kid: 'ps256', alg: 'PS256' });
  const other = TestJwtAuthority.create({ trustDomain: OTHER_TD, kid: 'other' });
  const impostor = TestJwtAuthority.create({ trustDomain: TD, kid: 'es256' });
  const bundles = {
    [TD]: JSON.stringify({ keys: [es256.jwk(), es384.jwk(), rs256.jwk(), ps256.jwk()] }),
    [OTHER_TD]: other.jwks(),
  };
  const now = Math.floor(Date.now() / 1000);
  const aud = ['test'];
  const v = (
    name: string,
    token: string,
    opts: { audience?: string[]; bundles?: Record<string, string>; note?: string } = {},
  ): JwtValidateVector => ({
    id: `jwtsvid-validate/${name}`,
    kind: 'jwtsvid-validate',
    token,
    bundles: opts.bundles ?? bundles,
    audience: opts.audience ?? aud,
    ...(opts.note === undefined ? {} : { note: opts.note }),
  });
  return [
    v('valid-es256', es256.sign({ sub })),
    v('valid-es384', es384.sign({ sub })),
    v('valid-rs256', rs256.sign({ sub })),
    v('valid-rs384', rs256.sign({ sub }, { alg: 'RS384' })),
    v('valid-ps256', ps256.sign({ sub })),
    v('valid-other-td', other.sign({ sub: `spiffe://${OTHER_TD}/w` })),
    v('valid-aud-string', es256.sign({ sub, aud: 'test' })),
    v('valid-one-of-two-aud', es256.sign({ sub, aud: ['test', 'other'] })),
    v('valid-any-expected-aud', es256.sign({ sub }), {
      audience: ['test', 'nope'],
      note: 'any one expected audience is enough in go-spiffe',
    }),
    v('valid-typ-jose', es256.sign({ sub }, { typ: 'JOSE' })),
    v('valid-no-typ', es256.sign({ sub }, { typ: undefined })),
    v('valid-td-sub', es256.sign({ sub: `spiffe://${TD}` })),
    v('valid-extra-claims', es256.sign({ sub, iss: 'someone', jti: 'abc', custom: { a: 1 } })),
    v(
      'alg-none',
      unsignedToken({ alg: 'none', kid: 'es256', typ: 'JWT' }, { sub, aud, exp: now + 300, iat: now }),
    ),
    v('alg-none-signed-by-kit', es256.sign({ sub }, { alg: 'none' })),
    v('hs256-public-key-as-secret', es256.sign({ sub }, { alg: 'HS256' })),
    v('hs256-rsa-public-key-as-secret', rs256.sign({ sub }, { alg: 'HS256' })),
    v(
      'eddsa-alg',
      `${unsignedToken({ alg: 'EdDSA', kid: 'es256', typ: 'JWT' }, { sub, aud, exp: now + 300 })}${'A'.repeat(86)}`,
    ),
    v('alg-mismatch-es384-header-on-p256', es256.sign({ sub }, { alg: 'ES384' })),
    v(
      'alg-rs256-header-on-ec-key',
      `${es256.sign({ sub }, { alg: 'RS256', kid: 'es256' }).split('.').slice(0, 2).join('.')}.${rs256.sign({ sub }).split('.')[2]}`,
    ),
    v('expired', es256.sign({ sub, exp: now - 3600, iat: now - 7200 })),
    v('expired-within-leeway', es256.sign({ sub, exp: now - 20 }), {
      note: 'go-spiffe allows 60 s of clock skew',
    }),
    v('not-yet-valid-nbf', es256.sign({ sub, nbf: now + 3600 })),
    v('iat-in-future', es256.sign({ sub, iat: now + 3600 })),
    v('missing-exp', es256.sign({ sub, exp: undefined })),
    v('exp-string', es256.sign({ sub, exp: String(now + 300) })),
    v('missing-aud', es256.sign({ sub, aud: undefined })),
    v('empty-aud', es256.sign({ sub, aud: [] })),
    v('wrong-aud', es256.sign({ sub, aud: ['someone-else'] })),
    v('missing-sub', es256.sign({ sub: undefined })),
    v('sub-not-spiffe', es256.sign({ sub: 'https://example.org/workload' })),
    v('sub-bad-path', es256.sign({ sub: `spiffe://${TD}/a/../b` })),
    v('sub-upper-td', es256.sign({ sub: 'spiffe://Example.org/workload' })),
    v('unknown-kid', es256.sign({ sub }, { kid: 'nobody' })),
    v('missing-kid', es256.sign({ sub }, { kid: undefined })),
    v('wrong-key-same-kid', impostor.sign({ sub })),
    v('other-td-key-for-our-sub', other.sign({ sub }, { kid: 'other' }), {
      note: 'kid exists only in the other TD bundle',
    }),
    v('no-bundle-for-td', es256.sign({ sub }), { bundles: { [OTHER_TD]: other.jwks() } }),
    v('typ-wrong', es256.sign({ sub }, { typ: 'at+jwt' })),
    v('tampered-payload', tamper(es256.sign({ sub }), `spiffe://${TD}/admin`)),
    v('garbage', 'not.a.token'),
    v('two-parts', 'abc.def'),
    v('empty', ''),
    v('empty-audience-expected', es256.sign({ sub }), { audience: [] }),
  ];
}

/** Replaces the payload's sub while keeping the original signature. */
function tamper(token: string, sub: string): string {
  const [h, p, s] = token.split('.');
  const claims = JSON.parse(Buffer.from(p ?? '', 'base64url').toString()) as Record<string, unknown>;
  claims.sub = sub;
  return `${h}.${Buffer.from(JSON.stringify(claims)).toString('base64url')}.${s}`;
}

/** Every vector, freshly minted. */
export function buildVectors(f: Fixtures = createFixtures()): Vector[] {
  const ids: Vector[] = [
    ...VALID_IDS.map(
      ([n, input]): SpiffeIdVector => ({ id: `spiffeid/valid-${n}`, kind: 'spiffeid', input }),
    ),
    ...INVALID_IDS.map(
      ([n, input]): SpiffeIdVector => ({ id: `spiffeid/invalid-${n}`, kind: 'spiffeid', input }),
    ),
    ...TRUST_DOMAINS.map(
      ([n, input]): SpiffeIdVector => ({ id: `trustdomain/${n}`, kind: 'trustdomain', input }),
    ),
  ];
  const all = [...ids, ...bundleVectors(f), ...x509Vectors(f), ...jwtVectors()];
  const seen = new Set<string>();
  for (const v of all) {
    if (seen.has(v.id)) throw new Error(`interop: duplicate vector id ${v.id}`);
    seen.add(v.id);
  }
  return all;
}

/**
 * The DER of each CERTIFICATE block of a PEM text, undecoded beyond base64, so the library under
 * test (like go-spiffe's ParseAndVerify) is the one that parses the certificates.
 */
export function certificateDersFromPem(pem: string): Buffer[] {
  const blocks = pem.matchAll(/-----BEGIN CERTIFICATE-----([\s\S]*?)-----END CERTIFICATE-----/g);
  return [...blocks].map((m) => Buffer.from((m[1] ?? '').replace(/\s+/g, ''), 'base64'));
}
