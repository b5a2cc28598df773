// An HTTPS server whose certificate and key come from files (SPIRE's `serving_cert_file`): read at
// start, re-read every file_sync_interval so a renewed certificate is served without a restart (a
// failed re-read keeps the previous pair). Shared by the bundle endpoint's https_web profile and the
// OIDC discovery endpoint; every problem names the configuration section it came from.
import { readFileSync } from 'node:fs';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { createServer, type Server } from 'node:https';
import type { Server as NetServer } from 'node:net';
import type { SecureContextOptions } from 'node:tls';
import { TesseraError, TesseraErrorCode } from '../common/errors.js';
import type { DaemonLogger } from '../common/log.js';

export interface ServingCertFile {
  readonly certFile: string;
  readonly keyFile: string;
  /** Milliseconds between re-reads of the files. */
  readonly fileSyncIntervalMs: number;
}

const errnoText = (err: unknown) => (err as NodeJS.ErrnoException).code ?? (err as Error).message;

/** The certificate and key of `files`; each problem names `section` and the file. */
export function readServingCertFile(section: string, files: ServingCertFile): SecureContextOptions {
  const read = (file: string, what: string) => {
    try {
      return readFileSync(file, 'utf8');
    } catch (err) {
      throw new TesseraError(
        TesseraErrorCode.STARTUP,
        `${section}: cannot read the serving ${what} ${file}: ${errnoText(err)}`,
        { cause: err },
      );
    }
  };
  return { cert: read(files.certFile, 'certificate'), key: read(files.keyFile, 'key') };
}

/**
 * An HTTPS server (TLS 1.2+; Node's default suites are forward-secret AEAD, Mozilla "intermediate")
 * presenting `context`. An unusable certificate or key is an ERR_STARTUP naming `section`.
 */
export function createHttpsServer(
  section: string,
  context: SecureContextOptions,
  handler: (req: IncomingMessage, res: ServerResponse) => void,
): Server {
  try {
    return createServer({ ...context, minVersion: 'TLSv1.2' }, handler);
  } catch (err) {
    throw new TesseraError(
      TesseraErrorCode.STARTUP,
      `${section}: the serving certificate or key is unusable: ${(err as Error).message}`,
      { cause: err },
    );
  }
}

/**
 * An HTTPS server presenting the pair in `files`, re-read every `fileSyncIntervalMs`. Returns the
 * server and a function that stops the re-reads.
 */
export function createServingCertFileServer(
  section: string,
  files: ServingCertFile,
  handler: (req: IncomingMessage, res: ServerResponse) => void,
  logger: DaemonLogger,
): { server: Server; stop: () => void } {
  const server = createHttpsServer(section, readServingCertFile(section, files), handler);
  const timer = setInterval(() => {
    try {
      server.setSecureContext(readServingCertFile(section, files));
    } catch (err) {
      logger.error(`${section}: re-reading the serving certificate failed; the previous one stays in use`, {
        cert_file: files.certFile,
        key_file: files.keyFile,
        error: (err as Error).message,
      });
    }
  }, files.fileSyncIntervalMs);
  timer.unref();
  return { server, stop: () => clearInterval(timer) };
}

/** Listens on `address:port` (or a Unix socket `path`); a failure is an ERR_STARTUP naming `section`. */
export async function listenOrFail(
  server: NetServer,
  section: string,
  where: { address: string; port: number } | { path: string },
): Promise<void> {
  try {
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      const done = () => {
        server.off('error', reject);
        resolve();
      };
      if ('path' in where) server.listen(where.path, done);
      else server.listen(where.port, where.address, done);
    });
  } catch (err) {
    const at = 'path' in where ? where.path : `${where.address}:${where.port}`;
    throw new TesseraError(
      TesseraErrorCode.STARTUP,
      `${section}: cannot listen on ${at}: ${errnoText(err)}`,
      {
        cause: err,
      },
    );
  }
}
