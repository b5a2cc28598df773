// The server's own identity on the agent API: an X509-SVID for spiffe://<td>/tessera/server signed
// by the active authority, and the trust domain's bundle from the datastore. Both are sources in
// the spiffe package's shape, so the gRPC credentials rotate with them ('update').

import { generateKeyPairSync } from 'node:crypto';
import { EventEmitter } from 'node:events';
import {
  parseSpiffeId,
  type SpiffeBundle,
  type TrustDomain,
  X509Bundle,
  X509Svid,
  type X509SvidSource,
} from '@tessera/spiffe';
import type { AuthorityManager } from '../ca/manager.js';
import type { Datastore } from '../datastore/types.js';

export function serverId(trustDomain: TrustDomain): string {
  return `${trustDomain.idString()}/tessera/server`;
}

export class ServerIdentity extends EventEmitter implements X509SvidSource {
  readonly trustDomain: TrustDomain;
  readonly #authority: AuthorityManager;
  readonly #datastore: Datastore;
  readonly #ttlMs: number;
  readonly #now: () => Date;
  readonly #onRenewError: (err: Error) => void;
  #svid!: X509Svid;
  #signer = '';
  #renewAt = 0;
  #renewTimer: NodeJS.Timeout | undefined;
  #closed = false;
  #bundle!: SpiffeBundle;

  private constructor(o: {
    trustDomain: TrustDomain;
    authority: AuthorityManager;
    datastore: Datastore;
    ttlMs: number;
    now: () => Date;
    onRenewError?: (err: Error) => void;
  }) {
    super();
    this.#onRenewError = o.onRenewError ?? (() => undefined);
    this.trustDomain = o.trustDomain;
    this.#authority = o.authority;
    this.#datastore = o.datastore;
    this.#ttlMs = o.ttlMs;
    this.#now = o.now;
  }

  static async create(o: {
    trustDomain: TrustDomain;
    authority: AuthorityManager;
    datastore: Datastore;
    ttlMs: number;
    now: () => Date;
    /** Told when a renewal by the timer failed; it is retried a second later. */
    onRenewError?: (err: Error) => void;
  }): Promise<ServerIdentity> {
    const s = new ServerIdentity(o);
    await s.refreshBundle();
    s.#issue();
    return s;
  }

  getX509Svid(): X509Svid {
    return this.#svid;
  }

  /** The trust domain's bundle as last read from the datastore. */
  get bundle(): SpiffeBundle {
    return this.#bundle;
  }

  getX509BundleForTrustDomain(td: TrustDomain): X509Bundle {
    if (!td.equals(this.trustDomain)) return new X509Bundle(td);
    return this.#bundle.x509Bundle();
  }

  list(): X509Bundle[] {
    return [this.#bundle.x509Bundle()];
  }

  /** Re-reads the bundle (after a bundle change); emits 'update' when it changed. */
  async refreshBundle(): Promise<void> {
    const b = await this.#datastore.getBundle(this.trustDomain);
    if (b === undefined)
      throw new Error(`server: the bundle of ${this.trustDomain} is missing from the datastore`);
    const changed = this.#bundle === undefined || !b.equals(this.#bundle);
    this.#bundle = b;
    if (changed) this.emit('update');
  }

  /**
   * Re-issues the server SVID at half-life, or at once when another authority became active. Its own
   * timer calls this at half-life, so an SVID shorter than the CA rotation loop's interval never
   * expires in between; the loop calls it after an activation.
   */
  maybeRenew(): boolean {
    if (this.#closed) return false;
    const signer = this.#authority.x509.certificate.fingerprint256;
    if (signer === this.#signer && this.#now().getTime() < this.#renewAt) return false;
    this.#issue();
    return true;
  }

  #issue(): void {
    const now = this.#now();
    const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
    const authority = this.#authority.x509;
    const issued = authority.issueX509Svid({
      publicKey,
      spiffeId: serverId(this.trustDomain),
      ttlMs: this.#ttlMs,
      now,
    });
    this.#svid = new X509Svid(parseSpiffeId(serverId(this.trustDomain)), issued.chain, privateKey);
    this.#signer = authority.certificate.fingerprint256;
    this.#renewAt = now.getTime() + (issued.expiresAt.getTime() - now.getTime()) / 2;
    clearTimeout(this.#renewTimer);
    this.#renewTimer = setTimeout(() => this.#renewFromTimer(), Math.max(0, this.#renewAt - now.getTime()));
    this.#renewTimer.unref();
    this.emit('update');
  }

  #renewFromTimer(): void {
    try {
      this.maybeRenew();
    } catch (err) {
      // Signing failed (the authority is being replaced): try again shortly rather than let it lapse.
      this.#onRenewError(err as Error);
      this.#renewTimer = setTimeout(() => this.#renewFromTimer(), 1000);
      this.#renewTimer.unref();
    }
  }

  /** Stops the renewal timer. */
  close(): void {
    this.#closed = true;
    clearTimeout(this.#renewTimer);
  }
}
