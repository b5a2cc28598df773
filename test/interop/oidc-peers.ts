/**
 * OIDC relying parties nobody here wrote, as child processes, for oidc.test.ts: coreos/go-oidc v3
 * (`go/bin/interop oidc-verify`, oidc.go), PyJWT's PyJWKClient (`python/oidc_verify.py`) and
 * oauth2-proxy (`go/bin/oauth2-proxy`, built by setup-oauth2-proxy.sh). Each discovers the issuer
 * and judges one JWT-SVID; the first two print one JSON verdict line, oauth2-proxy answers its
 * /oauth2/auth endpoint (202 let through, 401 not).
 */
import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { join } from 'node:path';
import { freePort } from '@tessera/testkit';
import { runGo } from './go-peer.js';
import { INTEROP_DIR, PYTHON } from './verdicts.js';

export const OAUTH2_PROXY = join(INTEROP_DIR, 'go', 'bin', 'oauth2-proxy');
export const PYTHON_OIDC_VERIFY = join(INTEROP_DIR, 'python', 'oidc_verify.py');

/** What go-oidc or PyJWT said of a token. */
export type RpVerdict =
  | {
      verdict: 'accepted';
      subject: string;
      issuer: string;
      audience: string[] | string;
      expiry: number;
      jwks_uri: string;
      /** go-oidc: the discovery document's id_token_signing_alg_values_supported. */
      algorithms?: string[];
      /** PyJWT: the token's header. */
      alg?: string;
      kid?: string;
    }
  | { verdict: 'refused'; error: string; type?: string }
  | { verdict: 'error'; stage: string; error: string };

export interface RpRequest {
  issuer: string;
  audience: string;
  token: string;
  /** PEM file of the roots of the discovery server's certificate. */
  ca: string;
}

const flags = (r: RpRequest) => [
  '--issuer',
  r.issuer,
  '--audience',
  r.audience,
  '--token',
  r.token,
  '--ca',
  r.ca,
];

function verdictOf(who: string, code: number, stdout: string, stderr: string): RpVerdict {
  const line = stdout.trim().split('\n').pop() ?? '';
  try {
    return JSON.parse(line) as RpVerdict;
  } catch {
    throw new Error(`interop: ${who} printed no verdict (exit ${code}): ${stdout}${stderr}`);
  }
}

/** coreos/go-oidc v3: oidc.NewProvider(issuer), then provider.Verifier({ClientID: audience}).Verify. */
export async function goOidcVerify(r: RpRequest): Promise<RpVerdict> {
  const { code, stdout, stderr } = await runGo(['oidc-verify', ...flags(r)]);
  return verdictOf('go-oidc', code, stdout, stderr);
}

/** PyJWT: discovery by hand (as an application does), PyJWKClient(jwks_uri), jwt.decode. */
export function pyJwtVerify(r: RpRequest): Promise<RpVerdict> {
  return new Promise((resolve, reject) => {
    execFile(PYTHON, [PYTHON_OIDC_VERIFY, ...flags(r)], { timeout: 30_000 }, (err, stdout, stderr) => {
      const code = err === null ? 0 : typeof err.code === 'number' ? err.code : 1;
      try {
        resolve(verdictOf('PyJWT', code, stdout.toString(), stderr.toString()));
      } catch (e) {
        reject(e);
      }
    });
  });
}

export interface Oauth2Proxy {
  /** GET /oauth2/auth with the token as a bearer: 202 and the user it saw, or 401. */
  check(token: string): Promise<{ status: number; user: string | null }>;
  /** Everything it logged. */
  log(): string;
  close(): Promise<void>;
}

/**
 * Starts oauth2-proxy with only bearer JWTs of `issuer` for `audience` accepted
 * (--skip-jwt-bearer-tokens, --extra-jwt-issuers=<issuer>=<audience>; the discovery server's roots
 * from --provider-ca-file). It discovers the issuer at start-up; resolves once /ping answers.
 */
export async function startOauth2Proxy(o: {
  issuer: string;
  audience: string;
  ca: string;
}): Promise<Oauth2Proxy> {
  const port = await freePort();
  const child: ChildProcess = spawn(
    OAUTH2_PROXY,
    [
      `--http-address=127.0.0.1:${port}`,
      '--upstream=static://200',
      '--email-domain=*',
      '--client-id=unused-primary-provider',
      '--client-secret=unused-primary-provider',
      '--cookie-secret=0123456789abcdef0123456789abcdef',
      '--cookie-secure=false',
      '--skip-jwt-bearer-tokens=true',
      `--extra-jwt-issuers=${o.issuer}=${o.audience}`,
      `--provider-ca-file=${o.ca}`,
      '--set-xauthrequest=true',
    ],
    { stdio: ['ignore', 'pipe', 'pipe'] },
  );
  let log = '';
  child.stdout?.on('data', (c: Buffer) => {
    log += c.toString();
  });
  child.stderr?.on('data', (c: Buffer) => {
    log += c.toString();
  });
  const close = async () => {
    if (child.exitCode !== null || child.signalCode !== null) return;
    const exited = new Promise((resolve) => child.once('exit', resolve));
    child.kill('SIGTERM');
    await exited;
  };
  const base = `http://127.0.0.1:${port}`;
  const until = Date.now() + 30_000;
  for (;;) {
    if (child.exitCode !== null) throw new Error(`interop: oauth2-proxy exited (${child.exitCode}): ${log}`);
    try {
      if ((await fetch(`${base}/ping`)).status === 200) break;
    } catch {
      // not listening yet
    }
    if (Date.now() > until) {
      await close();
      throw new Error(`interop: oauth2-proxy did not answer /ping within 30 s: ${log}`);
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  return {
    async check(token) {
      const r = await fetch(`${base}/oauth2/auth`, { headers: { authorization: `Bearer ${token}` } });
      await r.arrayBuffer();
      return { status: r.status, user: r.headers.get('x-auth-request-user') };
    },
    log: () => log,
    close,
  };
}
