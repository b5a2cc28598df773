// `spiffe/testing`: helpers for testing applications that use this library. Not for production.
export type { FakeError, FakeX509Identity } from './workloadapi/fake-server.js';
export { FakeWorkloadApi } from './workloadapi/fake-server.js';
