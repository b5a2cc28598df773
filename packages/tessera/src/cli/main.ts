import { tesseraVersion } from '../common/version.js';
import { CliError } from './cli-error.js';

/** Where a command writes; tests capture it. */
export interface Io {
  out(line: string): void;
  err(line: string): void;
}

const stdio: Io = {
  out: (line) => process.stdout.write(`${line}\n`),
  err: (line) => process.stderr.write(`${line}\n`),
};

const USAGE = `usage: tessera <command> [arguments]

commands:
  server       run or check the identity authority (tessera server validate --config server.yaml)
  entry        registration entries: create, show, update, delete, count
  token        join tokens for node attestation: generate
  agent        attested agents: list, show, ban, evict, count
  bundle       trust bundles, own and federated: show, list, set, delete
  federation   relationships with other trust domains: create, list, show, update, delete, refresh
  x509         mint an X509-SVID; revoke one (by serial or entry), list revocations, print CRLs
  jwt          mint a JWT-SVID (tessera jwt mint --spiffe-id … --audience …)
  authority    the signing keys: show, prepare, activate, taint, revoke
  healthcheck  exit 0 when the server is ready
  api          a Workload API client: fetch x509|jwt|bundles, watch, validate (any SPIFFE agent's socket)
  envoy        an Envoy bootstrap whose certificates come from the agent over SDS (tessera envoy bootstrap)
  proxy        identity-based mTLS in front of an app, with AuthorizationPolicies (tessera proxy run --config …)
  helper       SVIDs and bundles written to files for a program that reads them from disk, renewed, the program reloaded (spiffe-helper's job)
  policy       Istio AuthorizationPolicies on their own: check a request's decision, lint policy files

Every command but server, api, envoy, proxy, helper and policy talks to the server's admin socket (--socket, default
/run/tessera/server/server.sock) and takes --output json for scripts. "tessera <command> --help" shows its usage; "tessera --version" the version.`;

type Command = (args: string[], io: Io) => Promise<number>;

/**
 * Each group's module is loaded when the group runs: a command pays for its own imports only (the
 * admin commands for gRPC, not for the server, the agent, the proxy or the policy engine).
 */
const GROUPS: Record<string, () => Promise<Command>> = {
  server: async () => (await import('./server.js')).serverCommand,
  entry: async () => (await import('./entry.js')).entryCommand,
  token: async () => (await import('./token.js')).tokenCommand,
  agent: async () => (await import('./agent.js')).agentCommand,
  bundle: async () => (await import('./bundle.js')).bundleCommand,
  federation: async () => (await import('./federation.js')).federationCommand,
  x509: async () => (await import('./x509.js')).x509Command,
  jwt: async () => (await import('./jwt.js')).jwtCommand,
  authority: async () => (await import('./authority.js')).authorityCommand,
  healthcheck: async () => (await import('./healthcheck.js')).healthcheckCommand,
  api: async () => (await import('./api.js')).apiCommand,
  envoy: async () => (await import('./envoy.js')).envoyCommand,
  proxy: async () => (await import('./proxy.js')).proxyCommand,
  helper: async () => (await import('./helper.js')).helperCommand,
  policy: async () => (await import('./policy.js')).policyCommand,
};

/** Groups that answer --help themselves, with each command's own usage. */
const OWN_HELP = new Set(['healthcheck', 'policy', 'envoy']);

/** The CLI: returns the exit code. Usage errors exit 2, failures 1; an error never prints a stack trace. */
export async function main(argv: string[], io: Io = stdio): Promise<number> {
  // A reader that stops early (`tessera api fetch x509 | head -1`) closes the pipe: the output is
  // no longer wanted, so the command ends quietly instead of dying with an EPIPE stack trace.
  if (io === stdio)
    process.stdout.on('error', (err: NodeJS.ErrnoException) => {
      if (err.code !== 'EPIPE') throw err;
      process.exit(0);
    });
  const [group, ...rest] = argv;
  if (group === '--version' || group === 'version') {
    io.out(`tessera ${tesseraVersion()}`);
    return 0;
  }
  const load = group === undefined ? undefined : GROUPS[group];
  const name = ['tessera', group, rest[0]].filter((x) => x !== undefined && !x.startsWith('-')).join(' ');
  try {
    if (load !== undefined) {
      const command = await load();
      // --help or -h anywhere: the group's usage (what `tessera <group>` prints), on stdout with
      // exit 0 — except for the groups that print a usage of their own for each command.
      if (!OWN_HELP.has(group as string) && rest.some((a) => a === '--help' || a === '-h')) {
        const usage: string[] = [];
        await command([], { out: (line) => usage.push(line), err: (line) => usage.push(line) });
        io.out(usage.join('\n'));
        return 0;
      }
      return await command(rest, io);
    }
    switch (group) {
      case undefined:
      case 'help':
      case '--help':
      case '-h':
        io.out(USAGE);
        return group === undefined ? 2 : 0;
      default:
        io.err(`tessera: unknown command "${group}"\n\n${USAGE}`);
        return 2;
    }
  } catch (err) {
    io.err(`${name}: ${(err as Error).message}`);
    // By name, not instanceof: the daemons' commands run from the modules beside the bundle, with
    // their own copy of the class (scripts/bundle-cli.mjs).
    if (err instanceof CliError || (err as Error).name === 'CliError')
      return (err as CliError).exitCode === 2 ? 2 : 1;
    const code = (err as { code?: unknown }).code;
    return typeof code === 'string' && code.startsWith('ERR_PARSE_ARGS_') ? 2 : 1;
  }
}
