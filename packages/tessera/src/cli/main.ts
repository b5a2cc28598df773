import { serverCommand } from './server.js';

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
  server   run or check the identity authority (tessera server validate --config server.yaml)`;

/** The CLI: returns the exit code. Usage errors exit 2, failures 1; an error never prints a stack trace. */
export async function main(argv: string[], io: Io = stdio): Promise<number> {
  const [group, ...rest] = argv;
  try {
    switch (group) {
      case 'server':
        return await serverCommand(rest, io);
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
    io.err(`tessera: ${(err as Error).message}`);
    return (err as { code?: unknown }).code === 'ERR_PARSE_ARGS_UNKNOWN_OPTION' ? 2 : 1;
  }
}
