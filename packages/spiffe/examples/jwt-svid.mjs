// Fetches a JWT-SVID for the audience "reports" from the Workload API (SPIFFE_ENDPOINT_SOCKET, else
// /run/tessera/agent.sock), then validates it with the JWT bundles as the service receiving it
// would, and shows a service expecting another audience refusing it.
import { ErrorCode, isSpiffeError, JwtSource, parseAndValidateJwtSvid } from '@tessera/spiffe';

const source = await JwtSource.create({ readyTimeoutMs: 10_000 });
try {
  // The caller: a token whose subject is this process's SPIFFE ID, sent as `Authorization: Bearer …`.
  const svid = await source.fetchJwtSvid({ audience: ['reports'] });
  const token = svid.marshal();
  console.log(
    `token for ${svid.id}, audience ${svid.audience.join(', ')}, expires ${svid.expiresAt.toISOString()}`,
  );

  // The receiver ("reports"): signature by a key in the JWT bundle of the subject's trust domain,
  // expiry, and its own name in the audience. A fixed JwtBundle works here as well as the source.
  const valid = parseAndValidateJwtSvid(token, source, ['reports']);
  console.log(`reports accepts it: the caller is ${valid.id}`);

  try {
    parseAndValidateJwtSvid(token, source, ['billing']);
  } catch (err) {
    if (!isSpiffeError(err, ErrorCode.JWTSVID_VERIFY)) throw err;
    console.log(`billing refuses it: ${err.message}`);
  }
} finally {
  await source.close(); // stops the bundle watch; an open source keeps the process running
}
