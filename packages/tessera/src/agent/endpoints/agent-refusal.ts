// What a workload is told, on the Workload API and on SDS, while the server will not deal with this
// agent: not "no identity issued" (which sends an operator to register an entry that would not
// help), but that the agent itself was banned, evicted or refused, and what to do about it.
import * as grpc from '@grpc/grpc-js';
import type { AgentRefusal } from '../manager.js';

/** The status for every call while `refusal` holds; undefined when there is none. */
export function refusalStatus(manager: {
  readonly id: string;
  readonly refusal: AgentRefusal | undefined;
}): { code: grpc.status; details: string } | undefined {
  const r = manager.refusal;
  if (r === undefined) return undefined;
  const id = manager.id;
  switch (r.kind) {
    case 'banned':
      return {
        code: grpc.status.PERMISSION_DENIED,
        details: `the server banned this agent (${id}): it serves no identity to any workload until an operator evicts it (tessera agent evict --spiffe-id ${id}) and it attests again`,
      };
    case 'evicted':
      return {
        code: grpc.status.UNAVAILABLE,
        details: `the server evicted this agent (${id}); it is attesting again: retry`,
      };
    case 'untrusted':
      return {
        code: grpc.status.UNAVAILABLE,
        details: `the server no longer trusts this agent's SVID (${id}: its CA was revoked, or it expired); it is attesting again: retry`,
      };
    case 'refused':
      return {
        code: grpc.status.PERMISSION_DENIED,
        details: `the server refused this agent (${id}): ${r.reason}; it serves no identity to any workload until it attests again`,
      };
  }
}
