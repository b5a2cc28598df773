export * from './bundle/index.js';
export type { ErrorCode as ErrorCodeValue } from './errors.js';
export { ErrorCode, isSpiffeError, SpiffeError } from './errors.js';
export * from './spiffeid/index.js';
