// The `docker` workload attestor: the container the caller's process is in (container-id.ts), then
// what the container engine says of it over its Unix socket (Docker Engine API, GET
// /containers/<id>/json; Podman's Docker-compatible API when configured), with SPIRE's selector
// names: docker:label:<key>:<value>, docker:env:<NAME>=<value>, docker:image_id:<image as the
// container was created with>, docker:image_config_digest:<sha256 image ID>.
import http from 'node:http';
import { formatDuration } from '../../common/duration.js';
import type { PeerCredentials } from '../../common/peercred.js';
import type { Selector } from '../../server/datastore/types.js';
import { type ContainerRef, findContainer } from './container-id.js';
import { lookupTimeout, refusal } from './lookup.js';
import type { WorkloadAttestor } from './types.js';

/** The keys of the selectors this attestor yields: `docker:<key>:<value>`. */
export const DOCKER_SELECTOR_KEYS = ['label', 'env', 'image_id', 'image_config_digest'] as const;

export const DEFAULT_DOCKER_SOCKET = '/var/run/docker.sock';

/** The socket path of `unix:///var/run/docker.sock` (SPIRE's form) or `/var/run/docker.sock`. */
export function dockerSocketPath(value: string): string | undefined {
  const path = value.startsWith('unix://') ? value.slice('unix://'.length) : value;
  return path.startsWith('/') ? path : undefined;
}

export interface DockerWorkloadAttestorOptions {
  /** The Docker Engine API socket. Default /var/run/docker.sock. */
  socketPath?: string;
  /** Podman's API socket, asked about containers whose cgroup says libpod. Unset: podman containers get no docker selectors. */
  podmanSocketPath?: string;
  /** How long one caller's lookup may take. Default 3 s. */
  timeoutMs?: number;
  /** Where "no docker selectors, because…" is said (debug). */
  logger?: { debug(msg: string, fields?: Record<string, unknown>): void };
  /** The container of a pid; tests replace it. Default: from /proc (findContainer). */
  findContainer?: (pid: number) => Promise<ContainerRef | undefined>;
}

/** What the engine says of a container: the fields read, as the Engine API names them. */
interface ContainerJson {
  Id?: unknown;
  Image?: unknown;
  State?: { Running?: unknown; Status?: unknown };
  Config?: { Labels?: unknown; Env?: unknown; Image?: unknown };
}

/** The largest answer read from the engine. */
const MAX_BODY = 8 << 20;

type Answer = { status: number; body: string };

function get(socketPath: string, path: string, signal: AbortSignal): Promise<Answer> {
  return new Promise<Answer>((resolve, reject) => {
    const req = http.get(
      { socketPath, path, headers: { host: 'docker', accept: 'application/json' }, signal },
      (res) => {
        const chunks: Buffer[] = [];
        let size = 0;
        res.on('data', (c: Buffer) => {
          size += c.length;
          if (size > MAX_BODY) {
            req.destroy(Object.assign(new Error(`answered more than ${MAX_BODY} bytes`), { tooLarge: true }));
            return;
          }
          chunks.push(c);
        });
        res.on('end', () =>
          resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString('utf8') }),
        );
        res.on('error', reject);
      },
    );
    req.on('error', reject);
  });
}

const isStringRecord = (v: unknown): v is Record<string, string> =>
  typeof v === 'object' &&
  v !== null &&
  !Array.isArray(v) &&
  Object.values(v).every((x) => typeof x === 'string');

export class DockerWorkloadAttestor implements WorkloadAttestor {
  readonly type = 'docker';
  readonly #socket: string;
  readonly #podman: string | undefined;
  readonly #timeoutMs: number;
  readonly #logger: DockerWorkloadAttestorOptions['logger'];
  readonly #find: (pid: number) => Promise<ContainerRef | undefined>;

  constructor(opts: DockerWorkloadAttestorOptions = {}) {
    this.#socket = opts.socketPath ?? DEFAULT_DOCKER_SOCKET;
    this.#podman = opts.podmanSocketPath;
    this.#timeoutMs = opts.timeoutMs ?? 3000;
    this.#logger = opts.logger;
    this.#find = opts.findContainer ?? findContainer;
  }

  /**
   * No selectors for a process in no container, or in one this attestor does not ask about (a
   * podman container without podman_socket_path; a containerd or CRI-O container the engine does
   * not know). Throws when the engine cannot be asked or answers badly, when it does not know a
   * container whose cgroup says docker, when the container is not running, or on timeout.
   */
  async attest(caller: PeerCredentials): Promise<Selector[]> {
    let container: ContainerRef | undefined;
    try {
      container = await this.#find(caller.pid);
    } catch (err) {
      throw refusal(`workload attestation: docker: process ${caller.pid}: ${(err as Error).message}`, {
        cause: err,
      });
    }
    if (container === undefined) return [];
    const c = container;
    const none = (why: string) => {
      this.#logger?.debug('docker: no docker selectors', { pid: caller.pid, container: c.id, why });
      return [];
    };
    let socket = this.#socket;
    let engine = 'docker daemon';
    let key = 'docker_socket_path';
    if (c.runtime === 'podman') {
      if (this.#podman === undefined)
        return none(
          'its cgroup says podman (libpod) and workload_attestors.docker.podman_socket_path is not set',
        );
      socket = this.#podman;
      engine = 'podman service';
      key = 'podman_socket_path';
    }
    const about = `process ${caller.pid} is in container ${c.id} (${c.source})`;
    return lookupTimeout(
      this.#timeoutMs,
      `workload attestation: docker: ${about}; the ${engine} at ${socket} did not answer within ${formatDuration(this.#timeoutMs)} (raise workload_attestors.docker.timeout if it is only slow)`,
      async (signal) => {
        let answer: Answer;
        try {
          answer = await get(socket, `/containers/${c.id}/json`, signal);
        } catch (err) {
          if (signal.aborted) throw signal.reason;
          if ((err as { tooLarge?: boolean }).tooLarge === true)
            throw refusal(
              `workload attestation: docker: ${about}; the ${engine} at ${socket} ${(err as Error).message}`,
            );
          const code = (err as NodeJS.ErrnoException).code;
          throw refusal(
            `workload attestation: docker: ${about}; cannot reach the ${engine} at ${socket}: ${code ?? (err as Error).message}; is it running, and is workload_attestors.docker.${key} its socket?`,
            { cause: err },
          );
        }
        if (answer.status === 404) {
          if (c.runtime === 'docker' || c.runtime === 'podman')
            throw refusal(
              `workload attestation: docker: ${about}, which the ${engine} at ${socket} does not know; is workload_attestors.docker.${key} the socket of the engine that runs it?`,
            );
          return none(`the ${engine} at ${socket} does not know it (a ${c.runtime} container, not docker's)`);
        }
        let json: ContainerJson;
        try {
          if (answer.status !== 200) throw new Error(`HTTP ${answer.status}`);
          json = JSON.parse(answer.body) as ContainerJson;
        } catch (err) {
          const said = /"message"\s*:\s*"([^"]{0,200})/.exec(answer.body)?.[1];
          throw refusal(
            `workload attestation: docker: ${about}; the ${engine} at ${socket} answered ${answer.status === 200 ? 'with malformed JSON' : `HTTP ${answer.status}`}${said === undefined ? '' : `: ${said}`}`,
            { cause: err },
          );
        }
        return selectorsOf(json, c.id, `${about}; the ${engine} at ${socket}`);
      },
    );
  }
}

/** The selectors of an inspected container; throws on an answer that is not about `id` or not running. */
export function selectorsOf(json: ContainerJson, id: string, where: string): Selector[] {
  const fail = (what: string) => refusal(`workload attestation: docker: ${where} ${what}`);
  if (json.Id !== id) throw fail(`answered about container ${JSON.stringify(json.Id)} instead`);
  if (json.State?.Running !== true)
    throw fail(`says the container is not running (state ${JSON.stringify(json.State?.Status ?? null)})`);
  const cfg = json.Config ?? {};
  const labels = cfg.Labels ?? {};
  const env = cfg.Env ?? [];
  if (!isStringRecord(labels)) throw fail('answered labels that are not strings');
  if (!Array.isArray(env) || !env.every((e): e is string => typeof e === 'string'))
    throw fail('answered an environment that is not a list of strings');
  const out: Selector[] = [];
  const sel = (value: string) => out.push({ type: 'docker', value });
  for (const k of Object.keys(labels).sort()) sel(`label:${k}:${labels[k]}`);
  for (const e of env) sel(`env:${e}`);
  if (typeof cfg.Image === 'string' && cfg.Image !== '') sel(`image_id:${cfg.Image}`);
  // The ID of the image the container runs (a config digest), not of whatever its name means now.
  if (typeof json.Image === 'string') {
    const digest = /^[0-9a-f]{64}$/.test(json.Image) ? `sha256:${json.Image}` : json.Image;
    if (/^sha256:[0-9a-f]{64}$/.test(digest)) sel(`image_config_digest:${digest}`);
  }
  return out;
}
