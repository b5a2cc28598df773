/**
 * A test certificate authority: real X.509 certificates, built with @peculiar/asn1-x509 and
 * signed with node:crypto, so verification code under test sees exactly what a real CA emits.
 * Every knob that makes a certificate invalid (no SAN, CA leaf, missing key usage, wrong key,
 * expired, ...) is an option, because tests of the SPIFFE rules need each broken form.
 */
import {
  createHash,
  generateKeyPairSync,
  type KeyObject,
  randomBytes,
  sign,
  X509Certificate,
} from 'node:crypto';
import { AsnConvert, OctetString } from '@peculiar/asn1-schema';
import {
  AlgorithmIdentifier,
  AttributeTypeAndValue,
  AttributeValue,
  AuthorityKeyIdentifier,
  BasicConstraints,
  Certificate,
  ExtendedKeyUsage,
  Extension,
  Extensions,
  GeneralName,
  id_ce_authorityKeyIdentifier,
  id_ce_basicConstraints,
  id_ce_extKeyUsage,
  id_ce_keyUsage,
  id_ce_subjectAltName,
  id_ce_subjectKeyIdentifier,
  id_kp_clientAuth,
  id_kp_serverAuth,
  KeyIdentifier,
  KeyUsage,
  KeyUsageFlags,
  Name,
  RelativeDistinguishedName,
  SubjectAlternativeName,
  SubjectKeyIdentifier,
  SubjectPublicKeyInfo,
  TBSCertificate,
  Validity,
  Version,
} from '@peculiar/asn1-x509';

export type KeyType = 'ec-p256' | 'ec-p384' | 'rsa-2048' | 'ed25519';

export type KeyUsageName =
  | 'digitalSignature'
  | 'nonRepudiation'
  | 'keyEncipherment'
  | 'dataEncipherment'
  | 'keyAgreement'
  | 'keyCertSign'
  | 'cRLSign'
  | 'encipherOnly'
  | 'decipherOnly';

export interface KeyPair {
  privateKey: KeyObject;
  publicKey: KeyObject;
}

/** A fresh key pair of the given type (default EC P-256). */
export function generateKey(type: KeyType = 'ec-p256'): KeyPair {
  switch (type) {
    case 'ec-p256':
      return generateKeyPairSync('ec', { namedCurve: 'P-256' });
    case 'ec-p384':
      return generateKeyPairSync('ec', { namedCurve: 'P-384' });
    case 'rsa-2048':
      return generateKeyPairSync('rsa', { modulusLength: 2048 });
    case 'ed25519':
      return generateKeyPairSync('ed25519');
  }
}

/** A certificate chain and its key, in every form a test may want. */
export interface IssuedSvid {
  /** Leaf first, then intermediates up to (not including) the root. */
  certificates: X509Certificate[];
  privateKey: KeyObject;
  /** The chain's DER certificates concatenated, as the Workload API sends them. */
  certificatesDer: Buffer;
  /** PKCS#8 DER. */
  privateKeyDer: Buffer;
  certificatesPem: string;
  /** PKCS#8 PEM. */
  privateKeyPem: string;
}

export interface IssueOptions {
  keyType?: KeyType;
  notBefore?: Date;
  notAfter?: Date;
  /** URI SANs; default [spiffeId]. An empty array omits the SAN extension unless dnsNames are given. */
  uris?: string[];
  dnsNames?: string[];
  /** basicConstraints cA; default false. */
  isCa?: boolean;
  /** Default digitalSignature + keyEncipherment + keyAgreement (as SPIRE); null omits the extension. */
  keyUsage?: KeyUsageName[] | null;
  /** Default serverAuth + clientAuth; an empty array omits the extension. */
  extKeyUsage?: ('serverAuth' | 'clientAuth')[];
  /** Subject as "CN=x,O=y"; default "O=SPIFFE". */
  subject?: string;
  /** Certify this public key instead of a fresh one (the returned privateKey is then a fresh, unrelated key
   * unless privateKey is also given). */
  publicKey?: KeyObject;
  privateKey?: KeyObject;
  /** false omits the basicConstraints extension. */
  basicConstraints?: boolean;
  /** basicConstraints pathLenConstraint for CA certificates. */
  pathLen?: number;
}

export interface CertificateOptions extends IssueOptions {
  /** Used only for the default SAN; may be omitted when uris is given. */
  spiffeId?: string;
}

export interface CaOptions {
  trustDomain: string;
  keyType?: KeyType;
  notBefore?: Date;
  notAfter?: Date;
  pathLen?: number;
  /** basicConstraints cA for an intermediate; default true. false makes a broken CA, for tests. */
  isCa?: boolean;
  /** keyUsage of the CA certificate; default digitalSignature + keyCertSign + cRLSign; null omits it. */
  keyUsage?: KeyUsageName[] | null;
}

const HOUR = 3600_000;
const OID_CN = '2.5.4.3';
const OID_O = '2.5.4.10';
const OID_OU = '2.5.4.11';
const OID_C = '2.5.4.6';

/** X.509 times have second precision; certificates carry whole seconds. */
function wholeSeconds(d: Date): Date {
  return new Date(Math.floor(d.getTime() / 1000) * 1000);
}

function parseName(dn: string): Name {
  const types: Record<string, string> = { CN: OID_CN, O: OID_O, OU: OID_OU, C: OID_C };
  const rdns = dn
    .split(',')
    .map((part) => part.trim())
    .filter((part) => part.length > 0)
    .map((part) => {
      const eq = part.indexOf('=');
      const key = part.slice(0, eq).trim().toUpperCase();
      const oid = types[key];
      if (eq < 0 || oid === undefined)
        throw new Error(`testkit: unsupported DN component "${part}" in "${dn}"`);
      const value =
        oid === OID_C
          ? new AttributeValue({ printableString: part.slice(eq + 1).trim() })
          : new AttributeValue({ utf8String: part.slice(eq + 1).trim() });
      return new RelativeDistinguishedName([new AttributeTypeAndValue({ type: oid, value })]);
    });
  return new Name(rdns);
}

function signatureAlgorithm(key: KeyObject): { alg: AlgorithmIdentifier; hash: string | null } {
  const type = key.asymmetricKeyType;
  if (type === 'ec') {
    const curve = key.asymmetricKeyDetails?.namedCurve;
    if (curve === 'secp384r1')
      return { alg: new AlgorithmIdentifier({ algorithm: '1.2.840.10045.4.3.3' }), hash: 'sha384' };
    return { alg: new AlgorithmIdentifier({ algorithm: '1.2.840.10045.4.3.2' }), hash: 'sha256' };
  }
  if (type === 'rsa') {
    return {
      alg: new AlgorithmIdentifier({ algorithm: '1.2.840.113549.1.1.11', parameters: null }),
      hash: 'sha256',
    };
  }
  if (type === 'ed25519') return { alg: new AlgorithmIdentifier({ algorithm: '1.3.101.112' }), hash: null };
  throw new Error(`testkit: cannot sign with a ${type} key`);
}

function spki(publicKey: KeyObject): SubjectPublicKeyInfo {
  return AsnConvert.parse(publicKey.export({ type: 'spki', format: 'der' }), SubjectPublicKeyInfo);
}

function keyId(publicKey: KeyObject): ArrayBuffer {
  const bits = spki(publicKey).subjectPublicKey;
  const digest = createHash('sha1').update(new Uint8Array(bits)).digest();
  return digest.buffer.slice(digest.byteOffset, digest.byteOffset + digest.byteLength);
}

function extension(extnID: string, critical: boolean, value: unknown): Extension {
  return new Extension({ extnID, critical, extnValue: new OctetString(AsnConvert.serialize(value)) });
}

function randomSerial(): ArrayBuffer {
  const serial = randomBytes(16);
  serial[0] = ((serial[0] ?? 0) & 0x7f) | 0x01; // positive, and no leading zero byte
  return serial.buffer.slice(serial.byteOffset, serial.byteOffset + serial.byteLength);
}

interface BuildParams {
  subject: Name;
  issuer: Name;
  subjectKey: KeyObject;
  issuerKey: KeyObject;
  issuerPublicKey: KeyObject;
  notBefore: Date;
  notAfter: Date;
  extensions: Extension[];
}

function buildCertificate(p: BuildParams): X509Certificate {
  const { alg, hash } = signatureAlgorithm(p.issuerKey);
  const tbs = new TBSCertificate({
    version: Version.v3,
    serialNumber: randomSerial(),
    signature: alg,
    issuer: p.issuer,
    validity: new Validity({ notBefore: wholeSeconds(p.notBefore), notAfter: wholeSeconds(p.notAfter) }),
    subject: p.subject,
    subjectPublicKeyInfo: spki(p.subjectKey),
    extensions: new Extensions([
      ...p.extensions,
      extension(id_ce_subjectKeyIdentifier, false, new SubjectKeyIdentifier(keyId(p.subjectKey))),
      extension(
        id_ce_authorityKeyIdentifier,
        false,
        new AuthorityKeyIdentifier({ keyIdentifier: new KeyIdentifier(keyId(p.issuerPublicKey)) }),
      ),
    ]),
  });
  const tbsDer = Buffer.from(AsnConvert.serialize(tbs));
  const signature = sign(hash, tbsDer, p.issuerKey);
  const cert = new Certificate({
    tbsCertificate: tbs,
    signatureAlgorithm: alg,
    signatureValue: signature.buffer.slice(signature.byteOffset, signature.byteOffset + signature.byteLength),
  });
  return new X509Certificate(Buffer.from(AsnConvert.serialize(cert)));
}

function keyUsageExtension(names: KeyUsageName[]): Extension {
  let flags = 0;
  for (const n of names) flags |= KeyUsageFlags[n];
  return extension(id_ce_keyUsage, true, new KeyUsage(flags));
}

function sanExtension(uris: string[], dnsNames: string[]): Extension | undefined {
  const names = [
    ...uris.map((u) => new GeneralName({ uniformResourceIdentifier: u })),
    ...dnsNames.map((d) => new GeneralName({ dNSName: d })),
  ];
  if (names.length === 0) return undefined;
  return extension(id_ce_subjectAltName, false, new SubjectAlternativeName(names));
}

function toPemChain(certs: X509Certificate[]): string {
  return certs.map((c) => c.toString()).join('');
}

/** A root or intermediate CA of one trust domain that issues test SVIDs. */
export class TestCa {
  readonly trustDomain: string;
  readonly certificate: X509Certificate;
  readonly privateKey: KeyObject;
  readonly publicKey: KeyObject;
  readonly #parent: TestCa | undefined;

  private constructor(trustDomain: string, certificate: X509Certificate, key: KeyPair, parent?: TestCa) {
    this.trustDomain = trustDomain;
    this.certificate = certificate;
    this.privateKey = key.privateKey;
    this.publicKey = key.publicKey;
    this.#parent = parent;
  }

  /** A self-signed root CA for `trustDomain` ("example.org"), valid from an hour ago for a day by default. */
  static create(opts: CaOptions): TestCa {
    const key = generateKey(opts.keyType);
    const now = Date.now();
    const subject = parseName(`C=US,O=SPIFFE,OU=${opts.trustDomain} root`);
    const cert = buildCertificate({
      subject,
      issuer: subject,
      subjectKey: key.publicKey,
      issuerKey: key.privateKey,
      issuerPublicKey: key.publicKey,
      notBefore: opts.notBefore ?? new Date(now - HOUR),
      notAfter: opts.notAfter ?? new Date(now + 24 * HOUR),
      extensions: caExtensions(opts.trustDomain, opts),
    });
    return new TestCa(opts.trustDomain, cert, key);
  }

  /** The self-signed root at the top of this CA's chain. */
  get root(): X509Certificate {
    return this.#parent === undefined ? this.certificate : this.#parent.root;
  }

  /** This CA and its parents up to, but not including, the root. Empty for a root. */
  chain(): X509Certificate[] {
    if (this.#parent === undefined) return [];
    return [this.certificate, ...this.#parent.chain()];
  }

  /** An intermediate CA signed by this one. */
  createIntermediate(opts: Omit<CaOptions, 'trustDomain'> = {}): TestCa {
    const key = generateKey(opts.keyType);
    const now = Date.now();
    const depth = this.chain().length + 1;
    const cert = buildCertificate({
      subject: parseName(`C=US,O=SPIFFE,OU=${this.trustDomain} intermediate ${depth}`),
      issuer: this.#subjectName(),
      subjectKey: key.publicKey,
      issuerKey: this.privateKey,
      issuerPublicKey: this.publicKey,
      notBefore: opts.notBefore ?? new Date(now - HOUR),
      notAfter: opts.notAfter ?? new Date(now + 24 * HOUR),
      extensions: caExtensions(this.trustDomain, opts),
    });
    return new TestCa(this.trustDomain, cert, key, this);
  }

  /** An X509-SVID for `spiffeId` signed by this CA: chain is leaf + this CA's chain (root excluded). */
  issueX509Svid(spiffeId: string, opts: IssueOptions = {}): IssuedSvid {
    return this.issueCertificate({ ...opts, spiffeId });
  }

  /** Any end-entity or CA certificate, with every field under the caller's control. */
  issueCertificate(opts: CertificateOptions): IssuedSvid {
    const generated = generateKey(opts.keyType);
    const publicKey = opts.publicKey ?? generated.publicKey;
    const privateKey = opts.privateKey ?? generated.privateKey;
    const now = Date.now();
    const uris = opts.uris ?? (opts.spiffeId === undefined ? [] : [opts.spiffeId]);
    const extensions: Extension[] = [];
    if (opts.basicConstraints !== false) {
      extensions.push(
        extension(
          id_ce_basicConstraints,
          true,
          new BasicConstraints(
            opts.isCa === true
              ? { cA: true, ...(opts.pathLen === undefined ? {} : { pathLenConstraint: opts.pathLen }) }
              : { cA: false },
          ),
        ),
      );
    }
    const usage =
      opts.keyUsage === undefined
        ? opts.isCa === true
          ? (['digitalSignature', 'keyCertSign', 'cRLSign'] as KeyUsageName[])
          : (['digitalSignature', 'keyEncipherment', 'keyAgreement'] as KeyUsageName[])
        : opts.keyUsage;
    if (usage !== null) extensions.push(keyUsageExtension(usage));
    const eku = opts.extKeyUsage ?? (opts.isCa === true ? [] : ['serverAuth', 'clientAuth']);
    if (eku.length > 0) {
      extensions.push(
        extension(
          id_ce_extKeyUsage,
          false,
          new ExtendedKeyUsage(eku.map((e) => (e === 'serverAuth' ? id_kp_serverAuth : id_kp_clientAuth))),
        ),
      );
    }
    const san = sanExtension(uris, opts.dnsNames ?? []);
    if (san !== undefined) extensions.push(san);
    const leaf = buildCertificate({
      subject: parseName(opts.subject ?? 'C=US,O=SPIFFE'),
      issuer: this.#subjectName(),
      subjectKey: publicKey,
      issuerKey: this.privateKey,
      issuerPublicKey: this.publicKey,
      notBefore: opts.notBefore ?? new Date(now - HOUR),
      notAfter: opts.notAfter ?? new Date(now + HOUR),
      extensions,
    });
    const certificates = [leaf, ...this.chain()];
    return {
      certificates,
      privateKey,
      certificatesDer: Buffer.concat(certificates.map((c) => c.raw)),
      privateKeyDer: privateKey.export({ type: 'pkcs8', format: 'der' }),
      certificatesPem: toPemChain(certificates),
      privateKeyPem: privateKey.export({ type: 'pkcs8', format: 'pem' }).toString(),
    };
  }

  /** The root certificate in PEM, e.g. to write a bundle file. */
  rootPem(): string {
    return this.root.toString();
  }

  #subjectName(): Name {
    return AsnConvert.parse(this.certificate.raw, Certificate).tbsCertificate.subject;
  }
}

function caExtensions(trustDomain: string, opts: Omit<CaOptions, 'trustDomain'>): Extension[] {
  const { pathLen } = opts;
  const isCa = opts.isCa ?? true;
  const usage =
    opts.keyUsage === undefined
      ? (['digitalSignature', 'keyCertSign', 'cRLSign'] as KeyUsageName[])
      : opts.keyUsage;
  return [
    extension(
      id_ce_basicConstraints,
      true,
      new BasicConstraints(
        isCa ? { cA: true, ...(pathLen === undefined ? {} : { pathLenConstraint: pathLen }) } : { cA: false },
      ),
    ),
    ...(usage === null ? [] : [keyUsageExtension(usage)]),
    extension(
      id_ce_subjectAltName,
      false,
      new SubjectAlternativeName([new GeneralName({ uniformResourceIdentifier: `spiffe://${trustDomain}` })]),
    ),
  ];
}
