import { parseArgs } from 'node:util';
import { ConfigError } from '../common/config-schema.js';
import { formatDuration } from '../common/duration.js';
import { isTesseraError } from '../common/errors.js';
import { loadServerConfig } from '../server/config.js';
import type { RunningServer } from '../server/run.js';
import type { Io } from './main.js';

const USAGE = `usage: tessera server run|validate --config <server.yaml>

  run        start the identity authority
  validate   check a configuration file without starting the server`;

/** `tessera server …` */
export async function serverCommand(args: string[], io: Io): Promise<number> {
  const [sub, ...rest] = args;
  if (sub === 'validate') {
    const { values } = parseArgs({
      args: rest,
      options: { config: { type: 'string', short: 'c' } },
      strict: true,
    });
    if (values.config === undefined) {
      io.err('tessera server validate: --config <file> is required');
      return 2;
    }
    try {
      const c = loadServerConfig(values.config);
      io.out(
        `${values.config}: configuration OK (trust domain ${c.trust_domain}, datastore ${Object.keys(c.datastore)[0]}, ` +
          `CA ${c.ca.key_type} ${formatDuration(c.ca.ttl)}, X509-SVID ${formatDuration(c.x509_svid_ttl)}, JWT-SVID ${formatDuration(c.jwt_svid_ttl)})`,
      );
      return 0;
    } catch (err) {
      if (err instanceof ConfigError) {
        io.err(err.message);
        return 1;
      }
      throw err;
    }
  }
  if (sub === 'run') {
    const { values } = parseArgs({
      args: rest,
      options: { config: { type: 'string', short: 'c' } },
      strict: true,
    });
    if (values.config === undefined) {
      io.err('tessera server run: --config <file> is required');
      return 2;
    }
    let config: ReturnType<typeof loadServerConfig>;
    try {
      config = loadServerConfig(values.config);
    } catch (err) {
      if (err instanceof ConfigError) {
        io.err(err.message);
        return 1;
      }
      throw err;
    }
    let server: RunningServer;
    try {
      // The server's code is loaded only to run it (validate needs the configuration alone).
      const { startServer } = await import('../server/run.js');
      server = await startServer(config);
    } catch (err) {
      if (isTesseraError(err)) {
        io.err(`tessera server: ${err.message}`);
        return 1;
      }
      throw err;
    }
    await new Promise<void>((resolve) => {
      const done = () => resolve();
      process.once('SIGTERM', done);
      process.once('SIGINT', done);
    });
    await server.stop();
    return 0;
  }
  io.err(sub === undefined ? USAGE : `tessera server: unknown command "${sub}"\n\n${USAGE}`);
  return 2;
}
