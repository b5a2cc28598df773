import { X509Certificate } from 'node:crypto';
import type { X509BundleSource } from '../bundle/source.js';
import { ErrorCode, SpiffeError } from '../errors.js';
import {
  type CertInfo,
  certInfo,
  certificateFromDer,
  KU_CRL_SIGN,
  KU_KEY_CERT_SIGN,
} from '../internal/x509.js';
import type { SpiffeId } from '../spiffeid/spiffe-id.js';
import { idFromCertificateWith } from './x509-svid.js';

export interface VerifyX509SvidOptions {
  /** The time at which validity windows are checked; default now. */
  now?: Date;
}

export interface VerifiedX509Svid {
  id: SpiffeId;
  /** Leaf first, then the intermediates used, ending with the trusted root from the bundle. */
  verifiedChain: X509Certificate[];
}

function refused(message: string, cause?: unknown): SpiffeError {
  return new SpiffeError(
    ErrorCode.X509SVID_VERIFY,
    `x509svid: ${message}`,
    cause === undefined ? undefined : { cause },
  );
}

const MAX_DEPTH = 10;

/**
 * Verifies a peer's X509-SVID chain (leaf first, then any intermediates it presented) as the
 * X509-SVID spec says (§2.5): one URI SAN holding a SPIFFE ID with a path, a leaf that is not a CA
 * and cannot sign certificates, and a path through CA intermediates to a root in the bundle of the
 * leaf's OWN trust domain, every certificate within its validity window. Returns the peer's ID
 * and the chain that verified. Every failure is ERR_X509SVID_VERIFY with the reason.
 */
export function verifyX509Svid(
  chain: readonly (X509Certificate | Uint8Array)[],
  bundles: X509BundleSource,
  options: VerifyX509SvidOptions = {},
): VerifiedX509Svid {
  if (chain.length === 0) throw refused('empty certificates chain');
  const certs = chain.map((c, i) => {
    if (c instanceof X509Certificate) return c;
    try {
      return certificateFromDer(c);
    } catch (err) {
      throw refused(`certificate ${i + 1} of ${chain.length} is not a valid X.509 certificate`, err);
    }
  });
  const leaf = certs[0] as X509Certificate;
  const id = idFromCertificateWith(leaf, (m, cause) => refused(`could not get leaf SPIFFE ID: ${m}`, cause));
  if (id.path === '') throw refused(`leaf SPIFFE ID "${id}" has no path; an X509-SVID must name a workload`);
  const leafInfo = info(leaf, 'leaf certificate');
  if (leafInfo.isCa) throw refused('leaf certificate with CA flag set to true');
  if (((leafInfo.keyUsage ?? 0) & KU_KEY_CERT_SIGN) !== 0)
    throw refused('leaf certificate with KeyCertSign key usage');
  if (((leafInfo.keyUsage ?? 0) & KU_CRL_SIGN) !== 0)
    throw refused('leaf certificate with KeyCrlSign key usage');

  let roots: readonly X509Certificate[];
  try {
    roots = bundles.getX509BundleForTrustDomain(id.trustDomain).authorities;
  } catch (err) {
    throw refused(
      `could not get X.509 bundle for trust domain "${id.trustDomain}": ${(err as Error).message}`,
      err,
    );
  }
  if (roots.length === 0) {
    throw refused(
      `the X.509 bundle of trust domain "${id.trustDomain}" has no authorities; no SVID of it can be trusted`,
    );
  }
  const now = (options.now ?? new Date()).getTime();
  checkCert(leaf, leafInfo, now, 'leaf certificate');
  const path = buildPath(leaf, certs.slice(1), roots, now, 0, []);
  if (path.chain === undefined) {
    throw refused(
      `certificate of "${id}" does not chain to an authority of trust domain "${id.trustDomain}"` +
        (path.reason === undefined ? '' : ` (${path.reason})`),
    );
  }
  return { id, verifiedChain: path.chain };
}

function info(cert: X509Certificate, what: string): CertInfo {
  try {
    return certInfo(cert);
  } catch (err) {
    throw refused(`${what} has malformed extensions: ${(err as Error).message}`, err);
  }
}

function checkCert(cert: X509Certificate, ci: CertInfo, now: number, what: string): void {
  if (now < ci.notBefore)
    throw refused(`${what} is not valid yet (notBefore ${new Date(ci.notBefore).toISOString()})`);
  if (now > ci.notAfter)
    throw refused(`${what} has expired (notAfter ${new Date(ci.notAfter).toISOString()})`);
  const crit = ci.unhandledCritical[0];
  if (crit !== undefined) throw refused(`${what} has an unhandled critical extension ${crit}`);
  if (ci.hasNameConstraints) throw refused(`${what} has name constraints, which are not supported`);
  void cert;
}

/** Why `issuer` cannot sign certificates, or undefined when it can. Go's x509 rules for CA certificates. */
function signingProblem(ci: CertInfo, below: number): string | undefined {
  if (!ci.hasBasicConstraints || !ci.isCa) return 'is not a CA';
  if (ci.keyUsage !== undefined && (ci.keyUsage & KU_KEY_CERT_SIGN) === 0)
    return "lacks 'keyCertSign' key usage";
  if (ci.pathLen !== undefined && below > ci.pathLen) return `path length constraint ${ci.pathLen} exceeded`;
  return undefined;
}

interface PathResult {
  chain?: X509Certificate[];
  reason?: string;
}

/**
 * Depth-first path building: at each step try the bundle's roots first (a root ends the path),
 * then the presented intermediates. `below` counts the intermediates under `cert` for pathLen.
 */
function buildPath(
  cert: X509Certificate,
  intermediates: readonly X509Certificate[],
  roots: readonly X509Certificate[],
  now: number,
  below: number,
  visited: X509Certificate[],
): PathResult {
  let reason: string | undefined;
  // Issuer candidates are matched by name; the signature check decides between candidates that
  // share a name (a rotated CA keeps its subject).
  const issuerName = certInfo(cert).issuer;
  for (const root of roots) {
    const ri = certInfoOrUndefined(root);
    if (ri === undefined || ri.subject !== issuerName) continue;
    const problem = signingProblem(ri, below);
    if (problem !== undefined) {
      reason = `bundle authority "${root.subject.replace(/\n/g, ', ')}" ${problem}`;
      continue;
    }
    if (now < ri.notBefore || now > ri.notAfter) {
      reason = `bundle authority "${root.subject.replace(/\n/g, ', ')}" is outside its validity window`;
      continue;
    }
    if (!cert.verify(ri.publicKey)) {
      reason = 'signature does not verify with the issuing authority key';
      continue;
    }
    return { chain: [cert, root] };
  }
  if (visited.length >= MAX_DEPTH) return { reason: `chain longer than ${MAX_DEPTH} certificates` };
  for (const inter of intermediates) {
    if (visited.includes(inter) || inter === cert) continue;
    const ii = certInfoOrUndefined(inter);
    if (ii === undefined) {
      reason = 'an intermediate certificate is malformed';
      continue;
    }
    if (ii.subject !== issuerName) continue;
    const problem = signingProblem(ii, below);
    if (problem !== undefined) {
      reason = `intermediate certificate "${inter.subject.replace(/\n/g, ', ')}" ${problem}`;
      continue;
    }
    try {
      checkCert(inter, ii, now, `intermediate certificate "${inter.subject.replace(/\n/g, ', ')}"`);
    } catch (err) {
      reason = (err as Error).message.replace(/^x509svid: /, '');
      continue;
    }
    if (!cert.verify(ii.publicKey)) {
      reason = 'signature does not verify with the intermediate certificate key';
      continue;
    }
    const rest = buildPath(inter, intermediates, roots, now, ii.selfIssued ? below : below + 1, [
      ...visited,
      cert,
    ]);
    if (rest.chain !== undefined) return { chain: [cert, ...rest.chain] };
    reason = rest.reason ?? reason;
  }
  return reason === undefined
    ? { reason: 'no issuer found among the presented intermediates and the bundle authorities' }
    : { reason };
}

function certInfoOrUndefined(cert: X509Certificate): CertInfo | undefined {
  try {
    return certInfo(cert);
  } catch {
    return undefined;
  }
}
