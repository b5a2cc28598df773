// SDS on the agent's socket, spoken as Envoy speaks it (state-of-the-world xDS over real gRPC on
// the real Unix socket), against a real server and agent started in-process.
import assert from 'node:assert/strict';
import { X509Certificate } from 'node:crypto';
import { after, before, describe, it } from 'node:test';
import { create } from '@bufbuild/protobuf';
import type { GenService } from '@bufbuild/protobuf/codegenv2';
import { anyUnpack } from '@bufbuild/protobuf/wkt';
import * as grpc from '@grpc/grpc-js';
import { makeTempDir, type TempDir } from '@tessera/testkit';
import { ServiceClient } from '../../common/grpc.js';
import { createLogger } from '../../common/log.js';
import { type Secret, SecretSchema } from '../../gen/envoy/extensions/transport_sockets/tls/v3/secret_pb.js';
import { SPIFFECertValidatorConfigSchema } from '../../gen/envoy/extensions/transport_sockets/tls/v3/tls_spiffe_validator_config_pb.js';
import {
  type DiscoveryRequest,
  DiscoveryRequestSchema,
  type DiscoveryResponse,
} from '../../gen/envoy/service/discovery/v3/discovery_pb.js';
import { SecretDiscoveryService } from '../../gen/envoy/service/secret/v3/sds_pb.js';
import { startTestServer } from '../../server/api/test-server.test.util.js';
import type { RunningServer } from '../../server/run.js';
import { parseAgentConfig } from '../config.js';
import { type RunningAgent, startAgent } from '../run.js';
import { SECRET_TYPE_URL } from './sds.js';

type SdsMethods = typeof SecretDiscoveryService extends GenService<infer S> ? S : never;
const uid = process.getuid?.() ?? 0;

function secretsOf(r: DiscoveryResponse): Secret[] {
  return r.resources.map((a) => anyUnpack(a, SecretSchema) as Secret);
}

function leafOf(s: Secret): X509Certificate {
  assert.equal(s.type.case, 'tlsCertificate');
  const chain = s.type.value.certificateChain?.specifier;
  assert.equal(chain?.case, 'inlineBytes');
  return new X509Certificate(Buffer.from(chain.value as Uint8Array));
}

/** An Envoy-like stream: send requests, read responses one at a time. */
class Stream {
  readonly #call: grpc.ClientDuplexStream<DiscoveryRequest, DiscoveryResponse>;
  readonly #got: DiscoveryResponse[] = [];
  #wake: (() => void) | undefined;
  error: grpc.ServiceError | undefined;
  constructor(client: ServiceClient<SdsMethods>) {
    this.#call = client.bidiStream(SecretDiscoveryService.method.streamSecrets);
    this.#call.on('data', (r: DiscoveryResponse) => {
      this.#got.push(r);
      this.#wake?.();
    });
    this.#call.on('error', (e: grpc.ServiceError) => {
      this.error = e;
      this.#wake?.();
    });
  }
  request(names: string[], ack?: DiscoveryResponse, nack?: string): void {
    this.#call.write(
      create(DiscoveryRequestSchema, {
        typeUrl: SECRET_TYPE_URL,
        resourceNames: names,
        versionInfo: ack?.versionInfo ?? '',
        responseNonce: ack?.nonce ?? '',
        ...(nack === undefined ? {} : { errorDetail: { code: 3, message: nack } }),
      }),
    );
  }
  async next(): Promise<DiscoveryResponse> {
    while (this.#got.length === 0 && this.error === undefined)
      await new Promise<void>((r) => (this.#wake = r));
    const r = this.#got.shift();
    if (r === undefined) throw this.error;
    return r;
  }
  get pending(): number {
    return this.#got.length;
  }
  close(): void {
    this.#call.cancel();
  }
}

describe('SDS on the agent socket', () => {
  let tmp: TempDir;
  let server: RunningServer;
  let agent: RunningAgent;
  let client: ServiceClient<SdsMethods>;
  const logs: string[] = [];

  before(async () => {
    tmp = await makeTempDir('sds-');
    server = await startTestServer(tmp.path, ['x509_svid_ttl: 8s']);
    await server.datastore.createJoinToken({
      token: 'sds-test-token-0123456789',
      expiresAt: new Date(Date.now() + 60_000),
      agentName: 'sds',
    });
    const parentId = 'spiffe://example.org/tessera/agent/join_token/sds';
    const selectors = [{ type: 'unix', value: `uid:${uid}` }];
    await server.datastore.createEntry({ spiffeId: 'spiffe://example.org/front', parentId, selectors });
    await server.datastore.createEntry({ spiffeId: 'spiffe://example.org/back', parentId, selectors });
    agent = await startAgent(
      parseAgentConfig(
        [
          'trust_domain: example.org',
          'server_address: 127.0.0.1',
          `server_port: ${server.agentApiPort}`,
          'insecure_bootstrap: true',
          `socket_path: ${tmp.path}/agent.sock`,
          `data_dir: ${tmp.path}/agent`,
          // Where istio-agent looks for an SDS server (under /var/run/secrets in a real install).
          `additional_socket_path: ${tmp.path}/secrets/workload-spiffe-uds/socket`,
          'health: { port: 0 }',
        ].join('\n'),
      ),
      {
        joinToken: 'sds-test-token-0123456789',
        logger: createLogger({ level: 'warn', write: (l) => logs.push(l) }),
      },
    );
    client = new ServiceClient(
      SecretDiscoveryService,
      `unix://${agent.socketPath}`,
      grpc.credentials.createInsecure(),
    );
  });

  after(async () => {
    client?.close();
    await agent?.stop();
    await server?.stop();
    await tmp?.cleanup();
  });

  it('serves default and ROOTCA with a version and a nonce; an ACK changes nothing; a rotation is pushed', {
    timeout: 30_000,
  }, async () => {
    const s = new Stream(client);
    try {
      s.request(['default', 'ROOTCA']);
      const first = await s.next();
      assert.equal(first.typeUrl, SECRET_TYPE_URL);
      assert.ok(first.versionInfo !== '' && first.nonce !== '');
      const [def, root] = secretsOf(first);
      assert.equal(def?.name, 'default');
      assert.match(leafOf(def as Secret).subjectAltName ?? '', /URI:spiffe:\/\/example.org\/(front|back)/);
      assert.equal(root?.name, 'ROOTCA');
      assert.equal(root?.type.case, 'validationContext');
      s.request(['default', 'ROOTCA'], first); // ACK
      // The next response is the rotation (8 s SVIDs): a new version, a new nonce, a new serial.
      const rotated = await s.next();
      assert.notEqual(rotated.versionInfo, first.versionInfo);
      assert.notEqual(rotated.nonce, first.nonce);
      assert.notEqual(
        leafOf(secretsOf(rotated)[0] as Secret).serialNumber,
        leafOf(def as Secret).serialNumber,
      );
    } finally {
      s.close();
    }
  });

  it('changes names within a stream: a SPIFFE ID, a trust domain, ALL through the SPIFFE validator; unknown names are left out', async () => {
    const s = new Stream(client);
    try {
      s.request(['spiffe://example.org/back']);
      const one = await s.next();
      assert.deepEqual(
        secretsOf(one).map((x) => x.name),
        ['spiffe://example.org/back'],
      );
      assert.match(leafOf(secretsOf(one)[0] as Secret).subjectAltName ?? '', /example.org\/back/);
      s.request(['ALL', 'spiffe://example.org', 'nope', 'spiffe://example.org/not-mine'], one);
      const two = await s.next();
      const [all, td] = secretsOf(two);
      assert.deepEqual(
        secretsOf(two).map((x) => x.name),
        ['ALL', 'spiffe://example.org'],
      );
      assert.equal(all?.type.case, 'validationContext');
      const validator =
        all?.type.case === 'validationContext' ? all.type.value.customValidatorConfig : undefined;
      assert.equal(validator?.name, 'envoy.tls.cert_validator.spiffe');
      const cfg = anyUnpack(validator?.typedConfig as never, SPIFFECertValidatorConfigSchema);
      assert.deepEqual(
        cfg?.trustDomains.map((t) => t.name),
        ['example.org'],
      );
      assert.equal(td?.type.case, 'validationContext');
      assert.ok(logs.some((l) => /left out/.test(l) && /nope/.test(l)));
    } finally {
      s.close();
    }
  });

  it('after a NACK the same version is not sent again', async () => {
    const s = new Stream(client);
    try {
      s.request(['ROOTCA']);
      const first = await s.next();
      s.request(['ROOTCA'], first, 'bad certificate');
      // Ask for another resource: the answer is the next response; nothing for the NACKed version came before it.
      s.request(['ROOTCA', 'spiffe://example.org'], first);
      const next = await s.next();
      assert.equal(
        secretsOf(next).some((x) => x.name === 'spiffe://example.org'),
        true,
      );
      assert.ok(logs.some((l) => /NACK/.test(l) && /bad certificate/.test(l)));
    } finally {
      s.close();
    }
  });

  it("serves istio-agent's requests (default and ROOTCA) on the additional socket too", async () => {
    const istio = new ServiceClient(
      SecretDiscoveryService,
      `unix://${tmp.path}/secrets/workload-spiffe-uds/socket`,
      grpc.credentials.createInsecure(),
    );
    const s = new Stream(istio);
    try {
      s.request(['default', 'ROOTCA']);
      assert.deepEqual(
        secretsOf(await s.next()).map((x) => x.name),
        ['default', 'ROOTCA'],
      );
    } finally {
      s.close();
      istio.close();
    }
  });

  it('FetchSecrets answers once; DeltaSecrets is unimplemented with a clear message', async () => {
    const r = await client.unary(SecretDiscoveryService.method.fetchSecrets, {
      typeUrl: SECRET_TYPE_URL,
      resourceNames: ['ROOTCA'],
    });
    assert.deepEqual(
      secretsOf(r).map((x) => x.name),
      ['ROOTCA'],
    );
    const delta = client.bidiStream(SecretDiscoveryService.method.deltaSecrets);
    const err = await new Promise<grpc.ServiceError>((resolve) => delta.on('error', resolve));
    assert.equal(err.code, grpc.status.UNIMPLEMENTED);
    assert.match(err.details, /use StreamSecrets/);
  });
});
