// What the server and the agent do alike as daemons: one process per data directory, and the
// health/metrics HTTP endpoint. Every failure is one ERR_STARTUP an operator can act on.
import { closeSync, mkdirSync, openSync, readFileSync, rmSync, writeSync } from 'node:fs';
import { createServer } from 'node:http';
import { join } from 'node:path';
import { TesseraError, TesseraErrorCode } from './errors.js';
import type { Metrics } from './metrics.js';

export type Role = 'server' | 'agent' | 'proxy' | 'helper';

export function startupError(role: Role, message: string, cause?: unknown): TesseraError {
  return new TesseraError(
    TesseraErrorCode.STARTUP,
    `${role}: ${message}`,
    cause === undefined ? undefined : { cause },
  );
}

/** Creates the data directory (0700) when missing. */
export function makeDataDir(role: Role, dir: string): void {
  try {
    mkdirSync(dir, { recursive: true, mode: 0o700 });
  } catch (err) {
    throw startupError(role, `cannot create the data directory ${dir}: ${(err as Error).message}`, err);
  }
}

/** One daemon per data directory: a lock file holding the owner's pid; a stale lock is taken over. */
export function lockDataDir(role: Role, dir: string): () => void {
  const path = join(dir, `${role}.lock`);
  for (let attempt = 0; attempt < 2; attempt++) {
    try {
      const fd = openSync(path, 'wx', 0o600);
      writeSync(fd, String(process.pid));
      closeSync(fd);
      return () => rmSync(path, { force: true });
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST')
        throw startupError(role, `cannot create ${path}: ${(err as Error).message}`, err);
      const pid = Number(readFileSync(path, 'utf8').trim());
      let alive = false;
      try {
        process.kill(pid, 0);
        alive = Number.isInteger(pid) && pid > 0;
      } catch (e) {
        alive = (e as NodeJS.ErrnoException).code === 'EPERM';
      }
      if (alive)
        throw startupError(
          role,
          `another tessera ${role} (pid ${pid}) is already using the data directory ${dir}; stop it first`,
        );
      rmSync(path, { force: true }); // stale: its process is gone
    }
  }
  throw startupError(role, `cannot lock the data directory ${dir}`);
}

/**
 * GET /live (503 when `live()` says so), /ready (503 until `ready()`), /metrics; the first two at
 * other paths when `paths` says (spiffe-helper's liveness_path, readiness_path). Resolves with the
 * bound port and a closer.
 */
export async function startHealthServer(o: {
  role: Role;
  address: string;
  port: number;
  metrics: Pick<Metrics, 'render'>;
  ready: () => boolean;
  live?: () => boolean;
  paths?: { live: string; ready: string };
}): Promise<{ port: number; close(): Promise<void> }> {
  const livePath = o.paths?.live ?? '/live';
  const readyPath = o.paths?.ready ?? '/ready';
  const health = createServer((req, res) => {
    if (req.url === '/metrics') {
      o.metrics
        .render()
        .then((text) => res.writeHead(200, { 'content-type': 'text/plain; version=0.0.4' }).end(text))
        .catch((err: unknown) => res.writeHead(500).end(`metrics unavailable: ${(err as Error).message}\n`));
    } else if (req.url === livePath) {
      const live = o.live?.() ?? true;
      res.writeHead(live ? 200 : 503).end(live ? 'ok\n' : 'not live\n');
    } else if (req.url === readyPath) {
      const ready = o.ready();
      res.writeHead(ready ? 200 : 503).end(ready ? 'ready\n' : 'not ready\n');
    } else {
      res.writeHead(404).end('not found\n');
    }
  });
  const port = await new Promise<number>((resolve, reject) => {
    health.once('error', (err: NodeJS.ErrnoException) =>
      reject(
        startupError(
          o.role,
          err.code === 'EADDRINUSE'
            ? `the health port ${o.address}:${o.port} is already in use; choose another in the configuration`
            : `the health endpoint cannot listen on ${o.address}:${o.port}: ${err.message}`,
          err,
        ),
      ),
    );
    health.listen(o.port, o.address, () => {
      const a = health.address();
      resolve(typeof a === 'object' && a !== null ? a.port : o.port);
    });
  });
  return { port, close: () => new Promise<void>((r) => health.close(() => r())) };
}
