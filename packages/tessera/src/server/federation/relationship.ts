// A federation relationship (SPIFFE Federation §7.1, SPIRE's names): which foreign trust domain's
// bundle this server fetches, from which bundle endpoint, authenticated how. Relationships are
// one-way; mutual federation is one on each side. Static ones come from server.yaml
// (federation.federates_with), dynamic ones from `tessera federation create` (the datastore).
import { X509Certificate } from 'node:crypto';
import {
  bundleEndpointUrlProblem,
  parseSpiffeId,
  parseTrustDomain,
  type SpiffeId,
  type TrustDomain,
} from '@tessera/spiffe';
import { TesseraError, TesseraErrorCode } from '../../common/errors.js';
import { pemCertificateBlocks } from '../../common/x509.js';

export type FederationProfile = 'https_spiffe' | 'https_web';
export const FEDERATION_PROFILES: readonly FederationProfile[] = ['https_spiffe', 'https_web'];

export interface FederationRelationship {
  readonly trustDomain: TrustDomain;
  readonly bundleEndpointUrl: string;
  readonly profile: FederationProfile;
  /** https_spiffe: the SPIFFE ID the endpoint's server presents (e.g. spiffe://td/spire/server). */
  readonly endpointSpiffeId?: SpiffeId;
  /**
   * https_web: PEM roots that authenticate the endpoint instead of the system's (a private CA,
   * what spire #5331 asked for); absent = the system's Web PKI roots.
   */
  readonly caBundlePem?: string;
}

/** Where a relationship is defined: server.yaml, or the datastore (created through the admin API). */
export type RelationshipSource = 'config' | 'datastore';

/** A relationship as written by an operator, before it is checked. */
export interface RelationshipInput {
  trustDomain: string;
  bundleEndpointUrl: string;
  profile: string;
  endpointSpiffeId?: string;
  caBundlePem?: string;
}

/**
 * Checks a relationship; every problem is one ERR_INVALID_ARGUMENT naming the trust domain, the
 * field and what to write instead. `own` is this server's trust domain, which cannot be federated.
 */
export function checkRelationship(input: RelationshipInput, own: TrustDomain): FederationRelationship {
  const fail = (message: string) =>
    new TesseraError(TesseraErrorCode.INVALID_ARGUMENT, `federation "${input.trustDomain}": ${message}`);
  let trustDomain: TrustDomain;
  try {
    trustDomain = parseTrustDomain(input.trustDomain);
  } catch (err) {
    throw fail(`trust domain: ${(err as Error).message}`);
  }
  if (trustDomain.equals(own))
    throw fail("is this server's own trust domain; a relationship names a foreign trust domain");
  const urlProblem = bundleEndpointUrlProblem(input.bundleEndpointUrl);
  if (urlProblem !== undefined) throw fail(`bundle_endpoint_url: ${urlProblem}`);
  const endpointId = input.endpointSpiffeId ?? '';
  const ca = input.caBundlePem ?? '';
  switch (input.profile) {
    case 'https_spiffe': {
      if (ca !== '')
        throw fail(
          'a CA bundle is for https_web; https_spiffe endpoints are authenticated by the trust bundle',
        );
      if (endpointId === '')
        throw fail(
          'https_spiffe needs endpoint_spiffe_id, the SPIFFE ID the bundle endpoint presents (a SPIRE server: spiffe://<td>/spire/server; tessera: spiffe://<td>/tessera/server)',
        );
      let id: SpiffeId;
      try {
        id = parseSpiffeId(endpointId);
      } catch (err) {
        throw fail(`endpoint_spiffe_id: ${(err as Error).message}`);
      }
      return {
        trustDomain,
        bundleEndpointUrl: input.bundleEndpointUrl,
        profile: 'https_spiffe',
        endpointSpiffeId: id,
      };
    }
    case 'https_web': {
      if (endpointId !== '')
        throw fail(
          'endpoint_spiffe_id is for https_spiffe; an https_web endpoint is checked by its host name',
        );
      if (ca !== '') {
        const blocks = pemCertificateBlocks(ca);
        if (blocks.length === 0) throw fail('the CA bundle holds no PEM certificate');
        for (const b of blocks) {
          try {
            new X509Certificate(b);
          } catch (err) {
            throw fail(`the CA bundle holds an unreadable certificate: ${(err as Error).message}`);
          }
        }
        return {
          trustDomain,
          bundleEndpointUrl: input.bundleEndpointUrl,
          profile: 'https_web',
          caBundlePem: ca,
        };
      }
      return { trustDomain, bundleEndpointUrl: input.bundleEndpointUrl, profile: 'https_web' };
    }
    default:
      throw fail(`bundle_endpoint_profile must be https_spiffe or https_web; got "${input.profile}"`);
  }
}

/** Whether two relationships say the same thing. */
export function sameRelationship(a: FederationRelationship, b: FederationRelationship): boolean {
  return (
    a.trustDomain.equals(b.trustDomain) &&
    a.bundleEndpointUrl === b.bundleEndpointUrl &&
    a.profile === b.profile &&
    (a.endpointSpiffeId?.toString() ?? '') === (b.endpointSpiffeId?.toString() ?? '') &&
    (a.caBundlePem ?? '') === (b.caBundlePem ?? '')
  );
}
