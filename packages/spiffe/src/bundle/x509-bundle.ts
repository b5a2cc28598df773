import { X509Certificate } from 'node:crypto';
import { splitDer } from '../internal/der.js';
import { looksLikePem, parsePemBlocks, toPem } from '../internal/pem.js';
import type { TrustDomain } from '../spiffeid/trust-domain.js';
import { bundleInvalid, bundleNotFound } from './errors.js';
import type { X509BundleSource } from './source.js';

/**
 * The X.509 authorities (root CA certificates) of one trust domain, used to verify X509-SVIDs
 * from that trust domain and no other. Immutable: the `with*`/`without*` methods return copies.
 */
export class X509Bundle implements X509BundleSource {
  readonly trustDomain: TrustDomain;
  readonly authorities: readonly X509Certificate[];
  readonly #fingerprints: ReadonlySet<string>;

  constructor(trustDomain: TrustDomain, authorities: Iterable<X509Certificate> = []) {
    this.trustDomain = trustDomain;
    const seen = new Set<string>();
    const list: X509Certificate[] = [];
    for (const cert of authorities) {
      if (!(cert instanceof X509Certificate))
        throw new TypeError('bundle: authorities must be X509Certificate objects');
      const fp = cert.fingerprint256;
      if (seen.has(fp)) continue;
      seen.add(fp);
      list.push(cert);
    }
    this.authorities = Object.freeze(list);
    this.#fingerprints = seen;
  }

  /** True when `cert` (compared by SHA-256 fingerprint of its DER) is one of the authorities. */
  hasAuthority(cert: X509Certificate): boolean {
    return this.#fingerprints.has(cert.fingerprint256);
  }

  withAuthority(cert: X509Certificate): X509Bundle {
    return new X509Bundle(this.trustDomain, [...this.authorities, cert]);
  }

  withoutAuthority(cert: X509Certificate): X509Bundle {
    const fp = cert.fingerprint256;
    return new X509Bundle(
      this.trustDomain,
      this.authorities.filter((a) => a.fingerprint256 !== fp),
    );
  }

  /** The bundle itself when `trustDomain` is its own; otherwise ERR_BUNDLE_NOT_FOUND. */
  getX509BundleForTrustDomain(trustDomain: TrustDomain): X509Bundle {
    if (!this.trustDomain.equals(trustDomain)) throw bundleNotFound('X.509', trustDomain);
    return this;
  }

  /** Concatenated DER of the authorities, as the Workload API carries bundles. */
  toDer(): Buffer {
    return Buffer.concat(this.authorities.map((c) => c.raw));
  }

  /** PEM CERTIFICATE blocks, one per authority. */
  toPem(): string {
    return this.authorities.map((c) => toPem('CERTIFICATE', c.raw)).join('');
  }

  equals(other: X509Bundle | undefined | null): boolean {
    if (other == null || !this.trustDomain.equals(other.trustDomain)) return false;
    if (other.authorities.length !== this.authorities.length) return false;
    return this.authorities.every((a, i) => other.authorities[i]?.fingerprint256 === a.fingerprint256);
  }
}

/** Builds a bundle from certificates given as DER concatenation or PEM text. */
export function parseX509Bundle(trustDomain: TrustDomain, input: string | Uint8Array): X509Bundle {
  return looksLikePem(input)
    ? parseX509BundlePem(trustDomain, input)
    : parseX509BundleDer(trustDomain, typeof input === 'string' ? Buffer.from(input, 'latin1') : input);
}

/** Parses PEM text holding CERTIFICATE blocks (blocks of other types are skipped; no block at all is an error). */
export function parseX509BundlePem(trustDomain: TrustDomain, pem: string | Uint8Array): X509Bundle {
  const text = typeof pem === 'string' ? pem : Buffer.from(pem).toString('utf8');
  let blocks: ReturnType<typeof parsePemBlocks>;
  try {
    blocks = parsePemBlocks(text);
  } catch (err) {
    throw bundleInvalid('PEM X.509 bundle', trustDomain, (err as Error).message, err);
  }
  if (blocks.length === 0 && text.trim() !== '')
    throw bundleInvalid('PEM X.509 bundle', trustDomain, 'no PEM blocks found');
  // Blocks of other types are skipped, as go-spiffe's pemutil does.
  const certs = blocks.flatMap((b, i) =>
    b.type === 'CERTIFICATE' ? [parseCert(trustDomain, b.der, `PEM block ${i + 1}`)] : [],
  );
  return new X509Bundle(trustDomain, certs);
}

/** Parses concatenated DER certificates (the Workload API's `bundle` field). Empty input is an empty bundle. */
export function parseX509BundleDer(trustDomain: TrustDomain, der: Uint8Array): X509Bundle {
  let parts: Buffer[];
  try {
    parts = splitDer(der);
  } catch (err) {
    throw bundleInvalid('DER X.509 bundle', trustDomain, (err as Error).message, err);
  }
  return new X509Bundle(
    trustDomain,
    parts.map((d, i) => parseCert(trustDomain, d, `certificate ${i + 1}`)),
  );
}

function parseCert(td: TrustDomain, der: Buffer, where: string): X509Certificate {
  try {
    return new X509Certificate(der);
  } catch (err) {
    throw bundleInvalid(
      'X.509 bundle',
      td,
      `${where} is not a valid X.509 certificate (${(err as Error).message})`,
      err,
    );
  }
}
