import type { TrustDomain } from '../spiffeid/trust-domain.js';
import type { JwtBundle } from './jwt-bundle.js';
import type { X509Bundle } from './x509-bundle.js';

/**
 * Anything that can give the X.509 bundle of a trust domain: a fixed X509Bundle, a BundleSet,
 * or a live source kept current by the Workload API. One method, so they are interchangeable.
 * Throws SpiffeError ERR_BUNDLE_NOT_FOUND when the trust domain is unknown.
 */
export interface X509BundleSource {
  getX509BundleForTrustDomain(trustDomain: TrustDomain): X509Bundle;
}

/** As X509BundleSource, for JWT bundles. Throws ERR_BUNDLE_NOT_FOUND for an unknown trust domain. */
export interface JwtBundleSource {
  getJwtBundleForTrustDomain(trustDomain: TrustDomain): JwtBundle;
}
