// `workers: N`: one proxy process uses one core, so the primary forks N workers (node:cluster), each
// a whole proxy with its own Workload API connection, policies and listeners; the listening sockets
// are shared and connections spread among them. The primary serves /live, /ready (every worker up
// and holding an identity) and /metrics (every worker's, with a `worker` label), and replaces a
// worker that dies, with back-off.
import cluster, { type Worker } from 'node:cluster';
import { startHealthServer, startupError } from '../common/daemon.js';
import type { DaemonLogger } from '../common/log.js';
import { Metrics } from '../common/metrics.js';
import type { ProxyConfig } from './config.js';
import { type RunningProxy, startProxy } from './run.js';

/** Worker → primary. */
type FromWorker =
  | { type: 'ready' }
  | { type: 'identity'; has: boolean }
  | { type: 'metrics'; id: number; text: string };
/** Primary → worker. */
type ToWorker = { type: 'metrics'; id: number };

const METRICS_TIMEOUT_MS = 2_000;
const RESTART_MIN_MS = 500;
const RESTART_MAX_MS = 30_000;

export function isProxyWorker(): boolean {
  return cluster.isWorker;
}

/** In a worker: run the proxy without a health server, report to the primary. */
export async function runProxyWorker(config: ProxyConfig, log: DaemonLogger): Promise<RunningProxy> {
  const send = (m: FromWorker) => process.send?.(m);
  const proxy = await startProxy(config, {
    logger: log.with({ worker: cluster.worker?.id }),
    serveHealth: false,
    onIdentityChange: (has) => send({ type: 'identity', has }),
  });
  process.on('message', (m: ToWorker) => {
    if (m?.type === 'metrics')
      void proxy.metrics.render().then((text) => send({ type: 'metrics', id: m.id, text }));
  });
  send({ type: 'ready' });
  return {
    ...proxy,
    // The IPC channel keeps a worker alive: after the proxy stops, let go of the primary too.
    async stop() {
      await proxy.stop();
      cluster.worker?.disconnect();
    },
  };
}

/**
 * Prometheus text from several workers as one exposition: each family's HELP and TYPE once, its
 * samples from every worker with a `worker` label.
 */
export function mergeMetrics(byWorker: ReadonlyMap<number, string>): string {
  const families = new Map<string, { head: string[]; samples: string[] }>();
  for (const [worker, text] of byWorker) {
    for (const line of text.split('\n')) {
      if (line === '') continue;
      const meta = /^# (HELP|TYPE) (\S+)/.exec(line);
      const name = meta?.[2] ?? /^[a-zA-Z_:][a-zA-Z0-9_:]*/.exec(line)?.[0];
      if (name === undefined) continue;
      let f = families.get(name);
      if (f === undefined) {
        f = { head: [], samples: [] };
        families.set(name, f);
      }
      if (meta !== null) {
        if (f.head.length < 2 && !f.head.some((h) => h.startsWith(`# ${meta[1]} `))) f.head.push(line);
        continue;
      }
      const rest = line.slice(name.length);
      f.samples.push(
        rest.startsWith('{')
          ? `${name}{worker="${worker}",${rest.slice(1)}`
          : `${name}{worker="${worker}"}${rest}`,
      );
    }
  }
  return [...families.values()]
    .flatMap((f) => [...f.head, ...f.samples])
    .join('\n')
    .concat('\n');
}

export interface RunningPrimary {
  readonly healthPort: number;
  stop(): Promise<void>;
}

/** In the primary: fork the workers, wait until each is ready, serve health, replace the dead. */
export async function runProxyPrimary(config: ProxyConfig, log: DaemonLogger): Promise<RunningPrimary> {
  const metrics = new Metrics();
  const state = new Map<number, { worker: Worker; ready: boolean; identity: boolean }>();
  let stopping = false;
  let restartDelay = RESTART_MIN_MS;
  let nextRequest = 0;
  const pending = new Map<number, { worker: number; resolve: (text: string) => void }>();

  const fork = (): Worker => {
    const worker = cluster.fork();
    state.set(worker.id, { worker, ready: false, identity: false });
    worker.on('message', (m: FromWorker) => {
      const s = state.get(worker.id);
      if (s === undefined) return;
      if (m.type === 'ready') {
        s.ready = true;
        s.identity = true;
        log.info('proxy worker ready', { worker: worker.id, pid: worker.process.pid });
      } else if (m.type === 'identity') {
        s.identity = m.has;
      } else if (m.type === 'metrics') {
        pending.get(m.id)?.resolve(m.text);
        pending.delete(m.id);
      }
    });
    return worker;
  };

  // Start: every worker must come up; the first that dies before it is ready fails the start (its
  // own error is on stderr, which workers share with the primary).
  await new Promise<void>((resolve, reject) => {
    let ready = 0;
    const onReady = (m: FromWorker) => {
      if (m.type === 'ready' && ++ready === config.workers) {
        cluster.off('exit', onEarlyExit);
        resolve();
      }
    };
    const onEarlyExit = (worker: Worker, code: number | null, signal: string | null) => {
      cluster.off('exit', onEarlyExit);
      stopping = true;
      for (const { worker: w } of state.values()) w.process.kill('SIGTERM');
      reject(
        startupError(
          'proxy',
          `worker ${worker.id} exited (${signal ?? code}) before it was ready; its error is above`,
        ),
      );
    };
    cluster.on('exit', onEarlyExit);
    for (let i = 0; i < config.workers; i++) fork().on('message', onReady);
  });

  cluster.on('exit', (worker, code, signal) => {
    state.delete(worker.id);
    for (const [id, p] of pending) {
      if (p.worker === worker.id) {
        p.resolve('');
        pending.delete(id);
      }
    }
    if (stopping) return;
    metrics.inc('tessera_proxy_worker_restarts_total', 'Proxy workers replaced after they died.');
    log.error('proxy worker died; starting another', {
      worker: worker.id,
      pid: worker.process.pid,
      exit: signal ?? code,
      in_ms: restartDelay,
    });
    const delay = restartDelay;
    restartDelay = Math.min(restartDelay * 2, RESTART_MAX_MS);
    setTimeout(() => {
      if (stopping) return;
      fork().once('message', (m: FromWorker) => {
        if (m.type === 'ready') restartDelay = RESTART_MIN_MS;
      });
    }, delay).unref();
  });

  const gather = async (): Promise<string> => {
    const texts = new Map<number, string>();
    await Promise.all(
      [...state.values()]
        .filter((s) => s.ready)
        .map(
          ({ worker }) =>
            new Promise<void>((resolve) => {
              const id = nextRequest++;
              const timer = setTimeout(() => {
                pending.delete(id);
                resolve();
              }, METRICS_TIMEOUT_MS);
              pending.set(id, {
                worker: worker.id,
                resolve: (text) => {
                  clearTimeout(timer);
                  if (text !== '') texts.set(worker.id, text);
                  resolve();
                },
              });
              worker.send({ type: 'metrics', id } satisfies ToWorker);
            }),
        ),
    );
    metrics.set(
      'tessera_proxy_workers',
      'Proxy worker processes ready.',
      [...state.values()].filter((s) => s.ready).length,
    );
    return (await metrics.render()) + mergeMetrics(texts);
  };
  const health = await startHealthServer({
    role: 'proxy',
    address: config.health.address,
    port: config.health.port,
    metrics: { render: gather },
    ready: () => {
      const all = [...state.values()];
      return all.length === config.workers && all.every((s) => s.ready && s.identity);
    },
  });
  log.info('proxy ready', { workers: config.workers, health_port: health.port });
  return {
    healthPort: health.port,
    async stop() {
      stopping = true;
      const exits = [...state.values()].map(
        ({ worker }) =>
          new Promise<void>((resolve) =>
            worker.isDead() ? resolve() : worker.once('exit', () => resolve()),
          ),
      );
      for (const { worker } of state.values()) worker.process.kill('SIGTERM');
      await Promise.all(exits);
      await health.close();
    },
  };
}
