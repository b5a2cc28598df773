// `tessera helper run|validate --config helper.yaml`: spiffe-helper's job — this process's SVIDs,
// bundles and JWT-SVIDs from the Workload API written to files for a program that reads them
// from disk, kept renewed, and the program told to reload.
import { parseArgs } from 'node:util';
import { createLogger } from '../common/log.js';
import { type HelperConfig, loadHelperConfig, outputPath } from '../helper/config.js';
import { agentAddress, runHelperOnce, startHelper } from '../helper/run.js';
import type { Io } from './main.js';

const USAGE = `usage: tessera helper run|validate --config <helper.yaml> [--once]

  run        write this process's X509-SVID, key, bundle, JWT-SVIDs and JWT bundle (as configured) to
             files in cert_dir, rewrite them on every renewal and tell the program to reload
             (renew_signal to pid_file_name's pid or to cmd, or reload_cmd). With daemon_mode: false
             or --once: write once and exit 0, or exit 1 when that fails within fetch_timeout
  validate   check the configuration (every problem, with its line) and print what run would write

The keys are spiffe-helper's (agent_address, cert_dir, svid_file_name, jwt_svids, ...) in YAML;
see docs/helper.md.`;

function describe(config: HelperConfig): string[] {
  const mode = (m: number) => `0${m.toString(8)}`;
  const file = (label: string, name: string | undefined, m: number) =>
    name === undefined ? [] : [`  ${label.padEnd(22)} ${outputPath(config, name)} (${mode(m)})`];
  const reload =
    config.cmd !== undefined
      ? `run ${config.cmd}${config.renew_signal === undefined ? '' : `, ${config.renew_signal} to it after each write`}`
      : config.pid_file_name !== undefined
        ? `${config.renew_signal} to the pid in ${config.pid_file_name}`
        : undefined;
  return [
    `  agent_address          ${agentAddress(config)}`,
    `  mode                   ${config.daemon_mode ? 'daemon (renews)' : 'one-shot (writes once, exits)'}`,
    ...file('svid_file_name', config.svid_file_name, config.cert_file_mode),
    ...file('svid_key_file_name', config.svid_key_file_name, config.key_file_mode),
    ...file('svid_bundle_file_name', config.svid_bundle_file_name, config.cert_file_mode),
    ...file('svid_combined_file_name', config.svid_combined_file_name, config.key_file_mode),
    ...file('jwt_bundle_file_name', config.jwt_bundle_file_name, config.jwt_bundle_file_mode),
    ...config.jwt_svids.flatMap((j) =>
      file(`jwt_svid ${j.jwt_audience}`, j.jwt_svid_file_name, config.jwt_svid_file_mode),
    ),
    ...(reload === undefined ? [] : [`  reload                 ${reload}`]),
    ...(config.reload_cmd === undefined
      ? []
      : [`  reload_cmd             ${config.reload_cmd} ${config.reload_cmd_args}`.trimEnd()]),
  ];
}

export async function helperCommand(args: string[], io: Io): Promise<number> {
  const [sub, ...rest] = args;
  if (sub !== 'run' && sub !== 'validate') {
    io.err(sub === undefined ? USAGE : `tessera helper: unknown subcommand "${sub}"\n\n${USAGE}`);
    return 2;
  }
  const { values } = parseArgs({
    args: rest,
    options: { config: { type: 'string', short: 'c' }, once: { type: 'boolean' } },
    strict: true,
  });
  if (values.config === undefined) {
    io.err(`tessera helper ${sub}: --config <file> is required\n\n${USAGE}`);
    return 2;
  }
  // A bad configuration (every problem, with its line), a failed one-shot run or a start-up error
  // reach main(), which prints them as one message and exits 1.
  const loaded = loadHelperConfig(values.config);
  const config: HelperConfig = values.once === true ? { ...loaded, daemon_mode: false } : loaded;
  if (sub === 'validate') {
    io.out(`${values.config}: valid`);
    for (const line of describe(config)) io.out(line);
    return 0;
  }
  const log = createLogger({ level: config.log.level, format: config.log.format });
  if (!config.daemon_mode) {
    await runHelperOnce(config, { logger: log });
    return 0;
  }
  const running = await startHelper(config, { logger: log });
  const status = await new Promise<number>((resolve) => {
    running.done.then(resolve);
    // A child running has the signal forwarded (reloader.ts) and its exit ends the helper;
    // before it starts, or without cmd, the signal stops the helper.
    const onSignal = () => {
      if (!running.hasChild()) resolve(0);
    };
    process.on('SIGTERM', onSignal);
    process.on('SIGINT', onSignal);
  });
  await running.stop();
  return status;
}
