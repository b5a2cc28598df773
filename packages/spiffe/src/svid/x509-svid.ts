import { createPrivateKey, type KeyObject, X509Certificate } from 'node:crypto';
import { ErrorCode, SpiffeError } from '../errors.js';
import { splitDer } from '../internal/der.js';
import { parsePemBlocks, toPem } from '../internal/pem.js';
import { certInfo, KU_CRL_SIGN, KU_DIGITAL_SIGNATURE, KU_KEY_CERT_SIGN } from '../internal/x509.js';
import { parseSpiffeId, type SpiffeId } from '../spiffeid/spiffe-id.js';
import type { X509SvidSource } from './source.js';

function invalid(message: string, cause?: unknown): SpiffeError {
  return new SpiffeError(
    ErrorCode.X509SVID_INVALID,
    `x509svid: ${message}`,
    cause === undefined ? undefined : { cause },
  );
}

/**
 * An X509-SVID: a certificate chain (leaf first, then intermediates) whose leaf carries a SPIFFE ID,
 * and the private key of the leaf. Implements X509SvidSource, so a fixed SVID can be passed wherever
 * a live source is accepted.
 */
export class X509Svid implements X509SvidSource {
  readonly id: SpiffeId;
  readonly certificates: readonly X509Certificate[];
  readonly privateKey: KeyObject;
  /** The operator-chosen name of this SVID among several (Workload API `hint`); '' when none. */
  readonly hint: string;

  /** Use parseX509Svid / parseX509SvidRaw: they check the SPIFFE rules; this constructor does not. */
  constructor(id: SpiffeId, certificates: readonly X509Certificate[], privateKey: KeyObject, hint = '') {
    this.id = id;
    this.certificates = Object.freeze([...certificates]);
    this.privateKey = privateKey;
    this.hint = hint;
  }

  get leaf(): X509Certificate {
    const leaf = this.certificates[0];
    if (leaf === undefined) throw invalid('empty certificates chain');
    return leaf;
  }

  /** The leaf's notAfter. */
  get expiresAt(): Date {
    return new Date(certInfo(this.leaf).notAfter);
  }

  /** Chain as PEM CERTIFICATE blocks and the key as PKCS#8 PEM. */
  marshal(): { certificates: string; privateKey: string } {
    return {
      certificates: this.certificates.map((c) => toPem('CERTIFICATE', c.raw)).join(''),
      privateKey: this.privateKey.export({ type: 'pkcs8', format: 'pem' }).toString(),
    };
  }

  /** Chain as concatenated DER and the key as PKCS#8 DER, as the Workload API carries them. */
  marshalRaw(): { certificates: Buffer; privateKey: Buffer } {
    return {
      certificates: Buffer.concat(this.certificates.map((c) => c.raw)),
      privateKey: this.privateKey.export({ type: 'pkcs8', format: 'der' }),
    };
  }

  getX509Svid(): X509Svid {
    return this;
  }
}

/** Parses a PEM chain (leaf first) and a PEM PKCS#8 private key into a checked X509-SVID. */
export function parseX509Svid(
  certsPem: string | Uint8Array,
  keyPem: string | Uint8Array,
  hint = '',
): X509Svid {
  const text = typeof certsPem === 'string' ? certsPem : Buffer.from(certsPem).toString('utf8');
  let blocks: ReturnType<typeof parsePemBlocks>;
  try {
    blocks = parsePemBlocks(text);
  } catch (err) {
    throw invalid(`cannot parse certificate PEM: ${(err as Error).message}`, err);
  }
  const ders = blocks.map((b, i) => {
    if (b.type !== 'CERTIFICATE') {
      throw invalid(
        `PEM block ${i + 1} of the certificate chain is "${b.type}"; only CERTIFICATE blocks are allowed`,
      );
    }
    return b.der;
  });
  const keyText = typeof keyPem === 'string' ? keyPem : Buffer.from(keyPem).toString('utf8');
  let keyBlocks: ReturnType<typeof parsePemBlocks>;
  try {
    keyBlocks = parsePemBlocks(keyText);
  } catch (err) {
    throw invalid(`cannot parse private key PEM: ${(err as Error).message}`, err);
  }
  const keyBlock = keyBlocks[0];
  if (keyBlock === undefined) throw invalid('no PEM block found in the private key input');
  if (keyBlocks.length > 1) throw invalid(`expected one private key PEM block; got ${keyBlocks.length}`);
  if (keyBlock.type !== 'PRIVATE KEY') {
    throw invalid(
      `private key PEM block is "${keyBlock.type}"; expected an unencrypted PKCS#8 "PRIVATE KEY" block`,
    );
  }
  return fromDerParts(ders, keyBlock.der, hint);
}

/** Parses the Workload API form: concatenated DER certificates (leaf first) and a PKCS#8 DER key. */
export function parseX509SvidRaw(certsDer: Uint8Array, keyDer: Uint8Array, hint = ''): X509Svid {
  let ders: Buffer[];
  try {
    ders = splitDer(certsDer);
  } catch (err) {
    throw invalid(`cannot parse certificate chain DER: ${(err as Error).message}`, err);
  }
  return fromDerParts(ders, keyDer, hint);
}

function fromDerParts(ders: readonly Uint8Array[], keyDer: Uint8Array, hint: string): X509Svid {
  if (ders.length === 0) throw invalid('empty certificates chain');
  const certs = ders.map((d, i) => {
    try {
      return new X509Certificate(d);
    } catch (err) {
      throw invalid(
        `certificate ${i + 1} of ${ders.length} is not a valid X.509 certificate: ${(err as Error).message}`,
        err,
      );
    }
  });
  const id = checkChainShape(certs);
  let privateKey: KeyObject;
  try {
    privateKey = createPrivateKey({ key: Buffer.from(keyDer), format: 'der', type: 'pkcs8' });
  } catch (err) {
    throw invalid(
      `cannot parse private key: not an unencrypted PKCS#8 DER key (${(err as Error).message})`,
      err,
    );
  }
  const leaf = certs[0] as X509Certificate;
  if (!leaf.checkPrivateKey(privateKey)) throw invalid('leaf certificate does not match private key');
  return new X509Svid(id, certs, privateKey, hint);
}

/** The leaf and signing-certificate rules for an SVID a workload holds (go-spiffe ParseRaw, spec §2.2–2.4). */
function checkChainShape(certs: readonly X509Certificate[]): SpiffeId {
  const leaf = certs[0] as X509Certificate;
  const id = idFromCertificateWith(leaf, invalid);
  if (id.path === '')
    throw invalid(`leaf certificate SPIFFE ID "${id}" has no path; an X509-SVID must name a workload`);
  const info = describe(leaf, 'leaf certificate');
  if (info.isCa) throw invalid('leaf certificate must not have CA flag set to true');
  if (((info.keyUsage ?? 0) & KU_DIGITAL_SIGNATURE) === 0) {
    throw invalid("leaf certificate must have 'digitalSignature' set as key usage");
  }
  if (((info.keyUsage ?? 0) & KU_KEY_CERT_SIGN) !== 0)
    throw invalid("leaf certificate must not have 'keyCertSign' set as key usage");
  if (((info.keyUsage ?? 0) & KU_CRL_SIGN) !== 0)
    throw invalid("leaf certificate must not have 'cRLSign' set as key usage");
  certs.forEach((c, i) => {
    if (i === 0) return;
    const ci = describe(c, `certificate ${i + 1} of ${certs.length}`);
    if (!ci.isCa)
      throw invalid(`signing certificate ${i + 1} of ${certs.length} must have CA flag set to true`);
    if (((ci.keyUsage ?? 0) & KU_KEY_CERT_SIGN) === 0) {
      throw invalid(
        `signing certificate ${i + 1} of ${certs.length} must have 'keyCertSign' set as key usage`,
      );
    }
  });
  return id;
}

function describe(cert: X509Certificate, what: string): ReturnType<typeof certInfo> {
  try {
    return certInfo(cert);
  } catch (err) {
    throw invalid(`${what} has malformed extensions: ${(err as Error).message}`, err);
  }
}

/** @internal The SPIFFE ID in a certificate's single URI SAN, with errors built by `fail`. */
export function idFromCertificateWith(
  cert: X509Certificate,
  fail: (message: string, cause?: unknown) => SpiffeError,
): SpiffeId {
  let uris: readonly string[];
  try {
    uris = certInfo(cert).uris;
  } catch (err) {
    throw fail(`certificate has malformed extensions: ${(err as Error).message}`, err);
  }
  if (uris.length === 0) throw fail('certificate contains no URI SAN');
  if (uris.length > 1)
    throw fail(`certificate contains more than one URI SAN (${uris.length}); an X509-SVID has exactly one`);
  try {
    return parseSpiffeId(uris[0] as string);
  } catch (err) {
    throw fail(`certificate URI SAN is not a valid SPIFFE ID: ${(err as Error).message}`, err);
  }
}

/** The SPIFFE ID of a certificate: its one URI SAN. Throws ERR_X509SVID_INVALID otherwise. */
export function idFromCertificate(cert: X509Certificate): SpiffeId {
  return idFromCertificateWith(cert, invalid);
}
