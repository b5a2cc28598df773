// aws_iid end to end, in-process: a real server and real agents started as `tessera server run` and
// `tessera agent run` start them, the agent reading an IMDSv2 instance metadata service on
// 127.0.0.1, documents signed by openssl as AWS signs them. What the agent gets, what the server
// refuses and why (as the agent reports it), and configuration errors named by key.
import assert from 'node:assert/strict';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { createWorkloadApiClient } from '@tessera/spiffe';
import { freePort, makeTempDir, type TempDir, TestCa } from '@tessera/testkit';
import { createLogger } from '../../common/log.js';
import { startTestServer } from '../../server/api/test-server.test.util.js';
import {
  type AwsRegionSigner,
  createAwsRegionSigner,
  type FakeImds,
  identityDocument,
  signIdentityDocument,
  startFakeImds,
} from '../../server/attestation/aws-iid.test.util.js';
import { parseServerConfig } from '../../server/config.js';
import type { RunningServer } from '../../server/run.js';
import { parseAgentConfig } from '../config.js';
import { type RunningAgent, startAgent } from '../run.js';
import { fetchInstanceIdentity } from './aws-iid.js';

const quiet = createLogger({ level: 'error', write: () => undefined });
const uid = process.getuid?.() ?? 0;
const ACCOUNT = '123456789012';

describe('aws_iid node attestation (server and agent)', () => {
  let tmp: TempDir;
  let west: AwsRegionSigner;
  let lookAlike: AwsRegionSigner;
  let imds: FakeImds;
  let tofu: RunningServer;
  let reattest: RunningServer;
  const agents: RunningAgent[] = [];
  let seq = 0;

  before(async () => {
    tmp = await makeTempDir('aws-iid-e2e-');
    const aws = TestCa.create({ trustDomain: 'aws.test', keyType: 'rsa-2048' });
    west = createAwsRegionSigner(tmp.path, 'us-west-2', 'us-west-2', aws);
    lookAlike = createAwsRegionSigner(tmp.path, 'us-west-2', 'look-alike');
    const section = (extra: string) =>
      `node_attestors: { aws_iid: { account_ids: ["${ACCOUNT}"], certificate_bundle_path: ${west.certificatePath}${extra} } }`;
    tofu = await startTestServer(join(tmp.path, 'tofu'), [section('')]);
    reattest = await startTestServer(join(tmp.path, 'reattest'), [section(', allow_reattestation: true')]);
    imds = await startFakeImds({ document: '', rsa2048: '' });
  });
  after(async () => {
    for (const a of agents) await a.stop();
    await imds?.close();
    await tofu?.stop();
    await reattest?.stop();
    await tmp?.cleanup();
  });

  const instanceId = () => `i-0aa${(++seq).toString(16).padStart(14, '0')}`;
  /** The instance metadata service serves `document`, signed by `signer` unless a signature is given. */
  const serve = (document: string, signer = west, rsa2048?: string) =>
    imds.serve({ document, rsa2048: rsa2048 ?? signIdentityDocument(tmp.path, signer, document) });
  const start = async (server: RunningServer, endpoint = imds.url) => {
    const name = `agent-${++seq}`;
    const agent = await startAgent(
      parseAgentConfig(
        [
          'trust_domain: example.org',
          'server_address: 127.0.0.1',
          `server_port: ${server.agentApiPort}`,
          'insecure_bootstrap: true',
          `socket_path: ${tmp.path}/${name}.sock`,
          `data_dir: ${tmp.path}/${name}`,
          'health: { port: 0 }',
          `node_attestor: { aws_iid: { ec2_metadata_endpoint: "${endpoint}" } }`,
        ].join('\n'),
      ),
      { logger: quiet },
    );
    agents.push(agent);
    return agent;
  };
  const refused = (server: RunningServer, message: RegExp) =>
    assert.rejects(start(server), (err: Error) => {
      assert.match(err.message, /node attestation \(aws_iid\) with the server at 127\.0\.0\.1:\d+ failed: /);
      assert.match(err.message, message);
      return true;
    });

  it('attests from the metadata service (IMDSv2) with the documented ID and selectors, and serves a workload of a node alias', async () => {
    const id = instanceId();
    serve(identityDocument({ instanceId: id }));
    await tofu.datastore.createEntry({
      spiffeId: 'spiffe://example.org/nodes/us-west-2',
      parentId: 'spiffe://example.org/tessera/server',
      selectors: [
        { type: 'aws_iid', value: `account:id:${ACCOUNT}` },
        { type: 'aws_iid', value: 'region:us-west-2' },
      ],
    });
    await tofu.datastore.createEntry({
      spiffeId: 'spiffe://example.org/web',
      parentId: 'spiffe://example.org/nodes/us-west-2',
      selectors: [{ type: 'unix', value: `uid:${uid}` }],
    });
    const before = imds.requests.length;
    const agent = await start(tofu);
    const agentId = `spiffe://example.org/tessera/agent/aws_iid/${ACCOUNT}/us-west-2/${id}`;
    assert.equal(agent.manager.id, agentId);
    // IMDSv2: a token by PUT (with its TTL), then the document and the RSA-2048 signature with it.
    const seen = imds.requests.slice(before);
    assert.deepEqual(
      seen.map((r) => `${r.method} ${r.path}`),
      [
        'PUT /latest/api/token',
        'GET /latest/dynamic/instance-identity/document',
        'GET /latest/dynamic/instance-identity/rsa2048',
      ],
    );
    assert.ok(seen[1]?.token !== undefined && seen[2]?.token === seen[1]?.token);
    const stored = await tofu.datastore.getAgent(agentId);
    assert.deepEqual(
      stored?.selectors.map((s) => `${s.type}:${s.value}`),
      [
        `aws_iid:account:id:${ACCOUNT}`,
        'aws_iid:az:us-west-2b',
        'aws_iid:image:id:ami-0abcdef1234567890',
        `aws_iid:instance:id:${id}`,
        'aws_iid:instance:type:t3.micro',
        'aws_iid:region:us-west-2',
      ],
    );
    const client = createWorkloadApiClient({ address: `unix://${agent.socketPath}` });
    try {
      const ctx = await client.fetchX509Context();
      assert.deepEqual(
        ctx.svids.map((s) => s.id.toString()),
        ['spiffe://example.org/web'],
      );
    } finally {
      client.close();
    }
  });

  it('refuses a second attestation of the same instance (trust on first use), even with a new document', async () => {
    const id = instanceId();
    serve(identityDocument({ instanceId: id }));
    await start(tofu);
    // Stopped and started: a new pendingTime, so a new document of the same instance.
    serve(identityDocument({ instanceId: id, pendingTime: '2026-11-21T09:30:00Z' }));
    await refused(
      tofu,
      new RegExp(
        `aws_iid: instance ${id} has already attested as spiffe://example\\.org/tessera/agent/aws_iid/${ACCOUNT}/us-west-2/${id}; an instance attests once \\(trust on first use\\): evict that agent`,
      ),
    );
  });

  it('with allow_reattestation, the instance attests again with a new document; a replayed document is refused', async () => {
    const id = instanceId();
    const first = identityDocument({ instanceId: id });
    const firstSignature = signIdentityDocument(tmp.path, west, first);
    serve(first, west, firstSignature);
    const a = await start(reattest);
    serve(identityDocument({ instanceId: id, pendingTime: '2026-11-21T09:30:00Z' }));
    const b = await start(reattest);
    assert.equal(b.manager.id, a.manager.id);
    serve(first, west, firstSignature);
    await refused(
      reattest,
      new RegExp(
        `aws_iid: this instance identity document \\(instance ${id}\\) was already used to attest within replay_window \\(1h\\); a replay is refused`,
      ),
    );
  });

  it('refuses a signature by a certificate that is not configured', async () => {
    serve(identityDocument({ instanceId: instanceId() }), lookAlike);
    await refused(
      tofu,
      /aws_iid: rsa2048 \(instance i-[0-9a-f]+, region us-west-2\): the signer \(serial [0-9A-F]+\) is none of the 1 configured AWS certificate\(s\)/,
    );
  });

  it('refuses a tampered document', async () => {
    const doc = identityDocument({ instanceId: instanceId() });
    serve(doc.replace(ACCOUNT, '111122223333'), west, signIdentityDocument(tmp.path, west, doc));
    await refused(
      tofu,
      /aws_iid: the document is not the one signed: it differs from the document inside the rsa2048 signature/,
    );
  });

  it('refuses an account that is not in account_ids', async () => {
    serve(identityDocument({ instanceId: instanceId(), accountId: '210987654321' }));
    await refused(
      tofu,
      /aws_iid: account 210987654321 \(instance i-[0-9a-f]+\) is not in account_ids \(123456789012\)/,
    );
  });

  it('an unreachable metadata service is a start-up error naming the endpoint', async () => {
    const endpoint = `http://127.0.0.1:${await freePort()}`;
    await assert.rejects(start(tofu, endpoint), (err: Error) => {
      assert.equal((err as { code?: string }).code, 'ERR_STARTUP');
      assert.match(
        err.message,
        new RegExp(
          `node_attestor\\.aws_iid: cannot reach the instance metadata service at ${endpoint.replaceAll('.', '\\.')} \\(ec2_metadata_endpoint\\): PUT /latest/api/token: connect ECONNREFUSED`,
        ),
      );
      return true;
    });
  });

  it('a metadata service that refuses the request says which request and the HTTP status', async () => {
    // A GET without the session token, as an IMDSv1 client would send it, is refused with 401.
    const dropToken: typeof fetch = (url, init) =>
      fetch(url, { ...init, headers: String(url).endsWith('/token') ? (init?.headers ?? {}) : {} });
    await assert.rejects(
      fetchInstanceIdentity(imds.url, { fetch: dropToken }),
      new RegExp(
        `^Error: the instance metadata service at ${imds.url.replaceAll('.', '\\.')} \\(ec2_metadata_endpoint\\) answered HTTP 401 to GET /latest/dynamic/instance-identity/document \\(the session token was refused\\)$`,
      ),
    );
  });

  it('configuration errors are named by key, at parse time and at start', async () => {
    assert.throws(
      () =>
        parseServerConfig(
          [
            'trust_domain: example.org',
            'node_attestors: { aws_iid: { account_ids: ["12"], region_certificate_paths: { mars-1a: /x.pem } } }',
          ].join('\n'),
        ),
      (err: Error) => {
        assert.match(
          err.message,
          /node_attestors\.aws_iid\.account_ids\[0\]: must be a 12-digit AWS account ID; got "12"/,
        );
        assert.match(
          err.message,
          /node_attestors\.aws_iid\.region_certificate_paths\.mars-1a: must be an AWS region such as us-east-1/,
        );
        return true;
      },
    );
    assert.throws(
      () => parseServerConfig(['trust_domain: example.org', 'node_attestors: { aws_iid: {} }'].join('\n')),
      /node_attestors\.aws_iid\.account_ids: is required/,
    );
    assert.throws(
      () =>
        parseAgentConfig(
          [
            'trust_domain: example.org',
            'server_address: 127.0.0.1',
            'node_attestor: { aws_iid: { ec2_metadata_endpoint: "169.254.169.254" } }',
          ].join('\n'),
        ),
      /node_attestor\.aws_iid\.ec2_metadata_endpoint: must be a URL such as http:\/\/169\.254\.169\.254; got "169\.254\.169\.254"/,
    );
    await assert.rejects(
      startTestServer(join(tmp.path, 'no-certs'), [
        `node_attestors: { aws_iid: { account_ids: ["${ACCOUNT}"] } }`,
      ]),
      /node_attestors\.aws_iid: set certificate_bundle_path \(a PEM file of AWS's RSA-2048 certificates/,
    );
    const missing = join(tmp.path, 'missing.pem');
    await assert.rejects(
      startTestServer(join(tmp.path, 'missing-certs'), [
        `node_attestors: { aws_iid: { account_ids: ["${ACCOUNT}"], region_certificate_paths: { us-west-2: ${missing} } } }`,
      ]),
      new RegExp(
        `node_attestors\\.aws_iid: region_certificate_paths\\.us-west-2: cannot read ${missing}: ENOENT`,
      ),
    );
    const ec = join(tmp.path, 'ec.pem');
    writeFileSync(ec, TestCa.create({ trustDomain: 'ec.test' }).rootPem());
    await assert.rejects(
      startTestServer(join(tmp.path, 'ec-certs'), [
        `node_attestors: { aws_iid: { account_ids: ["${ACCOUNT}"], certificate_bundle_path: ${ec} } }`,
      ]),
      /node_attestors\.aws_iid: certificate_bundle_path: certificate 1 of .*ec\.pem has a key of type ec, not RSA; use AWS's RSA-2048 certificates/,
    );
  });

  it('the server.yaml and agent.yaml examples of the aws_iid section of docs/attestation.md are valid', () => {
    const doc = readFileSync(new URL('../../../docs/attestation.md', import.meta.url), 'utf8');
    const section = doc.slice(doc.indexOf('\n## aws_iid'));
    const end = section.indexOf('\n## ', 1);
    const blocks = [...(end < 0 ? section : section.slice(0, end)).matchAll(/```yaml\n([\s\S]*?)```/g)].map(
      (m) => m[1] as string,
    );
    assert.equal(blocks.length, 2);
    const server = parseServerConfig(`trust_domain: example.org\n${blocks[0]}`, 'docs/attestation.md');
    assert.deepEqual(
      (server.node_attestors as unknown as { aws_iid: { account_ids: string[] } }).aws_iid.account_ids,
      [ACCOUNT],
    );
    const agent = parseAgentConfig(
      `trust_domain: example.org\nserver_address: 127.0.0.1\n${blocks[1]}`,
      'docs/attestation.md',
    );
    assert.equal(
      (agent.node_attestor as unknown as { aws_iid: { ec2_metadata_endpoint: string } }).aws_iid
        .ec2_metadata_endpoint,
      'http://169.254.169.254',
    );
  });
});
