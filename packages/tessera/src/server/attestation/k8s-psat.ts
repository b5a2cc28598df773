// The k8s_psat node attestor, with SPIRE's names: an agent running in a Kubernetes pod presents a
// projected service account token (PSAT, bound to its pod, with an audience of its own) and the name
// of its cluster. The server verifies the token with the cluster's keys — its service account
// issuer's JWKS, by OIDC discovery, a JWKS URL, or a file (`kubectl get --raw /openid/v1/jwks`) —
// instead of SPIRE's TokenReview call to the API server, checks iss, aud and time, then that the
// service account is in the cluster's service_account_allow_list. A token attests once.
// Agent ID: …/tessera/agent/k8s_psat/<cluster>/<node UID from the token, else the pod UID>.
// Selectors (from the token's kubernetes.io claims): k8s_psat:cluster:<name>, agent_ns, agent_sa,
// agent_pod_name, agent_pod_uid, and agent_node_name, agent_node_uid when the token carries the node
// (Kubernetes 1.30+).
import { createHash } from 'node:crypto';
import type { Field } from '../../common/config-schema.js';
import { TesseraError, TesseraErrorCode } from '../../common/errors.js';
import type { Selector } from '../datastore/types.js';
import {
  httpsUrl,
  JWT_KEYS_FIELDS,
  type JwtKeys,
  type JwtKeysConfig,
  segmentName,
  startKeys,
} from './jwt-keys.js';
import { type JwtClaims, NodeJwtError, usableUntil, verifyNodeJwt } from './jwt-verify.js';
import type { NodeAttestorContext, NodeAttestorPlugin } from './registry.js';
import { type AttestationResult, agentId, type NodeAttestor } from './types.js';

/** The audience agents' tokens carry unless configured: SPIRE's is "spire-server". */
export const K8S_PSAT_DEFAULT_AUDIENCE = 'tessera-server';

const serviceAccount = (v: string) =>
  /^[a-z0-9]([-a-z0-9]*[a-z0-9])?:[a-z0-9]([-a-z0-9.]*[a-z0-9])?$/.test(v)
    ? undefined
    : `must be "<namespace>:<service account>"; got ${JSON.stringify(v)}`;

const CLUSTER_FIELD = {
  kind: 'object',
  fields: {
    // The cluster's service account issuer (kube-apiserver --service-account-issuer), the exact iss
    // of its tokens: `kubectl get --raw /.well-known/openid-configuration`.
    issuer: { kind: 'string', required: true, check: httpsUrl },
    service_account_allow_list: {
      kind: 'list',
      required: true,
      minItems: 1,
      of: { kind: 'string', required: true, check: serviceAccount },
    },
    audience: { kind: 'list', single: true, of: { kind: 'string', required: true } },
    ...JWT_KEYS_FIELDS,
  },
} as const satisfies Field;

export const K8S_PSAT_CONFIG = {
  kind: 'object',
  fields: { clusters: { kind: 'map', of: CLUSTER_FIELD, checkKey: segmentName } },
} as const satisfies Field & { kind: 'object' };

interface ClusterConfig extends JwtKeysConfig {
  readonly issuer: string;
  readonly service_account_allow_list: readonly string[];
  readonly audience: readonly string[];
}

interface Cluster {
  readonly name: string;
  readonly config: ClusterConfig;
  readonly audiences: readonly string[];
  readonly keys: JwtKeys;
}

/** The agent's payload: its cluster's name and its token, as SPIRE's agent sends them. */
export interface K8sPsatPayload {
  readonly cluster: string;
  readonly token: string;
}

function failed(cluster: string | undefined, message: string, cause?: unknown): TesseraError {
  return new TesseraError(
    TesseraErrorCode.ATTESTATION_FAILED,
    `k8s_psat: ${cluster === undefined ? '' : `cluster ${cluster}: `}${message}`,
    cause === undefined ? undefined : { cause },
  );
}

const str = (v: unknown): string | undefined => (typeof v === 'string' && v !== '' ? v : undefined);

/** The kubernetes.io claims of a bound token: namespace, service account, pod and maybe node. */
function boundObjects(c: JwtClaims): {
  namespace: string;
  serviceAccount: string;
  podName: string;
  podUid: string;
  nodeName: string | undefined;
  nodeUid: string | undefined;
} {
  const k = c['kubernetes.io'] as Record<string, Record<string, unknown> | string | undefined> | undefined;
  if (typeof k !== 'object' || k === null)
    throw new Error('the token has no kubernetes.io claim; is it a Kubernetes service account token?');
  const namespace = str(k.namespace);
  const sa = k.serviceaccount as Record<string, unknown> | undefined;
  const serviceAccountName = str(sa?.name);
  if (namespace === undefined || serviceAccountName === undefined)
    throw new Error('the token names no namespace or service account in its kubernetes.io claim');
  if (c.sub !== `system:serviceaccount:${namespace}:${serviceAccountName}`)
    throw new Error(
      `the token's sub ${JSON.stringify(c.sub)} is not its kubernetes.io service account system:serviceaccount:${namespace}:${serviceAccountName}`,
    );
  const pod = k.pod as Record<string, unknown> | undefined;
  const podName = str(pod?.name);
  const podUid = str(pod?.uid);
  if (podName === undefined || podUid === undefined)
    throw new Error(
      'the token is not bound to a pod; mount a projected service account token (serviceAccountToken volume source), not a secret-based or TokenRequest token',
    );
  const node = k.node as Record<string, unknown> | undefined;
  return {
    namespace,
    serviceAccount: serviceAccountName,
    podName,
    podUid,
    nodeName: str(node?.name),
    nodeUid: str(node?.uid),
  };
}

export class K8sPsatAttestor implements NodeAttestor {
  readonly type = 'k8s_psat';
  readonly #ctx: NodeAttestorContext;
  readonly #clusters: ReadonlyMap<string, Cluster>;

  constructor(ctx: NodeAttestorContext, clusters: readonly Cluster[]) {
    this.#ctx = ctx;
    this.#clusters = new Map(clusters.map((c) => [c.name, c]));
  }

  async attest(payload: Uint8Array, _challenge: unknown, now: Date): Promise<AttestationResult> {
    let p: Partial<K8sPsatPayload>;
    try {
      p = JSON.parse(Buffer.from(payload).toString('utf8'));
    } catch (err) {
      throw failed(undefined, 'the payload is not JSON {"cluster": …, "token": …}', err);
    }
    if (typeof p !== 'object' || p === null || typeof p.cluster !== 'string' || typeof p.token !== 'string')
      throw failed(
        undefined,
        'the payload must be JSON {"cluster": "<name>", "token": "<service account token>"}',
      );
    const cluster = this.#clusters.get(p.cluster);
    if (cluster === undefined)
      throw failed(
        undefined,
        `cluster ${JSON.stringify(p.cluster)} is not configured (clusters: ${[...this.#clusters.keys()].join(', ')}); the agent's node_attestor.k8s_psat.cluster must name one`,
      );
    let claims: JwtClaims;
    try {
      claims = await verifyNodeJwt(p.token, {
        keys: cluster.keys,
        issuer: cluster.config.issuer,
        audiences: cluster.audiences,
        clockSkewMs: cluster.config.clock_skew,
        now,
      });
    } catch (err) {
      if (err instanceof NodeJwtError) throw failed(cluster.name, err.message, err);
      throw err;
    }
    let b: ReturnType<typeof boundObjects>;
    try {
      b = boundObjects(claims);
    } catch (err) {
      throw failed(cluster.name, (err as Error).message, err);
    }
    const sa = `${b.namespace}:${b.serviceAccount}`;
    if (!cluster.config.service_account_allow_list.includes(sa))
      throw failed(
        cluster.name,
        `service account ${sa} is not allowed (service_account_allow_list: ${cluster.config.service_account_allow_list.join(', ')})`,
      );
    const digest = createHash('sha256').update(p.token).digest('hex');
    if (
      !(await this.#ctx.datastore.useEvidence(
        'k8s_psat',
        digest,
        usableUntil(claims, cluster.config.clock_skew),
        now,
      ))
    )
      throw failed(
        cluster.name,
        `replay: this token was used to attest before (sha256 ${digest.slice(0, 16)}…); the kubelet rotates it at 80% of its lifetime, or restart the pod for a new one`,
      );
    const selectors: Selector[] = [
      { type: 'k8s_psat', value: `cluster:${cluster.name}` },
      { type: 'k8s_psat', value: `agent_ns:${b.namespace}` },
      { type: 'k8s_psat', value: `agent_sa:${b.serviceAccount}` },
      { type: 'k8s_psat', value: `agent_pod_name:${b.podName}` },
      { type: 'k8s_psat', value: `agent_pod_uid:${b.podUid}` },
    ];
    if (b.nodeName !== undefined)
      selectors.push({ type: 'k8s_psat', value: `agent_node_name:${b.nodeName}` });
    if (b.nodeUid !== undefined) selectors.push({ type: 'k8s_psat', value: `agent_node_uid:${b.nodeUid}` });
    const id = b.nodeUid ?? b.podUid;
    if (!/^[A-Za-z0-9_-][A-Za-z0-9._-]*$/.test(id))
      throw failed(
        cluster.name,
        `the token's ${b.nodeUid === undefined ? 'pod' : 'node'} UID ${JSON.stringify(id)} is not a UID`,
      );
    return {
      spiffeId: agentId(this.#ctx.trustDomain, 'k8s_psat', `${cluster.name}/${id}`),
      selectors,
    };
  }
}

export const k8sPsatNodeAttestorPlugin: NodeAttestorPlugin = {
  name: 'k8s_psat',
  config: K8S_PSAT_CONFIG,
  async create(raw, ctx) {
    const clusters = (raw as { clusters: Readonly<Record<string, ClusterConfig>> }).clusters;
    const names = Object.keys(clusters);
    const problems: string[] = [];
    if (names.length === 0)
      problems.push('clusters: name at least one cluster (clusters: { <name>: { … } })');
    for (const name of names) {
      const c = clusters[name] as ClusterConfig;
      if (c.jwks_path !== undefined && c.jwks_uri !== undefined)
        problems.push(
          `clusters.${name}: set one of jwks_path and jwks_uri, not both (neither: OIDC discovery from issuer)`,
        );
    }
    if (problems.length > 0) throw new Error(problems.join('; '));
    const out: Cluster[] = [];
    for (const name of names) {
      const c = clusters[name] as ClusterConfig;
      out.push({
        name,
        config: c,
        audiences: c.audience.length > 0 ? c.audience : [K8S_PSAT_DEFAULT_AUDIENCE],
        keys: await startKeys(c, c.issuer, `clusters.${name}`, ctx),
      });
    }
    return new K8sPsatAttestor(ctx, out);
  },
};
