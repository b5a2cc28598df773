// The k8s_psat node attestor with projected service account tokens shaped as kube-apiserver issues
// them (RS256, kubernetes.io claims of the bound pod and node), signed by real keys: a cluster whose
// issuer is served over HTTPS in this process (OIDC discovery + JWKS, as /openid/v1/jwks), and one
// whose keys are a JWKS file. No kube-apiserver runs: the token is what SPIRE's TokenReview would
// have checked, and its signature stands for it.
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { createWorkloadApiClient, parseTrustDomain } from '@tessera/spiffe';
import { FakeClock, makeTempDir, type TempDir, TestJwtAuthority } from '@tessera/testkit';
import { parseAgentConfig } from '../../agent/config.js';
import { type RunningAgent, startAgent } from '../../agent/run.js';
import { ConfigError } from '../../common/config-schema.js';
import { isTesseraError, TesseraErrorCode } from '../../common/errors.js';
import { createLogger } from '../../common/log.js';
import { startTestServer } from '../api/test-server.test.util.js';
import { parseServerConfig } from '../config.js';
import { openSqliteDatastore } from '../datastore/sqlite.js';
import type { Datastore } from '../datastore/types.js';
import type { RunningServer } from '../run.js';
import { k8sPsatNodeAttestorPlugin } from './k8s-psat.js';
import { startTestOidcIssuer, type TestOidcIssuer } from './oidc-issuer.test.util.js';
import type { NodeAttestor } from './types.js';

const quiet = createLogger({ level: 'error', write: () => undefined });
const noChallenge = async (): Promise<Uint8Array> => assert.fail('k8s_psat sends no challenge');
const td = parseTrustDomain('example.org');
const KUBEADM_ISSUER = 'https://kubernetes.default.svc.cluster.local';

interface PodToken {
  ns?: string;
  sa?: string;
  pod?: { name: string; uid: string } | null;
  node?: { name: string; uid: string } | null;
  aud?: unknown;
  claims?: Record<string, unknown>;
}

/** The claims kube-apiserver puts in a projected token of a pod (1.30+: with its node). */
function psatClaims(iss: string, t: number, o: PodToken = {}): Record<string, unknown> {
  const ns = o.ns ?? 'tessera';
  const sa = o.sa ?? 'tessera-agent';
  const k: Record<string, unknown> = {
    namespace: ns,
    serviceaccount: { name: sa, uid: '9d4c3e2a-1b0f-4e5d-8c7b-6a5f4e3d2c1b' },
    warnafter: t + 3000,
  };
  if (o.pod !== null)
    k.pod = o.pod ?? { name: 'tessera-agent-x7k2p', uid: '5c0e4a6b-3f2d-4b1a-9e8c-7d6f5a4b3c2d' };
  if (o.node !== null) k.node = o.node ?? { name: 'worker-1', uid: '1f2e3d4c-5b6a-4978-8695-a4b3c2d1e0f9' };
  return {
    aud: o.aud ?? ['tessera-server'],
    exp: t + 3607,
    iat: t,
    nbf: t,
    iss,
    jti: randomUUID(),
    'kubernetes.io': k,
    sub: `system:serviceaccount:${ns}:${sa}`,
    ...o.claims,
  };
}

function rejectsWith(p: Promise<unknown>, pattern: RegExp): Promise<void> {
  return assert.rejects(p, (e: unknown) => {
    assert.ok(
      isTesseraError(e, TesseraErrorCode.ATTESTATION_FAILED),
      `expected ERR_ATTESTATION_FAILED, got ${String(e)}`,
    );
    assert.match(e.message, pattern);
    return true;
  });
}

describe('k8s_psat node attestor', () => {
  let tmp: TempDir;
  let prod: TestOidcIssuer;
  let edge: TestJwtAuthority;
  let ds: Datastore;
  let a: NodeAttestor;
  const clock = new FakeClock();
  const secs = () => Math.floor(clock.now().getTime() / 1000);

  const yaml = () =>
    [
      'node_attestors:',
      '  k8s_psat:',
      '    clusters:',
      '      prod:',
      `        issuer: ${prod.issuer}`,
      `        ca_bundle_path: ${prod.caPath}`,
      '        service_account_allow_list: ["tessera:tessera-agent"]',
      '      edge:',
      `        issuer: ${KUBEADM_ISSUER}`,
      `        jwks_path: ${tmp.path}/edge-jwks.json`,
      '        audience: [tessera-edge]',
      '        service_account_allow_list: ["tessera:tessera-agent", "kube-system:node-agent"]',
    ].join('\n');
  const section = (text: string) =>
    (
      parseServerConfig(`trust_domain: example.org\ndata_dir: ${tmp.path}/data\n${text}`)
        .node_attestors as unknown as Record<string, unknown>
    ).k8s_psat;
  const build = (text: string) =>
    Promise.resolve(
      k8sPsatNodeAttestorPlugin.create(section(text), {
        trustDomain: td,
        datastore: ds,
        logger: quiet,
        now: () => clock.now(),
      }),
    );
  const attest = (cluster: string, token: string) =>
    a.attest(Buffer.from(JSON.stringify({ cluster, token })), noChallenge, clock.now());
  const prodToken = (o: PodToken = {}) => prod.key.sign(psatClaims(prod.issuer, secs(), o));
  const edgeToken = (o: PodToken = {}) =>
    edge.sign(psatClaims(KUBEADM_ISSUER, secs(), { aud: ['tessera-edge'], ...o }));

  before(async () => {
    tmp = await makeTempDir('k8s-psat-');
    prod = await startTestOidcIssuer(tmp.path, { name: 'prod', now: () => clock.now() });
    // `kubectl get --raw /openid/v1/jwks > edge-jwks.json`: a cluster whose issuer nobody can reach.
    edge = TestJwtAuthority.create({ trustDomain: 'edge.test', keyType: 'rsa-2048' });
    writeFileSync(
      join(tmp.path, 'edge-jwks.json'),
      JSON.stringify({ keys: [{ ...edge.jwk(), use: 'sig', alg: 'RS256' }] }),
    );
    ds = await openSqliteDatastore(':memory:');
    a = await build(yaml());
  });
  after(async () => {
    await ds?.close();
    await prod?.close();
    await tmp?.cleanup();
  });

  it("attests an allowed service account's pod: agent ID by the node's UID, SPIRE's selectors from the token", async () => {
    const r = await attest('prod', prodToken());
    assert.equal(
      r.spiffeId,
      'spiffe://example.org/tessera/agent/k8s_psat/prod/1f2e3d4c-5b6a-4978-8695-a4b3c2d1e0f9',
    );
    assert.deepEqual(
      r.selectors.map((s) => `${s.type}:${s.value}`),
      [
        'k8s_psat:cluster:prod',
        'k8s_psat:agent_ns:tessera',
        'k8s_psat:agent_sa:tessera-agent',
        'k8s_psat:agent_pod_name:tessera-agent-x7k2p',
        'k8s_psat:agent_pod_uid:5c0e4a6b-3f2d-4b1a-9e8c-7d6f5a4b3c2d',
        'k8s_psat:agent_node_name:worker-1',
        'k8s_psat:agent_node_uid:1f2e3d4c-5b6a-4978-8695-a4b3c2d1e0f9',
      ],
    );
  });

  it('a token without the node (Kubernetes before 1.30) names the agent by its pod UID; a static JWKS file cluster with its own audience', async () => {
    const r = await attest(
      'edge',
      edgeToken({
        sa: 'node-agent',
        ns: 'kube-system',
        node: null,
        pod: { name: 'node-agent-abcde', uid: 'aa11bb22-cc33-4d44-8e55-ff6677889900' },
      }),
    );
    assert.equal(
      r.spiffeId,
      'spiffe://example.org/tessera/agent/k8s_psat/edge/aa11bb22-cc33-4d44-8e55-ff6677889900',
    );
    assert.deepEqual(
      r.selectors.map((s) => `${s.type}:${s.value}`),
      [
        'k8s_psat:cluster:edge',
        'k8s_psat:agent_ns:kube-system',
        'k8s_psat:agent_sa:node-agent',
        'k8s_psat:agent_pod_name:node-agent-abcde',
        'k8s_psat:agent_pod_uid:aa11bb22-cc33-4d44-8e55-ff6677889900',
      ],
    );
  });

  it('refuses a service account that is not in the allow list, naming it and the list', async () => {
    await rejectsWith(
      attest('prod', prodToken({ ns: 'default', sa: 'default' })),
      /^k8s_psat: cluster prod: service account default:default is not allowed \(service_account_allow_list: tessera:tessera-agent\)$/,
    );
    // Allowed in edge, not in prod.
    await rejectsWith(
      attest('prod', prodToken({ ns: 'kube-system', sa: 'node-agent' })),
      /service account kube-system:node-agent is not allowed/,
    );
  });

  it('refuses an unknown cluster, a token of another cluster, a wrong audience, an expired token, a bad signature, an unknown key', async () => {
    await rejectsWith(
      attest('staging', prodToken()),
      /^k8s_psat: cluster "staging" is not configured \(clusters: prod, edge\); the agent's node_attestor\.k8s_psat\.cluster must name one$/,
    );
    // edge's token presented as prod's: neither issuer nor key fit.
    await rejectsWith(
      attest('prod', edgeToken({ aud: ['tessera-server'] })),
      /^k8s_psat: cluster prod: unknown signing key: .* has no key ID/,
    );
    await rejectsWith(
      attest('prod', prod.key.sign(psatClaims(KUBEADM_ISSUER, secs()))),
      new RegExp(
        `^k8s_psat: cluster prod: wrong issuer: iss is "${KUBEADM_ISSUER}", expected "${prod.issuer}"$`,
      ),
    );
    // The default audience is tessera-server; a token for the API server (its default) is refused.
    await rejectsWith(
      attest('prod', prodToken({ aud: ['https://kubernetes.default.svc.cluster.local'] })),
      /^k8s_psat: cluster prod: wrong audience: aud is \["https:\/\/kubernetes.default.svc.cluster.local"\], expected one of \["tessera-server"\] \(audience\)$/,
    );
    const t = secs();
    await rejectsWith(
      attest('prod', prod.key.sign(psatClaims(prod.issuer, t - 7200))),
      /^k8s_psat: cluster prod: expired: exp/,
    );
    await rejectsWith(
      attest('prod', prod.newKey(prod.key.kid).sign(psatClaims(prod.issuer, t))),
      /^k8s_psat: cluster prod: bad signature/,
    );
  });

  it('refuses a token that is not a pod-bound projected token, or whose sub is not its service account', async () => {
    await rejectsWith(
      attest('prod', prodToken({ pod: null, node: null })),
      /^k8s_psat: cluster prod: the token is not bound to a pod; mount a projected service account token/,
    );
    await rejectsWith(
      attest('prod', prodToken({ claims: { 'kubernetes.io': undefined } })),
      /the token has no kubernetes\.io claim/,
    );
    await rejectsWith(
      attest('prod', prodToken({ claims: { sub: 'system:serviceaccount:tessera:other' } })),
      /the token's sub "system:serviceaccount:tessera:other" is not its kubernetes\.io service account system:serviceaccount:tessera:tessera-agent/,
    );
    await rejectsWith(
      a.attest(Buffer.from('just-a-token'), noChallenge, clock.now()),
      /^k8s_psat: the payload is not JSON/,
    );
  });

  it('refuses a replayed token', async () => {
    const token = prodToken({
      pod: { name: 'tessera-agent-r3pl4', uid: '0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d' },
    });
    await attest('prod', token);
    await rejectsWith(
      attest('prod', token),
      /^k8s_psat: cluster prod: replay: this token was used to attest before \(sha256 [0-9a-f]{16}…\)/,
    );
  });

  it('configuration problems are named by key', async () => {
    assert.throws(
      () =>
        section(
          [
            'node_attestors:',
            '  k8s_psat:',
            '    clusters:',
            '      prod:',
            '        service_account_allow_list: ["tessera/tessera-agent"]',
            '        kube_config_file: /etc/kube.conf',
          ].join('\n'),
        ),
      (e: unknown) => {
        assert.ok(e instanceof ConfigError);
        assert.deepEqual(
          e.problems.map((p) => `${p.line}:${p.path}: ${p.message}`),
          [
            '7:node_attestors.k8s_psat.clusters.prod.service_account_allow_list[0]: must be "<namespace>:<service account>"; got "tessera/tessera-agent"',
            '8:node_attestors.k8s_psat.clusters.prod.kube_config_file: unknown key; allowed here: issuer, service_account_allow_list, audience, jwks_uri, jwks_path, ca_bundle_path, clock_skew',
            '6:node_attestors.k8s_psat.clusters.prod.issuer: is required',
          ],
        );
        return true;
      },
    );
    await assert.rejects(
      build(
        [
          'node_attestors:',
          '  k8s_psat:',
          '    clusters:',
          '      prod:',
          `        issuer: ${KUBEADM_ISSUER}`,
          '        jwks_uri: https://10.0.0.1:6443/openid/v1/jwks',
          `        jwks_path: ${tmp.path}/edge-jwks.json`,
          '        service_account_allow_list: ["tessera:tessera-agent"]',
        ].join('\n'),
      ),
      /^Error: clusters\.prod: set one of jwks_path and jwks_uri, not both/,
    );
  });

  describe('with a real server and agent', () => {
    let server: RunningServer;
    const agents: RunningAgent[] = [];
    before(async () => {
      server = await startTestServer(tmp.path, [yaml()]);
      // Every agent running as tessera:tessera-agent in prod is "prod-nodes"; the workload hangs off it.
      await server.datastore.createEntry({
        spiffeId: 'spiffe://example.org/k8s/prod-nodes',
        parentId: 'spiffe://example.org/tessera/server',
        selectors: [
          { type: 'k8s_psat', value: 'cluster:prod' },
          { type: 'k8s_psat', value: 'agent_sa:tessera-agent' },
        ],
      });
      await server.datastore.createEntry({
        spiffeId: 'spiffe://example.org/billing',
        parentId: 'spiffe://example.org/k8s/prod-nodes',
        selectors: [{ type: 'unix', value: `uid:${process.getuid?.() ?? 0}` }],
      });
    });
    after(async () => {
      for (const x of agents) await x.stop();
      await server?.stop();
    });
    const agentYaml = (name: string, cluster: string, tokenPath: string) =>
      parseAgentConfig(
        [
          'trust_domain: example.org',
          'server_address: 127.0.0.1',
          `server_port: ${server.agentApiPort}`,
          'insecure_bootstrap: true',
          `socket_path: ${tmp.path}/${name}.sock`,
          `data_dir: ${tmp.path}/${name}`,
          'health: { port: 0 }',
          `node_attestor: { k8s_psat: { cluster: ${cluster}, token_path: ${tokenPath} } }`,
        ].join('\n'),
      );
    // Signed with the real clock, which the server uses.
    const realToken = (o: PodToken) =>
      prod.key.sign(psatClaims(prod.issuer, Math.floor(Date.now() / 1000), o));

    it("an agent with the pod's projected token attests, and its workload gets the SVID of the node alias's entry", async () => {
      const path = join(tmp.path, 'agent-token');
      writeFileSync(
        path,
        realToken({ node: { name: 'worker-7', uid: '7e7e7e7e-0000-4000-8000-000000000007' } }),
      );
      const agent = await startAgent(agentYaml('psat1', 'prod', path), { logger: quiet });
      agents.push(agent);
      assert.equal(
        agent.manager.id,
        'spiffe://example.org/tessera/agent/k8s_psat/prod/7e7e7e7e-0000-4000-8000-000000000007',
      );
      const client = createWorkloadApiClient({ address: `unix://${agent.socketPath}` });
      try {
        const ctx = await client.fetchX509Context();
        assert.deepEqual(
          ctx.svids.map((s) => s.id.toString()),
          ['spiffe://example.org/billing'],
        );
      } finally {
        client.close();
      }
    });

    it('an agent of a service account not allowed is refused and told why; one without a token file is told where to mount it', async () => {
      const path = join(tmp.path, 'other-token');
      writeFileSync(path, realToken({ ns: 'default', sa: 'default' }));
      await assert.rejects(
        startAgent(agentYaml('psat2', 'prod', path), { logger: quiet }),
        /node attestation \(k8s_psat\) with the server at .* failed: .*k8s_psat: cluster prod: service account default:default is not allowed/,
      );
      await assert.rejects(
        startAgent(agentYaml('psat3', 'prod', join(tmp.path, 'absent')), { logger: quiet }),
        /node_attestor\.k8s_psat: token_path: cannot read .*absent: ENOENT; mount a projected service account token there/,
      );
    });
  });
});
