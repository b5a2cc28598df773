import { createHash, createPublicKey, type KeyObject, sign, X509Certificate } from 'node:crypto';
import { AsnConvert } from '@peculiar/asn1-schema';
import { parseSpiffeId, type SpiffeId, type TrustDomain } from '@tessera/spiffe';
import * as der from '../../common/der.js';
import { isDnsName } from '../../common/dns-name.js';
import { TesseraError, TesseraErrorCode } from '../../common/errors.js';
import {
  type DistinguishedName,
  keyIdentifier,
  randomSerial,
  signatureAlgorithm,
  signCaCertificate,
  spkiOf,
  subjectName,
  toName,
} from '../../common/x509.js';
import { generateKeyPairOfType } from '../keymanager/generate.js';
import type { KeyType } from '../keymanager/key-manager.js';
import { parseCsr } from './csr.js';

export type CaKeyType = KeyType;

/** SPIRE backdates NotBefore by 10 s so that small clock skew does not reject a fresh SVID. */
export const BACKDATE_MS = 10_000;

/** What a new CA certificate is made from. */
export interface CaOptions {
  trustDomain: TrustDomain;
  keyType: CaKeyType;
  ttlMs: number;
  subject: DistinguishedName;
  now: Date;
  /** The CA key (from the key manager); generated when omitted. */
  privateKey?: KeyObject;
}

/** The CA key pair: the given private key (from the key manager), or a fresh one. */
function caKeyPair(
  keyType: CaKeyType,
  privateKey: KeyObject | undefined,
): { privateKey: KeyObject; publicKey: KeyObject } {
  return privateKey === undefined
    ? generateKeyPairOfType(keyType)
    : { privateKey, publicKey: createPublicKey(privateKey) };
}

function refuse(message: string): TesseraError {
  return new TesseraError(TesseraErrorCode.CA_ISSUE, `ca: ${message}`);
}

export interface IssueX509SvidRequest {
  /** The workload's public key, or its CSR (DER), whose signature is checked. */
  publicKey?: KeyObject;
  csr?: Uint8Array;
  spiffeId: string | SpiffeId;
  dnsNames?: readonly string[];
  ttlMs: number;
  now: Date;
}

export interface IssuedX509Svid {
  /** DER, leaf first, then the intermediates up to (not including) the root in the bundle. */
  readonly chainDer: readonly Buffer[];
  /** The same as X509Certificate objects (built on first use: ~0.1 ms each in Node 20). */
  readonly chain: X509Certificate[];
  readonly expiresAt: Date;
  /** The leaf's serial number as X509Certificate.serialNumber prints it (upper-case hex). */
  readonly serial: string;
}

export class Issued implements IssuedX509Svid {
  #chain: X509Certificate[] | undefined;
  constructor(
    readonly chainDer: readonly Buffer[],
    readonly expiresAt: Date,
    readonly serial: string,
  ) {}
  get chain(): X509Certificate[] {
    this.#chain ??= this.chainDer.map((d) => new X509Certificate(d));
    return this.#chain;
  }
}

const OID_SKI = '2.5.29.14';
/** SPIRE's leaf subject: C=US, O=SPIFFE (plus CN = the first DNS name, when any). */
const LEAF_SUBJECT: readonly (readonly [string, string, 'printable' | 'utf8'])[] = [
  ['2.5.4.6', 'US', 'printable'],
  ['2.5.4.10', 'SPIFFE', 'utf8'],
];
const OID_SAN = '2.5.29.17';

interface LeafTemplate {
  version: Buffer;
  algorithm: Buffer;
  hash: string | null;
  issuer: Buffer;
  subject: Buffer;
  basicConstraints: Buffer;
  keyUsage: Buffer;
  extKeyUsage: Buffer;
  authorityKeyId: Buffer;
}

/** The parts of every X509-SVID this CA signs that do not change between SVIDs, DER-encoded once. */
function leafTemplate(ca: X509Certificate, privateKey: KeyObject): LeafTemplate {
  const { alg, hash } = signatureAlgorithm(privateKey);
  return {
    version: der.explicit(0, der.unsignedInteger(Buffer.from([2]))),
    algorithm: Buffer.from(AsnConvert.serialize(alg)),
    hash,
    issuer: Buffer.from(AsnConvert.serialize(subjectName(ca))),
    subject: der.name(LEAF_SUBJECT),
    // cA FALSE is the DEFAULT, so DER encodes an empty SEQUENCE.
    basicConstraints: der.extension('2.5.29.19', true, der.sequence()),
    // digitalSignature | keyEncipherment | keyAgreement = bits 0, 2, 4 → 0b10101000, 3 unused bits.
    keyUsage: der.extension('2.5.29.15', true, Buffer.from([0x03, 0x02, 0x03, 0xa8])),
    extKeyUsage: der.extension(
      '2.5.29.37',
      false,
      der.sequence(der.objectIdentifier('1.3.6.1.5.5.7.3.1'), der.objectIdentifier('1.3.6.1.5.5.7.3.2')),
    ),
    authorityKeyId: der.extension(
      '2.5.29.35',
      false,
      der.sequence(der.tlv(0x80, Buffer.from(keyIdentifier(spkiOf(ca.publicKey))))),
    ),
  };
}

/**
 * One X.509 signing key of the trust domain: its CA certificate (self-signed, or signed by an
 * upstream authority) and private key. Issues X509-SVIDs per the spec: one URI SAN, optional DNS
 * SANs, random serial, SPIRE's key usages, NotBefore backdated 10 s, NotAfter capped by the CA's.
 */
export class X509Authority {
  readonly trustDomain: TrustDomain;
  readonly certificate: X509Certificate;
  readonly privateKey: KeyObject;
  /** The subject key ID (hex) the authority is known by: authorityKeyId(certificate), computed once. */
  readonly id: string;
  /** Upstream intermediates between this CA and the root, when an upstream authority signed it. */
  readonly upstreamChain: readonly X509Certificate[];
  readonly #issuer: { name: ReturnType<typeof subjectName>; privateKey: KeyObject; keyId: ArrayBuffer };
  readonly #notAfter: number;
  /** What follows a leaf in the chain: nothing for a self-signed root; this CA and its upstream chain otherwise. */
  readonly #intermediates: X509Certificate[];
  readonly #template: LeafTemplate;

  constructor(
    trustDomain: TrustDomain,
    certificate: X509Certificate,
    privateKey: KeyObject,
    upstreamChain: readonly X509Certificate[] = [],
  ) {
    if (!certificate.checkPrivateKey(privateKey))
      throw new TypeError('ca: the private key does not belong to the CA certificate');
    this.trustDomain = trustDomain;
    this.certificate = certificate;
    this.privateKey = privateKey;
    this.upstreamChain = upstreamChain;
    this.#issuer = {
      name: subjectName(certificate),
      privateKey,
      keyId: keyIdentifier(spkiOf(certificate.publicKey)),
    };
    this.id = Buffer.from(this.#issuer.keyId).toString('hex');
    this.#notAfter = new Date(certificate.validTo).getTime();
    const selfSigned =
      certificate.subject === certificate.issuer && certificate.verify(certificate.publicKey);
    this.#intermediates = selfSigned ? [] : [certificate, ...upstreamChain];
    this.#template = leafTemplate(certificate, privateKey);
  }

  /** A self-signed CA for the trust domain, valid from `now` (backdated) for `ttlMs`. */
  static createSelfSigned(opts: CaOptions): X509Authority {
    const key = caKeyPair(opts.keyType, opts.privateKey);
    const spki = spkiOf(key.publicKey);
    const name = toName({
      ...opts.subject,
      serialNumber: opts.subject.serialNumber ?? String(opts.now.getTime()),
    });
    const cert = signCaCertificate(
      {
        subject: name,
        subjectPublicKey: spki,
        notBefore: new Date(opts.now.getTime() - BACKDATE_MS),
        notAfter: new Date(opts.now.getTime() + opts.ttlMs),
        uris: [opts.trustDomain.idString()],
      },
      { name, privateKey: key.privateKey, keyId: keyIdentifier(spki) },
    );
    return new X509Authority(opts.trustDomain, cert, key.privateKey);
  }

  /**
   * A CA signed by the organisation's CA (`upstream`): Tessera's CA becomes an intermediate, and
   * the bundle holds the upstream root. Its lifetime is capped at the upstream certificate's.
   */
  static createSigned(
    opts: CaOptions & {
      upstream: { certificate: X509Certificate; privateKey: KeyObject; chain?: readonly X509Certificate[] };
    },
  ): X509Authority {
    const up = opts.upstream;
    if (!up.certificate.ca) throw new TypeError('ca: the upstream certificate is not a CA certificate');
    if (!up.certificate.checkPrivateKey(up.privateKey))
      throw new TypeError('ca: the upstream key does not belong to the upstream certificate');
    const key = caKeyPair(opts.keyType, opts.privateKey);
    const spki = spkiOf(key.publicKey);
    const upstreamNotAfter = new Date(up.certificate.validTo).getTime();
    const cert = signCaCertificate(
      {
        subject: toName({
          ...opts.subject,
          serialNumber: opts.subject.serialNumber ?? String(opts.now.getTime()),
        }),
        subjectPublicKey: spki,
        notBefore: new Date(opts.now.getTime() - BACKDATE_MS),
        notAfter: new Date(Math.min(opts.now.getTime() + opts.ttlMs, upstreamNotAfter)),
        uris: [opts.trustDomain.idString()],
      },
      {
        name: subjectName(up.certificate),
        privateKey: up.privateKey,
        keyId: keyIdentifier(spkiOf(up.certificate.publicKey)),
      },
    );
    const selfSignedUpstream = up.certificate.subject === up.certificate.issuer;
    return new X509Authority(
      opts.trustDomain,
      cert,
      key.privateKey,
      selfSignedUpstream ? [] : [up.certificate, ...(up.chain ?? [])],
    );
  }

  get notAfter(): Date {
    return new Date(this.#notAfter);
  }

  /** Issues an X509-SVID for a workload or agent of this trust domain. */
  issueX509Svid(req: IssueX509SvidRequest): IssuedX509Svid {
    let id: SpiffeId;
    try {
      id = typeof req.spiffeId === 'string' ? parseSpiffeId(req.spiffeId) : req.spiffeId;
    } catch (err) {
      throw refuse(`cannot issue for ${JSON.stringify(String(req.spiffeId))}: ${(err as Error).message}`);
    }
    if (!id.memberOf(this.trustDomain))
      throw refuse(`cannot issue for "${id}": it is not in trust domain "${this.trustDomain}"`);
    if (id.path === '')
      throw refuse(`cannot issue for "${id}": an X509-SVID must name a workload (the ID needs a path)`);
    if (!Number.isSafeInteger(req.ttlMs) || req.ttlMs <= 0)
      throw refuse(`TTL must be a positive number of milliseconds; got ${req.ttlMs}`);
    for (const d of req.dnsNames ?? [])
      if (!isDnsName(d)) throw refuse(`DNS name ${JSON.stringify(d)} is not a valid host name`);
    const now = req.now.getTime();
    if (now >= this.#notAfter)
      throw refuse(`the CA expired at ${this.notAfter.toISOString()}; rotate the authority`);
    let spkiDer: Buffer;
    let publicKeyBits: Buffer;
    if (req.csr !== undefined) {
      ({ spkiDer, publicKeyBits } = parseCsr(req.csr));
    } else if (req.publicKey !== undefined) {
      spkiDer = req.publicKey.export({ type: 'spki', format: 'der' });
      publicKeyBits = Buffer.from(spkiOf(req.publicKey).subjectPublicKey);
    } else {
      throw new TypeError('ca: issueX509Svid needs a csr or a publicKey');
    }
    const notAfter = Math.min(now + req.ttlMs, this.#notAfter);
    const firstDns = req.dnsNames?.[0];
    const t = this.#template;
    // The leaf from a precomputed template (issuer, algorithm and fixed extensions encoded once):
    // building it through the ASN.1 schema layer costs ~0.5 ms, which would dominate issuance.
    const serial = Buffer.from(randomSerial());
    const tbs = der.sequence(
      t.version,
      der.unsignedInteger(serial),
      t.algorithm,
      t.issuer,
      der.sequence(der.time(new Date(now - BACKDATE_MS)), der.time(new Date(notAfter))),
      firstDns === undefined ? t.subject : der.name([...LEAF_SUBJECT, ['2.5.4.3', firstDns, 'utf8']]),
      spkiDer,
      der.explicit(
        3,
        der.sequence(
          t.basicConstraints,
          t.keyUsage,
          t.extKeyUsage,
          der.extension(OID_SKI, false, der.octetString(createHash('sha1').update(publicKeyBits).digest())),
          t.authorityKeyId,
          der.extension(OID_SAN, false, der.generalNames([id.toString()], req.dnsNames ?? [])),
        ),
      ),
    );
    const leaf = der.sequence(tbs, t.algorithm, der.bitString(sign(t.hash, tbs, this.privateKey)));
    return new Issued(
      [leaf, ...this.#intermediates.map((c) => c.raw)],
      new Date(Math.floor(notAfter / 1000) * 1000),
      serial.toString('hex').toUpperCase(),
    );
  }
}
