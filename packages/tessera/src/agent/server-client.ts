// The agent's side of the agent API: attest (answering challenges), then call the server over mTLS
// with the agent SVID. The server is verified as spiffe://<td>/tessera/server against the bundle the
// agent trusts (its bootstrap bundle, then the one the server sends).
import { create } from '@bufbuild/protobuf';
import type { GenService } from '@bufbuild/protobuf/codegenv2';
import * as grpc from '@grpc/grpc-js';
import {
  authorizeId,
  grpcChannelCredentials,
  type TlsBundleSource,
  type TrustDomain,
  type X509Bundle,
  X509BundleSet,
  type X509SvidSource,
} from '@tessera/spiffe';
import { ServiceClient } from '../common/grpc.js';
import {
  Agent,
  AttestRequestSchema,
  type AttestResult,
  type BatchNewX509SVIDResponse,
  type GetBundleResponse,
  type NewJWTSVIDResponse,
  type SyncResponse,
} from '../gen/tessera/agent/v1/agent_pb.js';

type AgentMethods = typeof Agent extends GenService<infer S> ? S : never;

export interface ServerClientOptions {
  /** `host:port` of the server's agent API. */
  address: string;
  trustDomain: TrustDomain;
  /** The trust domain's bundle the agent trusts the server with (or bundleSource, or insecure). */
  bundle?: X509Bundle;
  /** The agent SVID; omit before attestation. */
  svid?: X509SvidSource;
  /** A live bundle source (emits 'update' on change) to follow CA rotation; default: `bundle`, fixed. */
  bundleSource?: TlsBundleSource;
  /**
   * Trust the first server that answers, without verifying its certificate: only for attesting in a
   * lab with `insecure_bootstrap: true`. Never with an SVID.
   */
  insecure?: boolean;
}

/** One connection to the agent API. Errors are grpc-js ServiceErrors carrying the server's message. */
export class ServerClient {
  readonly #typed: ServiceClient<AgentMethods>;

  constructor(options: ServerClientOptions) {
    if (options.insecure === true && options.svid !== undefined)
      throw new TypeError('agent: an insecure connection cannot carry the agent SVID');
    const credentials =
      options.insecure === true
        ? grpc.credentials.createSsl(null, null, null, {
            rejectUnauthorized: false,
            checkServerIdentity: () => undefined,
          })
        : grpcChannelCredentials({
            ...(options.svid === undefined ? {} : { svid: options.svid }),
            bundles:
              options.bundleSource ?? new X509BundleSet(options.bundle === undefined ? [] : [options.bundle]),
            authorizer: authorizeId(`${options.trustDomain.idString()}/tessera/server`),
          });
    this.#typed = new ServiceClient(Agent, options.address, credentials, {
      'grpc.ssl_target_name_override': 'tessera-server',
      // A server whose host vanished closes nothing: a ping unanswered for 10 s (sent after 30 s
      // of silence, while a call such as the push stream is open) ends the connection, so the
      // agent fails over instead of waiting on a dead stream. grpc-js servers accept such pings.
      'grpc.keepalive_time_ms': 30_000,
      'grpc.keepalive_timeout_ms': 10_000,
    });
  }

  /**
   * Node attestation: sends the evidence and the CSR, answers each challenge with `respond`, and
   * resolves with the agent's SVID chain (DER), ID, selectors and the bundle.
   */
  attest(
    params: { type: string; payload: Uint8Array; csr: Uint8Array },
    respond: (challenge: Uint8Array) => Uint8Array | Promise<Uint8Array> = () => {
      throw new Error('attest: the server sent a challenge but this attestor cannot answer one');
    },
  ): Promise<AttestResult> {
    return new Promise((resolve, reject) => {
      const call = this.#typed.bidiStream(Agent.method.attest);
      let result: AttestResult | undefined;
      call.on('data', (res: { step: { case: string | undefined; value?: unknown } }) => {
        if (res.step.case === 'challenge') {
          Promise.resolve()
            .then(() => respond(res.step.value as Uint8Array))
            .then((value) =>
              call.write(create(AttestRequestSchema, { step: { case: 'challengeResponse', value } })),
            )
            .catch((err: unknown) => {
              call.cancel();
              reject(err);
            });
        } else if (res.step.case === 'result') {
          result = res.step.value as AttestResult;
        }
      });
      call.on('error', reject);
      call.on('end', () => {
        if (result !== undefined) resolve(result);
        else reject(new Error('attest: the server closed the stream without a result'));
      });
      call.write(create(AttestRequestSchema, { step: { case: 'params', value: params } }));
    });
  }

  async renewAgent(csr: Uint8Array): Promise<Uint8Array[]> {
    return (await this.#typed.unary(Agent.method.renewAgent, { csr })).svidChain;
  }

  batchNewX509Svid(params: { entryId: string; csr: Uint8Array }[]): Promise<BatchNewX509SVIDResponse> {
    return this.#typed.unary(Agent.method.batchNewX509SVID, { params });
  }

  newJwtSvid(entryId: string, audience: string[]): Promise<NewJWTSVIDResponse> {
    return this.#typed.unary(Agent.method.newJWTSVID, { entryId, audience });
  }

  getBundle(): Promise<GetBundleResponse> {
    return this.#typed.unary(Agent.method.getBundle, {});
  }

  /** The push stream: 'data' events are SyncResponse messages. */
  sync(): grpc.ClientReadableStream<SyncResponse> {
    return this.#typed.serverStream(Agent.method.sync, {});
  }

  close(): void {
    this.#typed.close();
  }
}
