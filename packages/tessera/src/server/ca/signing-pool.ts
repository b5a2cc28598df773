// Issuing X509-SVIDs on every core: a few worker threads, each with its own copy of the active
// authorities, take slices of a batch of CSRs. The agent API's BatchNewX509SVID uses it; on a
// one-core machine (or with ca.signing_threads: 0) issuance stays on the main thread.
import type { KeyObject } from 'node:crypto';
import { Worker } from 'node:worker_threads';
import { TesseraError, type TesseraErrorCode } from '../../common/errors.js';
import { Issued, type IssuedX509Svid, type X509Authority } from './x509-authority.js';

export interface IssueItem {
  csr: Uint8Array;
  spiffeId: string;
  dnsNames: readonly string[];
  ttlMs: number;
}

/** @internal The messages between the pool and its threads. */
export type PoolRequest =
  | {
      type: 'authority';
      id: string;
      trustDomain: string;
      certificate: string;
      privateKey: KeyObject;
      upstreamChain: string[];
      drop: string[];
    }
  | { type: 'issue'; id: number; authority: string; now: number; items: IssueItem[] };

/** @internal */
export interface PoolResponse {
  id: number;
  outcomes: (
    | { ok: true; chainDer: Uint8Array[]; expiresAt: number; serial: string }
    | { ok: false; code: TesseraErrorCode | 'INTERNAL'; message: string }
  )[];
}

/** Fewer CSRs than this per thread are not worth a hand-off. */
const MIN_PER_THREAD = 8;

interface Thread {
  worker: Worker;
  loaded: string[];
  pending: Map<number, { resolve: (r: PoolResponse) => void; reject: (e: Error) => void }>;
}

export class SigningPool {
  readonly #threads: Thread[] = [];
  #next = 0;
  #closed = false;

  /** `size` threads; 0 issues on the calling thread. */
  constructor(size: number) {
    for (let i = 0; i < size; i++) this.#threads.push(this.#spawn());
  }

  get size(): number {
    return this.#threads.length;
  }

  #spawn(): Thread {
    const worker = new Worker(new URL('./signing-worker.js', import.meta.url));
    worker.unref();
    const thread: Thread = { worker, loaded: [], pending: new Map() };
    worker.on('message', (res: PoolResponse) => {
      const p = thread.pending.get(res.id);
      thread.pending.delete(res.id);
      p?.resolve(res);
    });
    const fail = (err: Error) => {
      for (const p of thread.pending.values()) p.reject(err);
      thread.pending.clear();
      const i = this.#threads.indexOf(thread);
      if (i >= 0 && !this.#closed) this.#threads[i] = this.#spawn();
    };
    worker.on('error', (err) => fail(new Error(`ca: a signing thread failed: ${err.message}`)));
    worker.on('exit', (code) => {
      if (!this.#closed) fail(new Error(`ca: a signing thread exited (code ${code})`));
    });
    return thread;
  }

  /**
   * Issues one SVID per item with `authority`, in order; each outcome is the SVID or the error that
   * item got (a bad CSR fails its item only).
   */
  async issue(
    authority: X509Authority,
    items: readonly IssueItem[],
    now: Date,
  ): Promise<(IssuedX509Svid | Error)[]> {
    const slices = Math.min(this.#threads.length, Math.floor(items.length / MIN_PER_THREAD));
    if (slices <= 1 || this.#closed) return items.map((item) => issueHere(authority, item, now));
    const per = Math.ceil(items.length / slices);
    const parts = await Promise.all(
      Array.from({ length: slices }, (_, i) =>
        this.#send(authority, items.slice(i * per, (i + 1) * per), now),
      ),
    );
    return parts.flatMap((res) =>
      res.outcomes.map((o) =>
        o.ok
          ? new Issued(
              o.chainDer.map((d) => Buffer.from(d.buffer, d.byteOffset, d.byteLength)),
              new Date(o.expiresAt),
              o.serial,
            )
          : o.code === 'INTERNAL'
            ? new Error(o.message)
            : new TesseraError(o.code, o.message),
      ),
    );
  }

  #send(authority: X509Authority, items: IssueItem[], now: Date): Promise<PoolResponse> {
    const thread = this.#threads[this.#next++ % this.#threads.length] as Thread;
    const id = authority.certificate.fingerprint256;
    if (!thread.loaded.includes(id)) {
      // Keep the last two authorities a thread has seen (current and previous); drop older ones.
      const drop = thread.loaded.slice(0, Math.max(0, thread.loaded.length - 1));
      thread.loaded = [...thread.loaded.slice(-1), id];
      thread.worker.postMessage({
        type: 'authority',
        id,
        trustDomain: authority.trustDomain.name,
        certificate: authority.certificate.toString(),
        privateKey: authority.privateKey,
        upstreamChain: authority.upstreamChain.map((c) => c.toString()),
        drop,
      } satisfies PoolRequest);
    }
    const reqId = this.#next;
    return new Promise((resolve, reject) => {
      thread.pending.set(reqId, { resolve, reject });
      thread.worker.postMessage({
        type: 'issue',
        id: reqId,
        authority: id,
        now: now.getTime(),
        items,
      } satisfies PoolRequest);
    });
  }

  async close(): Promise<void> {
    this.#closed = true;
    await Promise.all(this.#threads.map((t) => t.worker.terminate()));
  }
}

function issueHere(authority: X509Authority, item: IssueItem, now: Date): IssuedX509Svid | Error {
  try {
    return authority.issueX509Svid({ ...item, now });
  } catch (err) {
    return err as Error;
  }
}
