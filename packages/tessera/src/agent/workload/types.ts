import type { PeerCredentials } from '../../common/peercred.js';
import type { Selector } from '../../server/datastore/types.js';

/**
 * A workload attestor: what is known about the process behind a connection, from the kernel
 * (never from what the process says). Pluggable like the server's node attestors, one file each.
 */
export interface WorkloadAttestor {
  readonly type: string;
  attest(caller: PeerCredentials): Promise<Selector[]>;
}
