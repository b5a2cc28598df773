export { FakeClock } from './clock.js';
export { createCsr } from './csr.js';
export { type JwtAuthorityOptions, type JwtKeyType, TestJwtAuthority, unsignedToken } from './jwt.js';
export { freePort } from './net.js';
export {
  findPostgresBin,
  type PostgresCluster,
  postgresAvailable,
  type StartPostgresOptions,
  startPostgres,
} from './postgres.js';
export { makeTempDir, type TempDir } from './tmp.js';
export { onPath, suiteUnavailable } from './unavailable.js';
export {
  type CaOptions,
  type CertificateOptions,
  generateKey,
  type IssuedSvid,
  type IssueOptions,
  type KeyPair,
  type KeyType,
  type KeyUsageName,
  TestCa,
} from './x509.js';
