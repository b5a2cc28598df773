import type { SpiffeId } from '../spiffeid/spiffe-id.js';
import type { JwtSvid } from './jwt-svid.js';
import type { X509Svid } from './x509-svid.js';

/**
 * Anything that can give the current X509-SVID: a fixed SVID or a live X509Source kept current
 * by the Workload API. Called on every TLS handshake, so it must be cheap and synchronous.
 */
export interface X509SvidSource {
  getX509Svid(): X509Svid;
}

/** What a JWT-SVID is asked for: the audience it must carry and, optionally, whose it must be. */
export interface JwtSvidParams {
  audience: readonly string[];
  subject?: SpiffeId;
}

/** Anything that can mint or fetch a JWT-SVID for an audience. */
export interface JwtSvidSource {
  fetchJwtSvid(params: JwtSvidParams): Promise<JwtSvid>;
}
