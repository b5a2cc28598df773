// The public API of `spiffe`. Every export is named here; modules under internal/ are never exported.

// Bundles
export { JwtBundle, parseJwtBundle } from './bundle/jwt-bundle.js';
export { JwtBundleSet, SpiffeBundleSet, X509BundleSet } from './bundle/set.js';
export type { JwtBundleSource, X509BundleSource } from './bundle/source.js';
export type { SpiffeBundleInit } from './bundle/spiffe-bundle.js';
export { parseSpiffeBundle, SpiffeBundle } from './bundle/spiffe-bundle.js';
export { parseX509Bundle, parseX509BundleDer, parseX509BundlePem, X509Bundle } from './bundle/x509-bundle.js';
export type { ErrorCode as ErrorCodeValue } from './errors.js';
export { ErrorCode, isSpiffeError, SpiffeError } from './errors.js';
// Federation
export type {
  BundleEndpointHandler,
  BundleEndpointHandlerOptions,
} from './federation/bundle-endpoint-handler.js';
export { createBundleEndpointHandler } from './federation/bundle-endpoint-handler.js';
export type {
  BundleEndpointClientOptions,
  BundleEndpointProfile,
  BundleEndpointProfileOptions,
  FetchBundleOptions,
  HttpsSpiffeProfileOptions,
  HttpsWebProfileOptions,
} from './federation/fetch-bundle.js';
export {
  bundleEndpointUrlProblem,
  DEFAULT_FETCH_TIMEOUT_MS,
  DEFAULT_MAX_BUNDLE_SIZE,
  fetchBundle,
} from './federation/fetch-bundle.js';
export type {
  BundleWatcher,
  Schedule,
  WatchBundleOptions,
  WatchBundleTimingOptions,
} from './federation/watch-bundle.js';
export {
  DEFAULT_REFRESH_INTERVAL_MS,
  DEFAULT_RETRY_INTERVAL_MS,
  MAX_REFRESH_INTERVAL_MS,
  MIN_REFRESH_INTERVAL_MS,
  watchBundle,
} from './federation/watch-bundle.js';
export type { Logger } from './logger.js';
export { silentLogger } from './logger.js';
// SPIFFE IDs and trust domains
export type { Matcher } from './spiffeid/matcher.js';
export { matchAny, matchId, matchMemberOf, matchOneOf } from './spiffeid/matcher.js';
export {
  joinPathSegments,
  parseSpiffeId,
  SpiffeId,
  spiffeIdFromPath,
  spiffeIdFromSegments,
  validatePath,
} from './spiffeid/spiffe-id.js';
export { parseTrustDomain, TrustDomain } from './spiffeid/trust-domain.js';
// SVIDs
export type { JwtSvidAlgorithm, ValidateJwtSvidOptions } from './svid/jwt-svid.js';
export {
  DEFAULT_JWT_LEEWAY_SECONDS,
  JWT_SVID_ALGORITHMS,
  JwtSvid,
  parseAndValidateJwtSvid,
  parseInsecureJwtSvid,
} from './svid/jwt-svid.js';
export type { JwtSvidParams, JwtSvidSource, X509SvidSource } from './svid/source.js';
export type { X509Crl, X509CrlEntry, X509CrlSource } from './svid/x509-crl.js';
export {
  CRL_REASONS,
  checkX509Revocation,
  normalizeSerial,
  parseX509Crl,
  parseX509Crls,
  reasonName,
} from './svid/x509-crl.js';
export { idFromCertificate, parseX509Svid, parseX509SvidRaw, X509Svid } from './svid/x509-svid.js';
export type { VerifiedX509Svid, VerifyX509SvidOptions } from './svid/x509-verify.js';
export { verifyCertificateChain, verifyX509Svid } from './svid/x509-verify.js';
// TLS
export type { Authorizer } from './tls/authorizer.js';
export {
  authorizeAny,
  authorizeId,
  authorizeIf,
  authorizeMemberOf,
  authorizeOneOf,
} from './tls/authorizer.js';
export { grpcChannelCredentials, grpcServerCredentials, peerSpiffeIdOfCall } from './tls/grpc.js';
export type { SpiffeServer, SpiffeTlsConfig, TlsBundleSource } from './tls/node-tls.js';
export {
  createSpiffeHttp2Server,
  createSpiffeHttpsServer,
  createSpiffeTlsServer,
  spiffeHttpsAgent,
  spiffeTlsConnect,
  tlsClientOptions,
} from './tls/node-tls.js';
export { peerSpiffeId, verifyPeer } from './tls/peer.js';
// Workload API
export type { WorkloadApiAddress } from './workloadapi/address.js';
export {
  DEFAULT_WORKLOAD_API_SOCKET,
  defaultWorkloadApiAddress,
  parseWorkloadApiAddress,
  resolveWorkloadApiAddress,
  SPIFFE_ENDPOINT_SOCKET,
} from './workloadapi/address.js';
export type { BackoffOptions } from './workloadapi/backoff.js';
export { Backoff } from './workloadapi/backoff.js';
export type { CallOptions, Watcher, WorkloadApiClientOptions, X509Context } from './workloadapi/client.js';
export { createWorkloadApiClient, WorkloadApiClient } from './workloadapi/client.js';
export type { SourceOptions } from './workloadapi/source-base.js';
export type { X509SourceOptions, X509SvidPicker } from './workloadapi/sources.js';
export { BundleSource, JwtSource, pickByHint, X509Source } from './workloadapi/sources.js';
