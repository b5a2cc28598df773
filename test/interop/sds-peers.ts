/**
 * The go-control-plane SDS client (`go/bin/interop sds`, test/interop/go/sds.go) as a child
 * process: one run that subscribes and exits (`runGoSds`), or a long-lived mTLS listener serving
 * with the secrets it receives (`startGoSdsListener`). Lines are described in test/interop/README.md.
 */
import { spawn } from 'node:child_process';
import { createInterface } from 'node:readline';
import type { Readable } from 'node:stream';
import { GO_BINARY } from './verdicts.js';
import { type ErrorLine, runPeer, type WorkloadRun } from './workload-peers.js';

/** One Secret as the Go client understood it. */
export interface GoSecretSeen {
  name: string;
  kind: 'tls_certificate' | 'validation_context' | 'spiffe_validator' | 'invalid';
  spiffe_id?: string;
  /** Upper-case hex, as node's X509Certificate prints it. */
  serial?: string;
  expires_at?: number;
  chain?: number;
  /** The key's PEM block type ("PRIVATE KEY" is PKCS#8). */
  key_pem?: string;
  /** validation_context: CA certificates, and the trust domains their URI SANs name. */
  authorities?: number;
  ca_trust_domains?: string[];
  /** spiffe_validator: trust domain → authorities. */
  trust_domains?: Record<string, number>;
  error?: string;
}

export interface GoSdsResponseLine {
  kind: 'response';
  n: number;
  /** 0 for --fetch. */
  stream: number;
  at_ms: number;
  version_info: string;
  nonce: string;
  type_url: string;
  names: string[];
  secrets: GoSecretSeen[];
  verdict: 'ACK' | 'NACK' | 'FETCH';
  reason?: string;
}

export interface GoSdsRequestLine {
  kind: 'request';
  stream: number;
  at_ms: number;
  version_info: string;
  response_nonce: string;
  names: string[];
  error_detail?: string;
}

export interface GoSdsStreamLine {
  kind: 'stream';
  stream: number;
  at_ms: number;
}

export interface GoHandshakeLine {
  kind: 'handshake';
  with: string;
  ok: boolean;
  self?: string;
  validation?: 'validation_context' | 'spiffe_validator';
  peer?: string;
  reply?: string;
  error?: string;
}

export interface GoListenLine {
  kind: 'listen';
  addr: string;
  self: string;
}

export interface GoConnLine {
  kind: 'accepted' | 'refused';
  peer?: string;
  self?: string;
  error?: string;
}

export type GoSdsLine =
  | GoSdsResponseLine
  | GoSdsRequestLine
  | GoSdsStreamLine
  | GoHandshakeLine
  | GoListenLine
  | GoConnLine
  | ErrorLine;

export interface GoSdsOptions {
  names: readonly string[];
  /** Exit 0 after this many responses (default 1). */
  events?: number;
  /** NACK these responses. */
  nack?: readonly number[];
  /** After response N, subscribe to these names instead. */
  thenNames?: Readonly<Record<number, readonly string[]>>;
  reconnectAfter?: readonly number[];
  /** Go on receiving for this long after the last awaited response. */
  lingerMs?: number;
  handshakeWith?: string;
  fetch?: boolean;
  delta?: boolean;
  /** The program's own limit (default 30 s); the helper kills it 10 s later. */
  timeoutMs?: number;
  uid?: number;
  gid?: number;
  onLine?: (line: GoSdsLine) => void | Promise<void>;
}

function sdsArgs(socket: string, o: GoSdsOptions, timeoutMs: number): string[] {
  return [
    'sds',
    '--socket',
    socket,
    '--names',
    o.names.join(','),
    '--events',
    String(o.events ?? 1),
    '--timeout',
    `${timeoutMs}ms`,
    ...(o.nack?.length ? ['--nack', o.nack.join(',')] : []),
    ...Object.entries(o.thenNames ?? {}).flatMap(([n, names]) => ['--then-names', `${n}=${names.join(',')}`]),
    ...(o.reconnectAfter?.length ? ['--reconnect-after', o.reconnectAfter.join(',')] : []),
    ...(o.lingerMs === undefined ? [] : ['--linger', `${o.lingerMs}ms`]),
    ...(o.handshakeWith === undefined ? [] : ['--handshake-with', o.handshakeWith]),
    ...(o.fetch ? ['--fetch'] : []),
    ...(o.delta ? ['--delta'] : []),
  ];
}

/** `interop sds` against the SDS server on `socket`; exit code 0 when every awaited response came (and a handshake asked for succeeded). */
export function runGoSds(socket: string, o: GoSdsOptions): Promise<WorkloadRun<GoSdsLine>> {
  const timeoutMs = o.timeoutMs ?? 30_000;
  return runPeer<GoSdsLine>(GO_BINARY, sdsArgs(socket, o, timeoutMs), socket, o, timeoutMs);
}

export interface GoSdsListener {
  /** host:port. */
  addr: string;
  /** The SPIFFE ID of the certificate it serves with. */
  self: string;
  lines: GoSdsLine[];
  stderr(): string;
  close(): Promise<void>;
}

/**
 * `interop sds --listen 127.0.0.1:0`: subscribes to `names` and, once it holds a certificate and a
 * validation secret, serves mTLS with the newest ones (echoing "<peer id> <line>"), as an Envoy
 * inbound listener would. Resolves once it listens.
 */
export async function startGoSdsListener(
  socket: string,
  names: readonly string[],
  opts: { uid?: number; gid?: number; timeoutMs?: number } = {},
): Promise<GoSdsListener> {
  const timeoutMs = opts.timeoutMs ?? 120_000;
  const child = spawn(
    GO_BINARY,
    [
      'sds',
      '--socket',
      socket,
      '--names',
      names.join(','),
      '--listen',
      '127.0.0.1:0',
      '--timeout',
      `${timeoutMs}ms`,
    ],
    {
      stdio: ['ignore', 'pipe', 'pipe'],
      ...(opts.uid === undefined ? {} : { uid: opts.uid }),
      ...(opts.gid === undefined ? {} : { gid: opts.gid }),
    },
  );
  let stderr = '';
  child.stderr?.on('data', (d: Buffer) => {
    stderr += d.toString();
  });
  const lines: GoSdsLine[] = [];
  const close = async () => {
    if (child.exitCode !== null || child.signalCode !== null) return;
    const exited = new Promise((resolve) => child.once('exit', resolve));
    child.kill('SIGTERM');
    await exited;
  };
  try {
    const listen = await new Promise<GoListenLine>((resolve, reject) => {
      const timer = setTimeout(
        () => reject(new Error(`interop: the SDS listener did not listen: ${stderr}`)),
        30_000,
      );
      createInterface({ input: child.stdout as Readable }).on('line', (text) => {
        const line = JSON.parse(text) as GoSdsLine;
        lines.push(line);
        if (line.kind === 'listen') {
          clearTimeout(timer);
          resolve(line);
        }
      });
      child.once('exit', (code, signal) => {
        clearTimeout(timer);
        reject(
          new Error(
            `interop: the SDS listener exited (${code ?? signal}) before listening: ${JSON.stringify(lines)} ${stderr}`,
          ),
        );
      });
    });
    return { addr: listen.addr, self: listen.self, lines, stderr: () => stderr, close };
  } catch (err) {
    await close();
    throw err;
  }
}
