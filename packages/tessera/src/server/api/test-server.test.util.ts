// A server started in-process exactly as `tessera server run` starts it, for tests: every port
// chosen by the kernel (unless a fixed agent API port is given, to restart on it), every path in
// `dir`, logs discarded; trust domain example.org unless told. `extra` lines are appended to the YAML.
import { createLogger } from '../../common/log.js';
import { parseServerConfig } from '../config.js';
import type { FederationTiming } from '../federation/federation.js';
import { type RunningServer, startServer } from '../run.js';

export function startTestServer(
  dir: string,
  extra: readonly string[] = [],
  agentApiPort = 0,
  trustDomain = 'example.org',
  federationTiming?: Partial<FederationTiming>,
): Promise<RunningServer> {
  const config = parseServerConfig(
    [
      `trust_domain: ${trustDomain}`,
      `data_dir: ${dir}/data`,
      `agent_api: { address: 127.0.0.1, port: ${agentApiPort} }`,
      'health: { port: 0 }',
      `admin_socket: ${dir}/admin.sock`,
      ...extra,
    ].join('\n'),
  );
  return startServer(config, {
    logger: createLogger({ level: 'error', write: () => undefined }),
    ...(federationTiming === undefined ? {} : { federationTiming }),
  });
}
