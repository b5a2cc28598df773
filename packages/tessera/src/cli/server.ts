import { parseArgs } from 'node:util';
import { ConfigError } from '../common/config-schema.js';
import { formatDuration } from '../common/duration.js';
import { loadServerConfig } from '../server/config.js';
import type { Io } from './main.js';

const USAGE = `usage: tessera server validate --config <server.yaml>

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
  io.err(sub === undefined ? USAGE : `tessera server: unknown command "${sub}"\n\n${USAGE}`);
  return 2;
}
