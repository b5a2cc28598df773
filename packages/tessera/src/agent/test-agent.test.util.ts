// An agent started in-process exactly as `tessera agent run` starts it, for tests and benchmarks:
// attached to a test server on 127.0.0.1 with insecure_bootstrap (a lab), its socket and data in
// `dir` (the socket at `options.socketPath` when given, e.g. where istio-agent looks for it). The
// join token must exist in the server's datastore.
import type { DaemonLogger } from '../common/log.js';
import type { RunningServer } from '../server/run.js';
import { parseAgentConfig } from './config.js';
import { type RunningAgent, startAgent } from './run.js';

export function startTestAgent(
  server: RunningServer,
  dir: string,
  joinToken: string,
  logger: DaemonLogger,
  options: {
    socketPath?: string /** More lines of agent.yaml (e.g. workload_attestors). */;
    config?: readonly string[];
  } = {},
): Promise<RunningAgent> {
  return startAgent(
    parseAgentConfig(
      [
        `trust_domain: ${server.trustDomain}`,
        'server_address: 127.0.0.1',
        `server_port: ${server.agentApiPort}`,
        'insecure_bootstrap: true',
        `socket_path: ${options.socketPath ?? `${dir}/agent.sock`}`,
        `data_dir: ${dir}/agent`,
        'health: { port: 0 }',
        ...(options.config ?? []),
      ].join('\n'),
    ),
    { joinToken, logger },
  );
}
