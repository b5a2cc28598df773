// The agent's side of aws_iid: the instance identity document and its RSA-2048 PKCS#7 signature,
// fetched from the instance metadata service with IMDSv2 (a session token from PUT
// /latest/api/token, then GET /latest/dynamic/instance-identity/document and …/rsa2048), sent as
// SPIRE's agent sends them (JSON: document, rsa2048). The rsa2048 signature is the one SPIRE
// prefers: SHA-256 with RSA-2048 and a certificate per region, where /pkcs7 is DSA over SHA-1 and
// /signature a bare RSA-1024 signature. IMDSv1 (no token) is not used.
import type { Field } from '../../common/config-schema.js';
import type { AgentNodeAttestorPlugin, NodeEvidence } from './registry.js';

export const DEFAULT_EC2_METADATA_ENDPOINT = 'http://169.254.169.254';
/** The token lives 6 h, as the AWS SDKs ask; it is used at once and not kept. */
const TOKEN_TTL_SECONDS = '21600';
const REQUEST_TIMEOUT_MS = 5000;

const endpointProblem = (v: string): string | undefined => {
  let url: URL;
  try {
    url = new URL(v);
  } catch {
    return `must be a URL such as ${DEFAULT_EC2_METADATA_ENDPOINT}; got ${JSON.stringify(v)}`;
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:')
    return `must be an http:// or https:// URL; got ${JSON.stringify(v)}`;
  if (url.username !== '' || url.password !== '' || url.search !== '' || url.hash !== '')
    return `must be a bare endpoint (scheme, host, port), without user, query or fragment; got ${JSON.stringify(v)}`;
  return undefined;
};

export const AWS_IID_AGENT_CONFIG = {
  kind: 'object',
  fields: {
    ec2_metadata_endpoint: { kind: 'string', default: DEFAULT_EC2_METADATA_ENDPOINT, check: endpointProblem },
  },
} as const satisfies Field & { kind: 'object' };

export interface InstanceIdentity {
  readonly document: string;
  readonly rsa2048: string;
}

export interface FetchInstanceIdentityOptions {
  readonly fetch?: typeof fetch;
  readonly timeoutMs?: number;
}

function reason(err: unknown): string {
  const e = err as Error & { cause?: { code?: string; message?: string } };
  if (e.name === 'TimeoutError' || e.name === 'AbortError') return 'no answer in time';
  return e.cause?.message ?? e.cause?.code ?? e.message;
}

/**
 * The document and its signature from the instance metadata service at `endpoint`. An error names
 * the endpoint, the request that failed and why.
 */
export async function fetchInstanceIdentity(
  endpoint: string,
  options: FetchInstanceIdentityOptions = {},
): Promise<InstanceIdentity> {
  const doFetch = options.fetch ?? fetch;
  const timeoutMs = options.timeoutMs ?? REQUEST_TIMEOUT_MS;
  const base = endpoint.replace(/\/+$/, '');
  const where = `the instance metadata service at ${base} (ec2_metadata_endpoint)`;
  const request = async (method: 'PUT' | 'GET', path: string, headers: Record<string, string>) => {
    let res: Response;
    try {
      res = await doFetch(`${base}${path}`, { method, headers, signal: AbortSignal.timeout(timeoutMs) });
    } catch (err) {
      const why = reason(err);
      throw new Error(
        `cannot reach ${where}: ${method} ${path}: ${why}${
          method === 'PUT' && why === 'no answer in time'
            ? ' (in a container, the instance needs an IMDSv2 hop limit of 2: aws ec2 modify-instance-metadata-options --http-put-response-hop-limit 2)'
            : ''
        }`,
        { cause: err },
      );
    }
    const body = await res.text();
    if (!res.ok) {
      const hint =
        res.status === 401
          ? ' (the session token was refused)'
          : res.status === 404
            ? ' (is this an EC2 instance, and is the endpoint the metadata service?)'
            : res.status === 403
              ? ' (the instance metadata service is disabled for this instance: --http-endpoint enabled)'
              : '';
      throw new Error(`${where} answered HTTP ${res.status} to ${method} ${path}${hint}`);
    }
    if (body.trim() === '') throw new Error(`${where} answered ${method} ${path} with an empty body`);
    return body;
  };
  const token = await request('PUT', '/latest/api/token', {
    'X-aws-ec2-metadata-token-ttl-seconds': TOKEN_TTL_SECONDS,
  });
  const auth = { 'X-aws-ec2-metadata-token': token.trim() };
  const document = await request('GET', '/latest/dynamic/instance-identity/document', auth);
  const rsa2048 = await request('GET', '/latest/dynamic/instance-identity/rsa2048', auth);
  return { document, rsa2048 };
}

export const awsIidAgentPlugin: AgentNodeAttestorPlugin = {
  name: 'aws_iid',
  config: AWS_IID_AGENT_CONFIG,
  async evidence(config, ctx): Promise<NodeEvidence> {
    const endpoint = (config as { ec2_metadata_endpoint: string }).ec2_metadata_endpoint;
    const identity = await fetchInstanceIdentity(endpoint);
    ctx.logger.info('aws_iid: fetched the instance identity document', { endpoint });
    return { type: 'aws_iid', payload: Buffer.from(JSON.stringify(identity)) };
  },
};
