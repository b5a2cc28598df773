import { X509Certificate } from 'node:crypto';
import type { X509BundleSource } from '../bundle/source.js';
import type { X509Bundle } from '../bundle/x509-bundle.js';
import { ErrorCode, isSpiffeError, SpiffeError } from '../errors.js';
import {
  type CertInfo,
  certInfo,
  certificateFromDer,
  hasKeyUsage,
  KU_KEY_CERT_SIGN,
  oneLineName,
} from '../internal/x509.js';
import type { SpiffeId } from '../spiffeid/spiffe-id.js';
import { checkX509Revocation, type X509CrlSource } from './x509-crl.js';
import { checkLeaf, x509SvidInvalid } from './x509-svid.js';

export interface VerifyX509SvidOptions {
  /** The time at which every certificate's validity window is checked; default the current time. */
  now?: Date;
  /**
   * Opt-in revocation checking: a chain with a certificate on a CRL its issuer signed is refused
   * with ERR_X509SVID_REVOKED (an X509Source is one: it holds the CRLs the Workload API sends).
   */
  revocation?: X509CrlSource;
}

export interface VerifiedX509Svid {
  /** The SPIFFE ID in the leaf's URI SAN. */
  id: SpiffeId;
  /** Leaf first, then the intermediates used, ending with the trusted authority from the bundle. */
  verifiedChain: X509Certificate[];
}

function refused(message: string, cause?: unknown): SpiffeError {
  return new SpiffeError(
    ErrorCode.X509SVID_VERIFY,
    `x509svid: ${message}`,
    cause === undefined ? undefined : { cause },
  );
}

/** Most intermediates between a leaf and its root. SPIRE deployments use 0 to 2. */
const MAX_INTERMEDIATES = 10;
/**
 * Most issuer candidates a single verification may try (as go's crypto/x509 caps signature checks
 * at 100): a peer presenting many look-alike intermediates cannot make path building explode.
 */
const MAX_CANDIDATES = 100;

/**
 * Verifies a peer's X509-SVID chain (leaf first, then any intermediates it presented, as DER or
 * X509Certificate) against the X.509 bundle of the leaf's OWN trust domain (X509-SVID spec §2.5).
 * Returns the peer's SPIFFE ID and the chain that verified.
 *
 * Errors (SpiffeError):
 * - ERR_X509SVID_INVALID: the chain is not an X509-SVID at all: empty, undecodable DER or extensions,
 *   no / several / a non-SPIFFE URI SAN, an ID without a path, a leaf that is a CA or has
 *   keyCertSign or cRLSign. (As go-spiffe's Verify, a peer leaf is not required to have keyUsage;
 *   parseX509Svid requires digitalSignature for an SVID a workload holds.)
 * - ERR_BUNDLE_NOT_FOUND: the bundle source has no bundle for the leaf's trust domain.
 * - ERR_X509SVID_VERIFY: the chain does not verify: no path through CA intermediates (cA=true,
 *   keyCertSign, path length) to an authority of that bundle, a bad signature, a certificate outside
 *   its validity window, an unsupported critical extension or name constraints, an empty bundle.
 */
export function verifyX509Svid(
  chain: readonly (X509Certificate | Uint8Array)[],
  bundles: X509BundleSource,
  options: VerifyX509SvidOptions = {},
): VerifiedX509Svid {
  const now = options.now === undefined ? Date.now() : options.now.getTime();
  if (Number.isNaN(now)) throw new TypeError('x509svid: options.now must be a valid Date');
  if (chain.length === 0) {
    throw x509SvidInvalid('empty certificates chain; the peer must present its leaf certificate first');
  }
  const certs = chain.map((c, i) => toCertificate(c, i, chain.length));
  const leaf = certs[0] as X509Certificate;
  const id = checkLeaf(leaf, false);
  const intermediates = certs.slice(1);
  intermediates.forEach((c, i) => {
    try {
      certInfo(c);
    } catch (err) {
      throw x509SvidInvalid(
        `certificate ${i + 2} of ${certs.length} presented with "${id}" cannot be decoded: ${(err as Error).message}`,
        err,
      );
    }
  });

  const bundle = bundleFor(bundles, id);
  const roots = bundle.authorities;
  if (roots.length === 0) {
    throw refused(
      `the X.509 bundle of trust domain "${id.trustDomain}" has no authorities, so no X509-SVID of it ("${id}") can be trusted`,
    );
  }

  const leafInfo = certInfo(leaf);
  const leafProblem = certProblem(leafInfo, now);
  if (leafProblem !== undefined) throw refused(`leaf certificate ${leafProblem} for "${id}"`);

  const ctx: PathContext = {
    roots,
    intermediates,
    now,
    candidates: 0,
    signatures: new Map(),
    reason: undefined,
  };
  const path = extendPath(leaf, leafInfo, 0, [], ctx);
  if (path === undefined) {
    throw refused(
      `certificate of "${id}" does not chain to an authority of trust domain "${id.trustDomain}": ${
        ctx.reason ??
        `its issuer "${oneLineName(leafInfo.issuer)}" is neither a presented intermediate nor a bundle authority`
      }`,
    );
  }
  if (options.revocation !== undefined) checkX509Revocation(path, options.revocation.getX509Crls());
  return { id, verifiedChain: path };
}

/**
 * Verifies any certificate chain (not only an X509-SVID) against a set of trusted roots with the
 * same path building as verifyX509Svid: used where a peer proves a non-SPIFFE identity, such as a
 * node certificate issued by an organisation's CA (x509pop attestation). Returns the path, leaf
 * first, ending with the root. Throws ERR_X509SVID_VERIFY saying why no path exists.
 */
export function verifyCertificateChain(
  chain: readonly (X509Certificate | Uint8Array)[],
  roots: readonly X509Certificate[],
  options: { now?: Date } = {},
): X509Certificate[] {
  const now = options.now === undefined ? Date.now() : options.now.getTime();
  if (chain.length === 0) throw x509SvidInvalid('empty certificates chain');
  if (roots.length === 0) throw refused('no trusted roots were given');
  const certs = chain.map((c, i) => toCertificate(c, i, chain.length));
  const infos = certs.map((c, i) => {
    try {
      return certInfo(c);
    } catch (err) {
      throw x509SvidInvalid(
        `certificate ${i + 1} of ${certs.length} cannot be decoded: ${(err as Error).message}`,
        err,
      );
    }
  });
  const leaf = certs[0] as X509Certificate;
  const leafInfo = infos[0] as CertInfo;
  const problem = certProblem(leafInfo, now);
  if (problem !== undefined) throw refused(`certificate "${oneLineName(leafInfo.subject)}" ${problem}`);
  const ctx: PathContext = {
    roots,
    intermediates: certs.slice(1),
    now,
    candidates: 0,
    signatures: new Map(),
    reason: undefined,
  };
  const path = extendPath(leaf, leafInfo, 0, [], ctx);
  if (path === undefined)
    throw refused(
      `certificate "${oneLineName(leafInfo.subject)}" does not chain to a trusted root: ${
        ctx.reason ??
        `its issuer "${oneLineName(leafInfo.issuer)}" is neither a presented intermediate nor a trusted root`
      }`,
    );
  return path;
}

function toCertificate(c: X509Certificate | Uint8Array, i: number, n: number): X509Certificate {
  if (c instanceof X509Certificate) return c;
  if (!(c instanceof Uint8Array)) {
    throw new TypeError('x509svid: chain elements must be X509Certificate objects or DER bytes');
  }
  try {
    return certificateFromDer(c);
  } catch (err) {
    throw x509SvidInvalid(
      `certificate ${i + 1} of ${n} is not a valid X.509 certificate (${(err as Error).message})`,
      err,
    );
  }
}

/** The bundle of the leaf's own trust domain, and never another's. */
function bundleFor(bundles: X509BundleSource, id: SpiffeId): X509Bundle {
  let bundle: X509Bundle;
  try {
    bundle = bundles.getX509BundleForTrustDomain(id.trustDomain);
  } catch (err) {
    const message = `no X.509 bundle for trust domain "${id.trustDomain}" of "${id}" (${(err as Error).message}); add that trust domain's bundle (e.g. by federation) to trust its SVIDs`;
    if (isSpiffeError(err, ErrorCode.BUNDLE_NOT_FOUND)) {
      throw new SpiffeError(ErrorCode.BUNDLE_NOT_FOUND, `x509svid: ${message}`, { cause: err });
    }
    throw refused(message, err);
  }
  if (!bundle.trustDomain.equals(id.trustDomain)) {
    throw refused(
      `the bundle source returned the bundle of trust domain "${bundle.trustDomain}" when asked for "${id.trustDomain}" (for "${id}"); a trust domain's SVIDs are verified with its own bundle only`,
    );
  }
  return bundle;
}

/** Why a certificate cannot be used at `now` regardless of its place in the chain, or undefined. */
function certProblem(info: CertInfo, now: number): string | undefined {
  if (now < info.notBefore) return `is not valid yet (notBefore ${new Date(info.notBefore).toISOString()})`;
  if (now > info.notAfter) return `has expired (notAfter ${new Date(info.notAfter).toISOString()})`;
  const critical = info.unhandledCritical[0];
  if (critical !== undefined) return `has an unsupported critical extension ${critical}`;
  if (info.hasNameConstraints) return 'has name constraints, which this verifier does not support';
  return undefined;
}

/** Why `info` cannot sign a certificate with `below` non-self-issued intermediates under it, or undefined. */
function signingProblem(info: CertInfo, below: number): string | undefined {
  if (!info.isCa) return 'is not a CA (basicConstraints cA must be true)';
  if (!hasKeyUsage(info, KU_KEY_CERT_SIGN)) return "lacks the 'keyCertSign' key usage";
  if (info.pathLen !== undefined && below > info.pathLen) {
    return `has path length constraint ${info.pathLen}, exceeded by ${below} intermediate(s) below it`;
  }
  return undefined;
}

interface PathContext {
  readonly roots: readonly X509Certificate[];
  readonly intermediates: readonly X509Certificate[];
  readonly now: number;
  candidates: number;
  /** Signature results per (certificate, issuer) link, so each link is checked once per verification. */
  readonly signatures: Map<X509Certificate, Map<X509Certificate, boolean>>;
  /** Why the most recent candidate issuer was rejected; reported when no path is found. */
  reason: string | undefined;
}

/**
 * Depth-first path building from `cert` upwards. At each step the bundle's authorities are tried
 * first (one ends the path), then each presented intermediate whose subject is `cert`'s issuer,
 * so a peer that sends several CAs of the same name (a rotation) or sends the root too still
 * verifies. `below` counts the non-self-issued intermediates under `cert`'s issuer, for pathLen.
 */
function extendPath(
  cert: X509Certificate,
  info: CertInfo,
  below: number,
  visited: readonly X509Certificate[],
  ctx: PathContext,
): X509Certificate[] | undefined {
  for (const root of ctx.roots) {
    let rootInfo: CertInfo;
    try {
      rootInfo = certInfo(root);
    } catch (err) {
      ctx.reason = `bundle authority "${oneLineName(root.subject)}" cannot be decoded: ${(err as Error).message}`;
      continue;
    }
    if (rootInfo.subject !== info.issuer) continue;
    if (issues(cert, root, rootInfo, below, 'bundle authority', ctx)) return [cert, root];
  }
  if (visited.length >= MAX_INTERMEDIATES) {
    ctx.reason = `the path is longer than ${MAX_INTERMEDIATES} intermediates`;
    return undefined;
  }
  for (const inter of ctx.intermediates) {
    if (inter === cert || visited.includes(inter)) continue;
    const interInfo = certInfo(inter); // decoded up front in verifyX509Svid
    if (interInfo.subject !== info.issuer) continue;
    if (!issues(cert, inter, interInfo, below, 'intermediate certificate', ctx)) continue;
    const rest = extendPath(
      inter,
      interInfo,
      interInfo.selfIssued ? below : below + 1,
      [...visited, cert],
      ctx,
    );
    if (rest !== undefined) return [cert, ...rest];
  }
  return undefined;
}

/** True when `issuer` may sign certificates and did sign `cert`; otherwise records why not. */
function issues(
  cert: X509Certificate,
  issuer: X509Certificate,
  issuerInfo: CertInfo,
  below: number,
  what: string,
  ctx: PathContext,
): boolean {
  const name = `${what} "${oneLineName(issuerInfo.subject)}"`;
  const problem = signingProblem(issuerInfo, below) ?? certProblem(issuerInfo, ctx.now);
  if (problem !== undefined) {
    ctx.reason = `${name} ${problem}`;
    return false;
  }
  // Name, authority/subject key identifiers (OpenSSL X509_check_issued): rules out a same-name CA
  // with another key (a rotated or a rogue CA) without a signature check.
  if (!cert.checkIssued(issuer)) {
    ctx.reason = `${name} has the issuer's name but is not its issuer (key identifiers differ)`;
    return false;
  }
  ctx.candidates += 1;
  if (ctx.candidates > MAX_CANDIDATES) {
    throw refused(
      `gave up after ${MAX_CANDIDATES} candidate issuers; the peer presented too many look-alike CAs`,
    );
  }
  let checked = ctx.signatures.get(cert);
  if (checked === undefined) {
    checked = new Map();
    ctx.signatures.set(cert, checked);
  }
  let valid = checked.get(issuer);
  if (valid === undefined) {
    valid = cert.verify(issuerInfo.publicKey);
    checked.set(issuer, valid);
  }
  if (!valid) {
    ctx.reason = `the signature of "${oneLineName(cert.subject)}" does not verify with the key of ${name}`;
    return false;
  }
  return true;
}
