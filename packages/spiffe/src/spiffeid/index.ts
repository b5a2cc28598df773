export type { Matcher } from './matcher.js';
export { matchAny, matchId, matchMemberOf, matchOneOf } from './matcher.js';
export {
  joinPathSegments,
  parseSpiffeId,
  SpiffeId,
  spiffeIdFromPath,
  spiffeIdFromSegments,
  validatePath,
} from './spiffe-id.js';
export { parseTrustDomain, TrustDomain } from './trust-domain.js';
