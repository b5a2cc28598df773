import { createPrivateKey, createPublicKey, type KeyObject, type X509Certificate } from 'node:crypto';
import { ErrorCode, SpiffeError } from '../errors.js';
import { splitDer } from '../internal/der.js';
import { parsePemBlocks, toPem } from '../internal/pem.js';
import {
  type CertInfo,
  certInfo,
  certificateFromDer,
  hasKeyUsage,
  KU_CRL_SIGN,
  KU_DIGITAL_SIGNATURE,
  KU_KEY_CERT_SIGN,
} from '../internal/x509.js';
import { parseSpiffeId, type SpiffeId } from '../spiffeid/spiffe-id.js';
import type { X509SvidSource } from './source.js';

/** @internal Builds an ERR_X509SVID_INVALID error: the SVID is malformed or breaks the X509-SVID rules. */
export function x509SvidInvalid(message: string, cause?: unknown): SpiffeError {
  return new SpiffeError(
    ErrorCode.X509SVID_INVALID,
    `x509svid: ${message}`,
    cause === undefined ? undefined : { cause },
  );
}

const invalid = x509SvidInvalid;

/** Key types a workload can sign TLS handshakes with (what go-spiffe accepts: crypto.Signer keys). */
const SUPPORTED_KEY_TYPES: ReadonlySet<string> = new Set(['ec', 'rsa', 'ed25519']);

/**
 * An X509-SVID: a certificate chain (leaf first, then intermediates) whose leaf carries a SPIFFE ID,
 * and the private key of the leaf. Implements X509SvidSource, so a fixed SVID can be passed wherever
 * a live source is accepted.
 */
export class X509Svid implements X509SvidSource {
  readonly id: SpiffeId;
  /** Leaf first, then any intermediates; never the root. */
  readonly certificates: readonly X509Certificate[];
  readonly privateKey: KeyObject;
  /** The operator-chosen name of this SVID among several (Workload API `hint`); '' when none. */
  readonly hint: string;

  /** Use parseX509Svid / parseX509SvidRaw: they check the SPIFFE rules; this constructor does not. */
  constructor(id: SpiffeId, certificates: readonly X509Certificate[], privateKey: KeyObject, hint = '') {
    if (certificates.length === 0) throw invalid('empty certificates chain');
    this.id = id;
    this.certificates = Object.freeze([...certificates]);
    this.privateKey = privateKey;
    this.hint = hint;
  }

  /** The leaf (workload) certificate. */
  get leaf(): X509Certificate {
    return this.certificates[0] as X509Certificate;
  }

  /** The leaf's notAfter. */
  get expiresAt(): Date {
    return new Date(certInfo(this.leaf).notAfter);
  }

  /** Chain as PEM CERTIFICATE blocks (leaf first) and the key as PKCS#8 PEM. */
  marshal(): { certificates: string; privateKey: string } {
    return {
      certificates: this.certificates.map((c) => toPem('CERTIFICATE', c.raw)).join(''),
      privateKey: this.privateKey.export({ type: 'pkcs8', format: 'pem' }).toString(),
    };
  }

  /** Chain as concatenated DER (leaf first) and the key as PKCS#8 DER, as the Workload API carries them. */
  marshalRaw(): { certificates: Buffer; privateKey: Buffer } {
    return {
      certificates: Buffer.concat(this.certificates.map((c) => c.raw)),
      privateKey: this.privateKey.export({ type: 'pkcs8', format: 'der' }),
    };
  }

  /** X509SvidSource: a fixed SVID is its own source. */
  getX509Svid(): X509Svid {
    return this;
  }
}

/**
 * Parses a PEM chain (CERTIFICATE blocks, leaf first) and an unencrypted PKCS#8 PEM private key
 * ("PRIVATE KEY") into an X509-SVID, checking the X509-SVID rules and that the key belongs to the
 * leaf. As go-spiffe does, blocks of other types are skipped, so one file holding both the chain
 * and the key can be passed as both arguments. Throws ERR_X509SVID_INVALID naming the problem.
 */
export function parseX509Svid(
  certsPem: string | Uint8Array,
  keyPem: string | Uint8Array,
  hint = '',
): X509Svid {
  const blocks = pemBlocks(certsPem, 'certificate chain');
  const ders = blocks.filter((b) => b.type === 'CERTIFICATE').map((b) => b.der);
  if (ders.length === 0 && blocks.length > 0) {
    throw invalid(
      `no CERTIFICATE PEM block in the certificate chain input (found ${typesOf(blocks)}); pass the leaf certificate first, then any intermediates`,
    );
  }
  const allKeyBlocks = pemBlocks(keyPem, 'private key');
  const keyBlocks = allKeyBlocks.filter((b) => b.type === 'PRIVATE KEY');
  const keyBlock = keyBlocks[0];
  if (keyBlock === undefined) {
    throw invalid(
      allKeyBlocks.length === 0
        ? 'no PEM block found in the private key input'
        : `no "PRIVATE KEY" PEM block in the private key input (found ${typesOf(allKeyBlocks)}); the key must be unencrypted PKCS#8`,
    );
  }
  if (keyBlocks.length > 1) {
    throw invalid(`expected one "PRIVATE KEY" PEM block in the private key input; got ${keyBlocks.length}`);
  }
  return fromDerParts(ders, keyBlock.der, hint);
}

function typesOf(blocks: readonly { type: string }[]): string {
  return [...new Set(blocks.map((b) => JSON.stringify(b.type)))].join(', ');
}

/**
 * Parses the Workload API form: concatenated DER certificates (leaf first) and a PKCS#8 DER private
 * key. Same checks as parseX509Svid.
 */
export function parseX509SvidRaw(certsDer: Uint8Array, keyDer: Uint8Array, hint = ''): X509Svid {
  let ders: Buffer[];
  try {
    ders = splitDer(certsDer);
  } catch (err) {
    throw invalid(`cannot parse certificate chain DER: ${(err as Error).message}`, err);
  }
  return fromDerParts(ders, keyDer, hint);
}

/** The SPIFFE ID of a certificate: its one URI SAN. Throws ERR_X509SVID_INVALID otherwise. */
export function idFromCertificate(cert: X509Certificate): SpiffeId {
  return uriSanId('certificate', describeCert(cert, 'certificate'));
}

function pemBlocks(input: string | Uint8Array, what: string): ReturnType<typeof parsePemBlocks> {
  const text = typeof input === 'string' ? input : Buffer.from(input).toString('utf8');
  try {
    return parsePemBlocks(text);
  } catch (err) {
    throw invalid(`cannot parse ${what} PEM: ${(err as Error).message}`, err);
  }
}

function fromDerParts(ders: readonly Uint8Array[], keyDer: Uint8Array, hint: string): X509Svid {
  if (ders.length === 0) throw invalid('empty certificates chain; the leaf certificate must come first');
  const certs = ders.map((d, i) => {
    try {
      return certificateFromDer(d);
    } catch (err) {
      throw invalid(
        `certificate ${i + 1} of ${ders.length} is not a valid X.509 certificate (${(err as Error).message})`,
        err,
      );
    }
  });
  const leaf = certs[0] as X509Certificate;
  const id = checkLeaf(leaf, true);
  certs.forEach((c, i) => {
    if (i === 0) return;
    const where = `certificate ${i + 1} of ${certs.length}`;
    const info = describeCert(c, where);
    if (!info.isCa) {
      throw invalid(
        `${where} is not a CA; every certificate after the leaf must be a signing certificate with basicConstraints cA=true`,
      );
    }
    if (!hasKeyUsage(info, KU_KEY_CERT_SIGN)) {
      throw invalid(
        `${where} lacks the 'keyCertSign' key usage; every certificate after the leaf must be allowed to sign certificates`,
      );
    }
  });
  const privateKey = parsePrivateKey(keyDer);
  const leafSpki = leaf.publicKey.export({ type: 'spki', format: 'der' });
  const keySpki = createPublicKey(privateKey).export({ type: 'spki', format: 'der' });
  if (!leafSpki.equals(keySpki)) {
    throw invalid(
      `private key does not match the leaf certificate's public key (leaf "${id}"); pass the key the leaf was issued for`,
    );
  }
  return new X509Svid(id, certs, privateKey, hint);
}

function parsePrivateKey(keyDer: Uint8Array): KeyObject {
  let key: KeyObject;
  try {
    key = createPrivateKey({ key: Buffer.from(keyDer), format: 'der', type: 'pkcs8' });
  } catch (err) {
    throw invalid(
      `cannot parse private key: not an unencrypted PKCS#8 DER key (${(err as Error).message})`,
      err,
    );
  }
  const type = key.asymmetricKeyType ?? 'unknown';
  if (!SUPPORTED_KEY_TYPES.has(type)) {
    throw invalid(
      `private key type "${type}" is not supported; use an EC (P-256, P-384, P-521), RSA or Ed25519 key`,
    );
  }
  return key;
}

/**
 * @internal The leaf rules (X509-SVID spec §2.2, §2.5), returning the leaf's SPIFFE ID; throws
 * ERR_X509SVID_INVALID. A workload's own SVID (`ownSvid`) must also have keyUsage with
 * digitalSignature (go-spiffe Parse); a peer's is checked as go-spiffe Verify does: not a CA,
 * neither keyCertSign nor cRLSign.
 */
export function checkLeaf(leaf: X509Certificate, ownSvid: boolean): SpiffeId {
  const info = describeCert(leaf, 'leaf certificate');
  const id = uriSanId('leaf certificate', info);
  if (id.path === '') {
    throw invalid(
      `leaf certificate SPIFFE ID "${id}" has no path; an X509-SVID must name a workload (a trust domain ID belongs on a CA)`,
    );
  }
  if (info.isCa) {
    throw invalid(
      `leaf certificate of "${id}" has basicConstraints cA=true; an X509-SVID leaf must not be a CA`,
    );
  }
  if (ownSvid && !hasKeyUsage(info, KU_DIGITAL_SIGNATURE)) {
    throw invalid(
      info.keyUsage === undefined
        ? `leaf certificate of "${id}" has no keyUsage extension; it must have 'digitalSignature' set as key usage`
        : `leaf certificate of "${id}" must have 'digitalSignature' set as key usage`,
    );
  }
  if (hasKeyUsage(info, KU_KEY_CERT_SIGN)) {
    throw invalid(
      `leaf certificate of "${id}" has the 'keyCertSign' key usage; a leaf must not sign certificates`,
    );
  }
  if (hasKeyUsage(info, KU_CRL_SIGN)) {
    throw invalid(`leaf certificate of "${id}" has the 'cRLSign' key usage; a leaf must not sign CRLs`);
  }
  return id;
}

function describeCert(cert: X509Certificate, what: string): CertInfo {
  try {
    return certInfo(cert);
  } catch (err) {
    throw invalid(`${what} cannot be decoded: ${(err as Error).message}`, err);
  }
}

function uriSanId(what: string, info: CertInfo): SpiffeId {
  const uris = info.uris;
  const uri = uris[0];
  if (uri === undefined) {
    throw invalid(`${what} contains no URI SAN; an X509-SVID carries its SPIFFE ID as exactly one URI SAN`);
  }
  if (uris.length > 1) {
    throw invalid(
      `${what} contains more than one URI SAN (${uris.map((u) => JSON.stringify(u)).join(', ')}); an X509-SVID has exactly one`,
    );
  }
  try {
    return parseSpiffeId(uri);
  } catch (err) {
    throw invalid(`${what} URI SAN is not a valid SPIFFE ID: ${(err as Error).message}`, err);
  }
}
