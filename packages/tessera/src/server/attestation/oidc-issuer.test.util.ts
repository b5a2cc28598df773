// A token issuer for the tests of the JWT-based node attestors: a real HTTPS server on localhost
// (certificate from a test CA written to `caPath`) serving an OpenID provider configuration at
// <issuer>/.well-known/openid-configuration and its JWK Set at <issuer>/jwks, with real RSA keys
// (RS256, as GitHub, GitLab and Kubernetes sign). Tests choose which keys are published, sign tokens
// with any of them, and see the paths requested. Not shipped (dist/**/*.test.*).
import { lookup } from 'node:dns/promises';
import { writeFileSync } from 'node:fs';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { createServer } from 'node:https';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { TestCa, TestJwtAuthority } from '@tessera/testkit';

export interface TestOidcIssuer {
  /** https://localhost:<port><path>, the iss of its tokens. */
  readonly issuer: string;
  readonly jwksUri: string;
  /** A PEM file of the CA that issued the server's certificate (for ca_bundle_path). */
  readonly caPath: string;
  /** The signing key published from the start. */
  readonly key: TestJwtAuthority;
  /** Paths requested, in order. */
  readonly requests: string[];
  /** A new RSA key (not published until `publish`). */
  newKey(kid?: string): TestJwtAuthority;
  /** Publishes exactly these keys from now on. */
  publish(keys: readonly TestJwtAuthority[]): void;
  /** Signs claims (iss set to the issuer, iat now, exp in 5 min unless given) with `key` (default the published one). */
  sign(
    claims: Record<string, unknown>,
    options?: { key?: TestJwtAuthority; header?: Record<string, unknown> },
  ): string;
  /** Answers every request with this status (0: back to normal). */
  fail(status: number): void;
  close(): Promise<void>;
}

export async function startTestOidcIssuer(
  dir: string,
  options: { path?: string; name?: string; now?: () => Date } = {},
): Promise<TestOidcIssuer> {
  const name = options.name ?? 'issuer';
  const ca = TestCa.create({ trustDomain: `${name}.test` });
  const cert = ca.issueCertificate({ uris: [], dnsNames: ['localhost'], subject: 'CN=localhost' });
  const caPath = join(dir, `${name}-ca.pem`);
  writeFileSync(caPath, ca.rootPem());
  const now = options.now ?? (() => new Date());
  const newKey = (kid?: string) =>
    TestJwtAuthority.create({
      trustDomain: `${name}.test`,
      keyType: 'rsa-2048',
      ...(kid === undefined ? {} : { kid }),
    });
  const key = newKey();
  let published: readonly TestJwtAuthority[] = [key];
  let failing = 0;
  const requests: string[] = [];
  const path = options.path ?? '';
  let issuer = '';
  const server = createServer(
    { key: cert.privateKeyPem, cert: cert.certificatesPem },
    (req: IncomingMessage, res: ServerResponse) => {
      const url = req.url ?? '/';
      requests.push(url);
      const json = (body: unknown) =>
        res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(body));
      if (failing !== 0) {
        res.writeHead(failing).end('failing');
        return;
      }
      if (url === `${path}/.well-known/openid-configuration`)
        return json({
          issuer,
          jwks_uri: `${issuer}/jwks`,
          response_types_supported: ['id_token'],
          subject_types_supported: ['public'],
          id_token_signing_alg_values_supported: ['RS256'],
        });
      if (url === `${path}/jwks`)
        return json({ keys: published.map((k) => ({ ...k.jwk(), use: 'sig', alg: 'RS256' })) });
      res.writeHead(404).end();
    },
  );
  // Listen where "localhost" resolves first, which is where the client will connect.
  const { address } = await lookup('localhost');
  await new Promise<void>((resolve) => server.listen(0, address, resolve));
  const { port } = server.address() as AddressInfo;
  issuer = `https://localhost:${port}${path}`;
  return {
    issuer,
    jwksUri: `${issuer}/jwks`,
    caPath,
    key,
    requests,
    newKey,
    publish(keys) {
      published = keys;
    },
    sign(claims, o = {}) {
      const t = Math.floor(now().getTime() / 1000);
      return (o.key ?? key).sign({ iss: issuer, iat: t, nbf: t, exp: t + 300, ...claims }, o.header);
    },
    fail(status) {
      failing = status;
    },
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}
