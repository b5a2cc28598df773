// A real software TPM for tests: swtpm (Debian swtpm, swtpm-tools) on two loopback TCP ports,
// optionally manufactured first by swtpm_setup with an EK certificate in NV from its own local CA
// (swtpm_localca), and reached by tpm2-tools through TCTI "swtpm:host=127.0.0.1,port=…".
import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { once } from 'node:events';
import { mkdirSync, writeFileSync } from 'node:fs';
import { connect } from 'node:net';
import { join } from 'node:path';
import { freePort, onPath, suiteUnavailable } from '@tessera/testkit';

/** What the TPM suite runs: swtpm and its set-up tools, and the tpm2-tools the agent drives. */
export const TPM_PROGRAMS = [
  'swtpm',
  'swtpm_setup',
  'swtpm_localca',
  'tpm2_createek',
  'tpm2_createak',
  'tpm2_nvread',
  'tpm2_nvreadpublic',
  'tpm2_startauthsession',
  'tpm2_policysecret',
  'tpm2_activatecredential',
  'tpm2_quote',
  'tpm2_flushcontext',
  'tpm2_pcrextend',
] as const;

/**
 * True (the suite must skip) when a program of TPM_PROGRAMS is missing, said loudly; with
 * TESSERA_REQUIRE_INTEROP=1 a missing one is a failing test instead, as for the other interop peers.
 */
export function tpmUnavailable(suite: string): boolean {
  const missing = TPM_PROGRAMS.filter((p) => !onPath(p));
  if (missing.length === 0) return false;
  return suiteUnavailable(
    suite,
    `swtpm / tpm2-tools not installed (missing ${missing.join(', ')}); apt-get install -y swtpm swtpm-tools tpm2-tools, or run test/interop/setup.sh as root`,
    'a software TPM is available',
  );
}

function run(file: string, args: readonly string[], env: NodeJS.ProcessEnv = {}): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile(file, [...args], { env: { ...process.env, ...env }, timeout: 60_000 }, (err, stdout, stderr) =>
      err === null
        ? resolve(stdout)
        : reject(new Error(`${file} ${args.join(' ')}: ${err.message}\n${stderr}`)),
    );
  });
}

export interface Swtpm {
  /** The TCTI tpm2-tools (and the agent's `tcti`) reach it by. */
  readonly tcti: string;
  /** With an EK certificate: the local CA that issued it (PEM file) and that CA's root. */
  readonly ekIssuerPath?: string;
  readonly ekRootPath?: string;
  /** Runs a tpm2-tools program against this TPM. */
  tool(program: string, args: readonly string[]): Promise<string>;
  stop(): Promise<void>;
}

/**
 * Starts a swtpm whose state lives in `dir`. With `ekCertificate`, swtpm_setup first creates the
 * RSA 2048 EK and its certificate, issued by a local CA made in `dir`/ca (its own for each TPM).
 */
export async function startSwtpm(dir: string, o: { ekCertificate?: boolean } = {}): Promise<Swtpm> {
  const state = join(dir, 'state');
  mkdirSync(state, { recursive: true });
  let ca: { ekIssuerPath: string; ekRootPath: string } | undefined;
  if (o.ekCertificate === true) {
    const caDir = join(dir, 'ca');
    mkdirSync(caDir, { recursive: true });
    writeFileSync(
      join(dir, 'localca.conf'),
      [
        `statedir = ${caDir}`,
        `signingkey = ${caDir}/signkey.pem`,
        `issuercert = ${caDir}/issuercert.pem`,
        `certserial = ${caDir}/certserial`,
        '',
      ].join('\n'),
    );
    writeFileSync(
      join(dir, 'localca.options'),
      '--platform-manufacturer Tessera\n--platform-version 2.1\n--platform-model test\n',
    );
    writeFileSync(
      join(dir, 'setup.conf'),
      [
        'create_certs_tool = swtpm_localca',
        `create_certs_tool_config = ${dir}/localca.conf`,
        `create_certs_tool_options = ${dir}/localca.options`,
        '',
      ].join('\n'),
    );
    await run('swtpm_setup', [
      '--tpm2',
      '--tpmstate',
      state,
      '--config',
      join(dir, 'setup.conf'),
      '--create-ek-cert',
      '--overwrite',
    ]);
    ca = {
      ekIssuerPath: join(caDir, 'issuercert.pem'),
      ekRootPath: join(caDir, 'swtpm-localca-rootca-cert.pem'),
    };
  }
  // tpm2-tss's swtpm TCTI finds the control channel on the next port up.
  for (let attempt = 1; ; attempt++) {
    const port = await freePort();
    const started = await listen(state, port);
    if (started !== undefined) return handle(started, port, ca);
    if (attempt === 5) throw new Error(`swtpm did not start (ports ${port}, ${port + 1}): ${lastError}`);
  }
}

let lastError = '';

async function listen(
  state: string,
  port: number,
): Promise<{ child: ChildProcess; exited: Promise<unknown> } | undefined> {
  const child: ChildProcess = spawn(
    'swtpm',
    [
      'socket',
      '--tpm2',
      '--server',
      `type=tcp,port=${port},bindaddr=127.0.0.1`,
      '--ctrl',
      `type=tcp,port=${port + 1},bindaddr=127.0.0.1`,
      '--tpmstate',
      `dir=${state}`,
      '--flags',
      'not-need-init,startup-clear',
    ],
    { stdio: ['ignore', 'ignore', 'pipe'] },
  );
  let stderr = '';
  child.stderr?.setEncoding('utf8').on('data', (d: string) => {
    stderr += d;
  });
  const exited = once(child, 'exit');
  for (let i = 0; i < 100; i++) {
    const up = await new Promise<boolean>((resolve) => {
      const s = connect(port + 1, '127.0.0.1');
      s.once('connect', () => {
        s.destroy();
        resolve(true);
      });
      s.once('error', () => resolve(false));
    });
    if (up) return { child, exited };
    if (child.exitCode !== null) break;
    await new Promise((r) => setTimeout(r, 50));
  }
  lastError = stderr;
  child.kill('SIGKILL');
  return undefined;
}

function handle(
  { child, exited }: { child: ChildProcess; exited: Promise<unknown> },
  port: number,
  ca: { ekIssuerPath: string; ekRootPath: string } | undefined,
): Swtpm {
  const tcti = `swtpm:host=127.0.0.1,port=${port}`;
  return {
    tcti,
    ...(ca ?? {}),
    tool: (program, args) => run(program, args, { TPM2TOOLS_TCTI: tcti }),
    async stop() {
      if (child.exitCode === null && child.signalCode === null) {
        child.kill('SIGTERM');
        await exited;
      }
    },
  };
}
