// `tessera proxy run|validate --config proxy.yaml`: identity-based mTLS in front of an app.
import { parseArgs } from 'node:util';
import { ConfigError } from '../common/config-schema.js';
import { isTesseraError } from '../common/errors.js';
import { createLogger } from '../common/log.js';
import { loadProxyConfig, type ProxyConfig } from '../proxy/config.js';
import { createPolicyEngine, loadPolicies } from '../proxy/policy/index.js';
import { startProxy } from '../proxy/run.js';
import { isProxyWorker, runProxyPrimary, runProxyWorker } from '../proxy/workers.js';
import type { Io } from './main.js';

const USAGE = `usage: tessera proxy run|validate --config <proxy.yaml>

  run        start the proxy: take this workload's SVID from the Workload API, terminate mTLS on the
             inbound listeners (applying the AuthorizationPolicies) and originate it on the outbound ones
  validate   check the configuration and load its policies, then exit (0 when both are good)`;

function load(file: string, io: Io): ProxyConfig | undefined {
  try {
    return loadProxyConfig(file);
  } catch (err) {
    if (err instanceof ConfigError) {
      io.err(err.message);
      return undefined;
    }
    throw err;
  }
}

export async function proxyCommand(args: string[], io: Io): Promise<number> {
  const [sub, ...rest] = args;
  if (sub !== 'run' && sub !== 'validate') {
    io.err(sub === undefined ? USAGE : `tessera proxy: unknown subcommand "${sub}"\n\n${USAGE}`);
    return 2;
  }
  const { values } = parseArgs({
    args: rest,
    options: { config: { type: 'string', short: 'c' } },
    strict: true,
  });
  if (values.config === undefined) {
    io.err(`tessera proxy ${sub}: --config <file> is required\n\n${USAGE}`);
    return 2;
  }
  const config = load(values.config, io);
  if (config === undefined) return 1;
  if (sub === 'validate') {
    if (config.policies.length > 0) {
      try {
        const { policies, warnings } = loadPolicies([...config.policies]);
        const workload = {
          namespace: config.namespace,
          labels: config.labels,
          rootNamespace: config.root_namespace,
        };
        const protocols = new Set(config.inbound.map((l) => l.protocol));
        const engineWarnings = [...protocols].flatMap(
          (protocol) => createPolicyEngine(policies, workload, { protocol }).warnings,
        );
        for (const w of [...warnings, ...engineWarnings])
          io.err(
            `warning: ${w.file}${w.line === undefined ? '' : `:${w.line}`}: ${w.policy === undefined ? '' : `${w.policy}: `}${w.message}`,
          );
        io.out(
          `${values.config}: valid; ${policies.length} ${policies.length === 1 ? 'policy' : 'policies'} loaded`,
        );
      } catch (err) {
        if (isTesseraError(err)) {
          io.err(err.message);
          return 1;
        }
        throw err;
      }
    } else {
      io.out(`${values.config}: valid`);
    }
    return 0;
  }
  const log = createLogger({ level: config.log.level, format: config.log.format });
  let running: { stop(): Promise<void> };
  try {
    if (isProxyWorker()) running = await runProxyWorker(config, log);
    else if (config.workers > 1) running = await runProxyPrimary(config, log);
    else running = await startProxy(config, { logger: log });
  } catch (err) {
    if (isTesseraError(err)) {
      io.err(`tessera proxy: ${err.message}`);
      return 1;
    }
    throw err;
  }
  await new Promise<void>((resolve) => {
    process.once('SIGTERM', () => resolve());
    process.once('SIGINT', () => resolve());
  });
  await running.stop();
  return 0;
}
