// The node attestors a server can enable, each one file behind the NodeAttestor interface. An
// attestor added here gets its server.yaml section (node_attestors.<name>, enabled when present),
// its place in `tessera server validate` and its start-up checks, with nothing else to change.
// join_token and x509pop predate this list and keep their own keys (run.ts).
import type { TrustDomain } from '@tessera/spiffe';
import type { Field } from '../../common/config-schema.js';
import type { DaemonLogger } from '../../common/log.js';
import type { Datastore } from '../datastore/types.js';
import { awsIidServerPlugin } from './aws-iid.js';
import { jwtNodeAttestorPlugin } from './jwt.js';
import { k8sPsatNodeAttestorPlugin } from './k8s-psat.js';
import { tpmNodeAttestor } from './tpm/tpm.js';
import type { NodeAttestor } from './types.js';

/** What an attestor is given when the server starts. */
export interface NodeAttestorContext {
  readonly trustDomain: TrustDomain;
  readonly datastore: Datastore;
  readonly logger: DaemonLogger;
  readonly now: () => Date;
}

export interface NodeAttestorPlugin {
  /** The key under node_attestors in server.yaml, and the attestor's type on the wire. */
  readonly name: string;
  /** Its section of server.yaml (validated before `create` sees it). */
  readonly config: Field & { kind: 'object' };
  /**
   * Builds the attestor from its validated section. A problem found only now (an unreadable file, a
   * JWKS that cannot be fetched) is thrown as an Error whose message names the key and the input;
   * the server reports it as a start-up error.
   */
  create(config: unknown, ctx: NodeAttestorContext): NodeAttestor | Promise<NodeAttestor>;
}

/** Every attestor of this list whose section is present in server.yaml is enabled. */
export const NODE_ATTESTOR_PLUGINS: readonly NodeAttestorPlugin[] = [
  awsIidServerPlugin,
  tpmNodeAttestor,
  jwtNodeAttestorPlugin,
  k8sPsatNodeAttestorPlugin,
];

/** The node_attestors fields the plugins add to server.yaml's schema (each section optional). */
export function pluginConfigFields(): Record<string, Field> {
  return Object.fromEntries(NODE_ATTESTOR_PLUGINS.map((p) => [p.name, { ...p.config, optional: true }]));
}
