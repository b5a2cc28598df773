// What the helper's files hold, computed from what the Workload API delivered: pure functions of
// the X.509 context, the JWT bundles and the configuration (spiffe-helper's layout).
import type { JwtBundleSet, JwtSvid, X509Context, X509Svid } from '@tessera/spiffe';
import { X509Bundle } from '@tessera/spiffe';
import { TesseraError, TesseraErrorCode } from '../common/errors.js';

export interface X509Files {
  /** The SVID written (for logs: its ID, serial and expiry). */
  readonly svid: X509Svid;
  /** svid_file_name: the leaf, then the intermediates unless they go to the bundle. */
  readonly certificates: string;
  /** svid_key_file_name: the private key, PKCS#8 PEM. */
  readonly privateKey: string;
  /** svid_bundle_file_name: the CAs of the SVID's trust domain (and more, as configured). */
  readonly bundle: string;
  /** svid_combined_file_name: the key, then the whole chain. */
  readonly combined: string;
}

export interface X509FilesOptions {
  hint: string;
  addIntermediatesToBundle: boolean;
  includeFederatedDomains: boolean;
  omitExpired: boolean;
  now: Date;
}

/** The SVID with `hint`, or the default (first) one when hint is ''. ERR_HELPER_FETCH when none has it. */
export function pickSvid<S extends { readonly hint: string }>(
  svids: readonly S[],
  hint: string,
  what: string,
): S {
  const svid = hint === '' ? svids[0] : svids.find((s) => s.hint === hint);
  if (svid !== undefined) return svid;
  const hints = svids.map((s) => JSON.stringify(s.hint)).join(', ');
  throw new TesseraError(
    TesseraErrorCode.HELPER_FETCH,
    svids.length === 0
      ? `helper: the Workload API returned no ${what}`
      : `helper: no ${what} has the hint ${JSON.stringify(hint)} (hint in the configuration); the Workload API gave ${svids.length} with the hints ${hints}: set hint to one of them, or give the entry that hint`,
  );
}

export function x509Files(ctx: X509Context, o: X509FilesOptions): X509Files {
  const svid = pickSvid(ctx.svids, o.hint, 'X509-SVID');
  const td = svid.id.trustDomain;
  const own = ctx.bundles.get(td);
  if (own === undefined)
    throw new TesseraError(
      TesseraErrorCode.HELPER_FETCH,
      `helper: the Workload API sent no X.509 bundle for ${td.name}, the trust domain of ${svid.id}`,
    );
  const intermediates = svid.certificates.slice(1);
  let authorities = [...own.authorities, ...(o.addIntermediatesToBundle ? intermediates : [])];
  if (o.includeFederatedDomains)
    for (const b of ctx.bundles.list()) if (!b.trustDomain.equals(td)) authorities.push(...b.authorities);
  if (o.omitExpired) authorities = authorities.filter((c) => new Date(c.validTo) > o.now);
  const { certificates: chain, privateKey } = svid.marshal();
  const certificates = o.addIntermediatesToBundle ? new X509Bundle(td, [svid.leaf]).toPem() : chain;
  return {
    svid,
    certificates,
    privateKey,
    bundle: new X509Bundle(td, authorities).toPem(),
    combined: privateKey + chain,
  };
}

/**
 * jwt_bundle_file_name as spiffe-helper writes it: one JSON object, each trust domain's name mapped
 * to the standard base64 of its JWKS document (`{"keys":[...]}`).
 */
export function jwtBundlesFile(set: JwtBundleSet): string {
  const out: Record<string, string> = {};
  for (const b of set.list()) out[b.trustDomain.name] = b.marshal().toString('base64');
  return JSON.stringify(out);
}

/** When to fetch a JWT-SVID again: at half its remaining lifetime (at least 1 s from now). */
export function jwtRefreshDelayMs(svid: Pick<JwtSvid, 'expiresAt'>, now: Date): number {
  return Math.max(1000, Math.floor((svid.expiresAt.getTime() - now.getTime()) / 2));
}
