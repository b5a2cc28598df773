import { parseArgs } from 'node:util';
import { loadAgentConfig } from '../agent/config.js';
import { type RunningAgent, startAgent } from '../agent/run.js';
import { ConfigError } from '../common/config-schema.js';
import { isTesseraError } from '../common/errors.js';
import type { Io } from './main.js';

const USAGE = `usage: tessera agent run --config <agent.yaml> [--join-token <token>]

  run   start the agent: attest (or resume from data_dir) and serve the Workload API`;

/** `tessera agent run …` */
export async function agentRunCommand(args: string[], io: Io): Promise<number> {
  const { values } = parseArgs({
    args,
    options: { config: { type: 'string', short: 'c' }, 'join-token': { type: 'string' } },
    strict: true,
  });
  if (values.config === undefined) {
    io.err(`tessera agent run: --config <file> is required\n\n${USAGE}`);
    return 2;
  }
  let config: ReturnType<typeof loadAgentConfig>;
  try {
    config = loadAgentConfig(values.config);
  } catch (err) {
    if (err instanceof ConfigError) {
      io.err(err.message);
      return 1;
    }
    throw err;
  }
  let agent: RunningAgent;
  try {
    agent = await startAgent(
      config,
      values['join-token'] === undefined ? {} : { joinToken: values['join-token'] },
    );
  } catch (err) {
    if (isTesseraError(err)) {
      io.err(`tessera agent: ${err.message}`);
      return 1;
    }
    throw err;
  }
  // Until a signal, or until the agent cannot go on (evicted, and unable to attest again).
  const fatal = await new Promise<Error | undefined>((resolve) => {
    process.once('SIGTERM', () => resolve(undefined));
    process.once('SIGINT', () => resolve(undefined));
    agent.fatal.then(resolve);
  });
  await agent.stop();
  if (fatal === undefined) return 0;
  io.err(`tessera agent: ${fatal.message}`);
  return 1;
}
