// The workload attestors the agent runs, built from `workload_attestors` in agent.yaml, and the
// selector keys each yields (which the server's entry checks use).
import { parseDbusAddress } from './dbus.js';
import { DOCKER_SELECTOR_KEYS, DockerWorkloadAttestor, dockerSocketPath } from './docker.js';
import { SYSTEMD_SELECTOR_KEYS, SystemdWorkloadAttestor } from './systemd.js';
import type { WorkloadAttestor } from './types.js';
import { UNIX_SELECTOR_KEYS, UnixWorkloadAttestor } from './unix.js';

/** `workload_attestors` after validation; durations in milliseconds. */
export interface WorkloadAttestorsConfig {
  readonly unix: { readonly sha256: boolean };
  readonly systemd?: { readonly bus_address: string; readonly timeout: number };
  readonly docker?: {
    readonly docker_socket_path: string;
    readonly podman_socket_path?: string;
    readonly timeout: number;
  };
}

/** Selector type → the keys its attestor yields (`type:key:value`). */
export const WORKLOAD_SELECTOR_KEYS: Readonly<Record<string, readonly string[]>> = {
  unix: UNIX_SELECTOR_KEYS,
  systemd: SYSTEMD_SELECTOR_KEYS,
  docker: DOCKER_SELECTOR_KEYS,
};

export const dbusAddressProblem = (v: string): string | undefined => {
  const parsed = parseDbusAddress(v);
  return 'why' in parsed ? parsed.why : undefined;
};

export const unixSocketProblem = (v: string): string | undefined =>
  dockerSocketPath(v) === undefined
    ? `must be a Unix socket: unix:///path or an absolute path; got ${JSON.stringify(v)}`
    : undefined;

export interface WorkloadAttestors {
  readonly attestors: readonly WorkloadAttestor[];
  /** Closes what the attestors hold open (the D-Bus connection). */
  close(): void;
}

export function createWorkloadAttestors(
  config: WorkloadAttestorsConfig,
  logger: { debug(msg: string, fields?: Record<string, unknown>): void },
): WorkloadAttestors {
  const attestors: WorkloadAttestor[] = [new UnixWorkloadAttestor({ sha256: config.unix.sha256 })];
  const systemd =
    config.systemd === undefined
      ? undefined
      : new SystemdWorkloadAttestor({
          busAddress: config.systemd.bus_address,
          timeoutMs: config.systemd.timeout,
        });
  if (systemd !== undefined) attestors.push(systemd);
  if (config.docker !== undefined) {
    const d = config.docker;
    attestors.push(
      new DockerWorkloadAttestor({
        socketPath: dockerSocketPath(d.docker_socket_path) as string,
        ...(d.podman_socket_path === undefined
          ? {}
          : { podmanSocketPath: dockerSocketPath(d.podman_socket_path) as string }),
        timeoutMs: d.timeout,
        logger,
      }),
    );
  }
  return { attestors, close: () => systemd?.close() };
}
