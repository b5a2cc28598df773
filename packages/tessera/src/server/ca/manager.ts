import { createPublicKey, type KeyObject, X509Certificate } from 'node:crypto';
import { open, readFile, rename } from 'node:fs/promises';
import type { Logger, SpiffeBundle, TrustDomain } from '@tessera/spiffe';
import { TesseraError, TesseraErrorCode } from '../../common/errors.js';
import { type DistinguishedName, keyIdentifier, spkiOf } from '../../common/x509.js';
import type { AuthorityRecord, Datastore } from '../datastore/types.js';
import type { KeyManager, KeyType } from '../keymanager/key-manager.js';
import { JwtAuthority, newKid } from './jwt-authority.js';
import { type KeyWindow, rotationStep } from './rotation.js';
import { X509Authority } from './x509-authority.js';

type SlotId = 'A' | 'B';
type Status = 'prepared' | 'active' | 'old';

interface X509JournalEntry {
  slot: SlotId;
  status: Status;
  /** PEM. */
  certificate: string;
  issuedAt: string;
}

interface JwtJournalEntry {
  slot: SlotId;
  status: Status;
  kid: string;
  issuedAt: string;
  notAfter: string;
}

/**
 * What this server remembers about its own keys: which key file is in which slot. The bundle, and
 * every authority's status, taint and revocation, are in the datastore, shared by all servers.
 */
interface Journal {
  x509: X509JournalEntry[];
  jwt: JwtJournalEntry[];
  /** IDs ("x509:<ski hex>", "jwt:<kid>") an operator tainted; read once to move them to the datastore. */
  tainted?: string[];
}

export type AuthorityKind = 'x509' | 'jwt';

/** What one step of the rotation schedule did, per kind of key. */
export type RotationSteps = { x509: 'none' | 'prepare' | 'activate'; jwt: 'none' | 'prepare' | 'activate' };

/** Told after a key is prepared or activated, by the rotation schedule or by an operator command. */
export type RotationListener = (
  kind: AuthorityKind,
  step: 'prepared' | 'activated',
  id: string,
  trigger: 'schedule' | 'operator',
) => void;

/** One signing key as `tessera authority show` lists it. */
export interface AuthorityInfo {
  kind: AuthorityKind;
  /** X.509: subject key ID (hex); JWT: kid. */
  id: string;
  status: Status;
  tainted: boolean;
  notAfter: Date;
  /** X.509: the CA certificate. */
  certificate?: X509Certificate;
}

/** The subject key ID (hex) an X.509 authority is known by. */
export function authorityKeyId(cert: X509Certificate): string {
  return Buffer.from(keyIdentifier(spkiOf(cert.publicKey))).toString('hex');
}

function opError(message: string): TesseraError {
  return new TesseraError(TesseraErrorCode.INVALID_ARGUMENT, `authority: ${message}`);
}

export interface AuthorityManagerOptions {
  trustDomain: TrustDomain;
  keyManager: KeyManager;
  datastore: Datastore;
  /** File where slot states are kept (written atomically, 0600); undefined keeps them in memory. */
  journalPath?: string;
  caKeyType: KeyType;
  jwtKeyType: KeyType;
  caTtlMs: number;
  subject: DistinguishedName;
  jwtIssuer?: string;
  /**
   * The organisation's CA: Tessera's CA keys are signed by it and the bundle holds `roots`
   * instead of Tessera's own certificates. `chain`: intermediates above `certificate`, if any.
   */
  upstream?: {
    certificate: X509Certificate;
    privateKey: KeyObject;
    chain?: readonly X509Certificate[];
    roots: readonly X509Certificate[];
  };
  now: () => Date;
  logger?: Logger;
}

const other = (s: SlotId): SlotId => (s === 'A' ? 'B' : 'A');
const x509KeyId = (s: SlotId) => `x509-CA-${s}`;
const jwtKeyId = (s: SlotId) => `JWT-Signer-${s}`;

interface X509Slot {
  slot: SlotId;
  status: Status;
  authority: X509Authority;
  window: KeyWindow;
}

interface JwtSlot {
  slot: SlotId;
  status: Status;
  authority: JwtAuthority;
  window: KeyWindow;
}

/**
 * The authority's signing keys: two slots each for the X.509 CA and the JWT key (current and next),
 * rotated on SPIRE's schedule (rotation.ts): a new key is prepared and published in the bundle well
 * before it is activated, and the old one stays in the bundle until it expires (prune()).
 */
export class AuthorityManager {
  readonly #o: AuthorityManagerOptions;
  #x509: { current?: X509Slot; next?: X509Slot } = {};
  #jwt: { current?: JwtSlot; next?: JwtSlot } = {};
  /** Retired JWT keys still in the bundle: kid → expiry (JWKs carry no expiry of their own). */
  #retiredJwt = new Map<string, Date>();
  /** "x509:<ski>" / "jwt:<kid>" of tainted authorities, as the datastore last said. */
  #tainted = new Set<string>();
  /** Authorities this server stopped using, to record as `old` with the next persist. */
  #retired: Omit<AuthorityRecord, 'tainted' | 'revoked'>[] = [];
  #refreshing: Promise<void> = Promise.resolve();
  #slotsBusy: Promise<unknown> = Promise.resolve();
  /** The trust domain's bundle as last read; forgotten at each change to it. */
  #bundle: SpiffeBundle | undefined;
  #unsubscribe: (() => void) | undefined;
  readonly #taintListeners = new Set<(kind: AuthorityKind, id: string) => void>();
  readonly #rotationListeners = new Set<RotationListener>();
  /** Set while an operator command runs, so listeners can tell it from the schedule. */
  #byOperator = false;
  /**
   * Every X.509 authority whose key this server holds, by subject key ID, until it expires: the
   * current and next, and retired ones (whose SVIDs may still be valid, so their CRLs are signed here).
   */
  readonly #heldX509 = new Map<string, X509Authority>();
  /** Run (in order, awaited) after a new X.509 authority is published, before it can be activated. */
  readonly #prepareHooks: ((authority: X509Authority) => Promise<void>)[] = [];

  constructor(options: AuthorityManagerOptions) {
    this.#o = options;
  }

  /** Loads the journal and keys; creates and activates the first keys when there are none. */
  async init(): Promise<void> {
    const journal = await this.#readJournal();
    for (const e of journal.x509) {
      const key = await this.#o.keyManager.getKey(x509KeyId(e.slot));
      const cert = new X509Certificate(e.certificate);
      if (key === undefined || !cert.checkPrivateKey(key) || e.status === 'old') continue;
      const slot: X509Slot = {
        slot: e.slot,
        status: e.status,
        authority: new X509Authority(this.#o.trustDomain, cert, key, this.#upstreamIntermediates()),
        window: { issuedAt: new Date(e.issuedAt), notAfter: new Date(cert.validTo) },
      };
      if (e.status === 'active') this.#x509.current = slot;
      else this.#x509.next = slot;
      this.#heldX509.set(slot.authority.id, slot.authority);
    }
    for (const e of journal.jwt) {
      if (e.status === 'old') {
        this.#retiredJwt.set(e.kid, new Date(e.notAfter));
        continue;
      }
      const key = await this.#o.keyManager.getKey(jwtKeyId(e.slot));
      if (key === undefined) continue;
      const slot: JwtSlot = {
        slot: e.slot,
        status: e.status,
        authority: new JwtAuthority({
          trustDomain: this.#o.trustDomain,
          kid: e.kid,
          privateKey: key,
          publicKey: createPublicKey(key),
          notAfter: new Date(e.notAfter),
          ...(this.#o.jwtIssuer === undefined ? {} : { issuer: this.#o.jwtIssuer }),
        }),
        window: { issuedAt: new Date(e.issuedAt), notAfter: new Date(e.notAfter) },
      };
      if (e.status === 'active') this.#jwt.current = slot;
      else this.#jwt.next = slot;
    }
    if (this.#x509.current === undefined) {
      await this.#prepareX509(this.#x509.next === undefined ? 'A' : other(this.#x509.next.slot));
      this.#activateX509();
    }
    if (this.#jwt.current === undefined) {
      await this.#prepareJwt(this.#jwt.next === undefined ? 'A' : other(this.#jwt.next.slot));
      this.#activateJwt();
    }
    // Every server of the trust domain hears of taints (by whichever server) through the feed.
    this.#unsubscribe = this.#o.datastore.onChange((c) => {
      if ((c.kind === 'bundle' && c.trustDomain === this.#o.trustDomain.name) || c.kind === 'resync')
        this.#bundle = undefined;
      if ((c.kind === 'authority' && c.op !== 'record') || c.kind === 'resync') void this.#refreshTaints();
    });
    await this.#persist();
    // Taints kept in a journal by an earlier version move to the datastore.
    for (const t of journal.tainted ?? []) {
      const [kind, id] = [t.slice(0, t.indexOf(':')), t.slice(t.indexOf(':') + 1)];
      const known = (await this.list()).find((a) => a.kind === kind && a.id === id);
      if (known !== undefined && !known.tainted)
        await this.#o.datastore.taintAuthority({
          kind: known.kind,
          id,
          notAfter: known.notAfter,
          certificate: known.certificate?.toString() ?? '',
        });
    }
    await this.#refreshTaints();
    if (journal.tainted !== undefined) await this.#writeJournal();
  }

  /** Stops following the datastore's taints. */
  close(): void {
    this.#unsubscribe?.();
  }

  /** The key that signs X509-SVIDs now. */
  get x509(): X509Authority {
    const c = this.#x509.current;
    if (c === undefined)
      throw new TesseraError(TesseraErrorCode.CA_ISSUE, 'ca: no active X.509 authority; call init()');
    return c.authority;
  }

  /** The key that signs JWT-SVIDs now. */
  get jwt(): JwtAuthority {
    const c = this.#jwt.current;
    if (c === undefined)
      throw new TesseraError(TesseraErrorCode.CA_ISSUE, 'ca: no active JWT authority; call init()');
    return c.authority;
  }

  /**
   * The X.509 authorities this server can sign CRLs for (current, next, and retired ones it still
   * holds, until they expire), by subject key ID. Retired keys are held in memory only: after a
   * restart, what a retired key signed can be revoked by tainting and revoking that authority.
   */
  heldX509(): ReadonlyMap<string, X509Authority> {
    const now = this.#o.now().getTime();
    for (const [id, a] of this.#heldX509) if (a.notAfter.getTime() <= now) this.#heldX509.delete(id);
    return this.#heldX509;
  }

  /** A prepared X.509 authority waiting for activation, if any. */
  get nextX509(): X509Authority | undefined {
    return this.#x509.next?.authority;
  }

  /** One step of the rotation loop: prepare or activate what the schedule says, at `now`. */
  rotate(): Promise<RotationSteps> {
    return this.#exclusive(() => this.#rotateStep());
  }

  async #rotateStep(): Promise<RotationSteps> {
    const now = this.#o.now();
    const x = this.#x509.current;
    const j = this.#jwt.current;
    if (x === undefined || j === undefined)
      throw new TesseraError(TesseraErrorCode.CA_ISSUE, 'ca: rotate() before init()');
    const xStep = rotationStep(x.window, this.#x509.next !== undefined, now);
    if (xStep === 'prepare') await this.#prepareX509(other(x.slot));
    if (xStep === 'activate') this.#activateX509();
    const jStep = rotationStep(j.window, this.#jwt.next !== undefined, now);
    if (jStep === 'prepare') await this.#prepareJwt(other(j.slot));
    if (jStep === 'activate') this.#activateJwt();
    if (xStep !== 'none' || jStep !== 'none') await this.#persist();
    return { x509: xStep, jwt: jStep };
  }

  /**
   * Every authority of the trust domain: this server's slots, the other servers' keys and this
   * server's retired ones as the datastore records them, and other X.509 roots in the bundle.
   * Revoked and expired ones are left out.
   */
  async list(): Promise<AuthorityInfo[]> {
    const now = this.#o.now().getTime();
    const out: AuthorityInfo[] = [];
    const seen = new Set<string>();
    const add = (a: AuthorityInfo) => {
      if (seen.has(`${a.kind}:${a.id}`)) return;
      seen.add(`${a.kind}:${a.id}`);
      out.push(a);
    };
    for (const s of [this.#x509.current, this.#x509.next]) {
      if (s === undefined) continue;
      const id = s.authority.id;
      add({
        kind: 'x509',
        id,
        status: s.status,
        tainted: this.#tainted.has(`x509:${id}`),
        notAfter: s.authority.notAfter,
        certificate: s.authority.certificate,
      });
    }
    for (const s of [this.#jwt.current, this.#jwt.next]) {
      if (s === undefined) continue;
      const id = s.authority.kid;
      add({
        kind: 'jwt',
        id,
        status: s.status,
        tainted: this.#tainted.has(`jwt:${id}`),
        notAfter: s.window.notAfter,
      });
    }
    const bundle = await this.#o.datastore.getBundle(this.#o.trustDomain);
    for (const [kid, notAfter] of this.#retiredJwt)
      if (bundle?.jwtAuthorities.has(kid) ?? false)
        add({ kind: 'jwt', id: kid, status: 'old', tainted: this.#tainted.has(`jwt:${kid}`), notAfter });
    for (const r of await this.#o.datastore.listAuthorities()) {
      if (r.revoked || r.notAfter.getTime() <= now) continue;
      // A JWT key no longer in the bundle verifies nothing: it is gone.
      if (r.kind === 'jwt' && !(bundle?.jwtAuthorities.has(r.id) ?? false)) continue;
      add({
        kind: r.kind,
        id: r.id,
        status: r.status,
        tainted: r.tainted,
        notAfter: r.notAfter,
        ...(r.kind === 'x509' && r.certificate !== ''
          ? { certificate: new X509Certificate(r.certificate) }
          : {}),
      });
    }
    if (this.#o.upstream === undefined)
      for (const c of bundle?.x509Authorities ?? [])
        add({
          kind: 'x509',
          id: authorityKeyId(c),
          status: 'old',
          tainted: this.#tainted.has(`x509:${authorityKeyId(c)}`),
          notAfter: new Date(c.validTo),
          certificate: c,
        });
    return out;
  }

  /** Prepares a new key now (published in the bundle, not yet signing). Refused when one is prepared. */
  async prepare(kind: AuthorityKind): Promise<AuthorityInfo> {
    return this.#exclusive(() => this.#prepareNow(kind));
  }

  async #prepareNow(kind: AuthorityKind): Promise<AuthorityInfo> {
    const slots = kind === 'x509' ? this.#x509 : this.#jwt;
    if (slots.next !== undefined)
      throw opError(
        `a ${kind} authority is already prepared; activate it (tessera authority activate --kind ${kind})`,
      );
    const current = slots.current;
    if (current === undefined) throw opError('the authority is not initialised');
    this.#byOperator = true;
    try {
      if (kind === 'x509') await this.#prepareX509(other(current.slot));
      else await this.#prepareJwt(other(current.slot));
    } finally {
      this.#byOperator = false;
    }
    await this.#persist();
    return this.#info(kind, 'prepared');
  }

  /** Makes the prepared key the signing one; the previous one stays in the bundle until it expires. */
  async activate(kind: AuthorityKind): Promise<AuthorityInfo> {
    return this.#exclusive(() => this.#activateNow(kind));
  }

  async #activateNow(kind: AuthorityKind): Promise<AuthorityInfo> {
    const slots = kind === 'x509' ? this.#x509 : this.#jwt;
    if (slots.next === undefined)
      throw opError(
        `no ${kind} authority is prepared; prepare one first (tessera authority prepare --kind ${kind})`,
      );
    this.#byOperator = true;
    try {
      if (kind === 'x509') this.#activateX509();
      else this.#activateJwt();
    } finally {
      this.#byOperator = false;
    }
    await this.#persist();
    return this.#info(kind, 'active');
  }

  /**
   * Marks an old (no longer signing) key as compromised, for every server of the trust domain:
   * agents re-issue every SVID it signed at once. This server's active key cannot be tainted
   * (prepare and activate a new one first); another server's active key can, and that server
   * rotates to a new key as soon as it hears of it.
   */
  async taint(kind: AuthorityKind, id: string): Promise<AuthorityInfo> {
    const a = await this.#find(kind, id);
    const own = this.#ownStatus(kind, id);
    if (own === 'active')
      throw opError(
        `${kind} authority ${id} is the active one; prepare and activate a new one before tainting it`,
      );
    if (a.status === 'prepared')
      throw opError(
        `${kind} authority ${id} is only prepared and has signed nothing; there is nothing to taint`,
      );
    if (a.tainted) throw opError(`${kind} authority ${id} is already tainted`);
    await this.#o.datastore.taintAuthority({
      kind,
      id,
      notAfter: a.notAfter,
      certificate: a.certificate?.toString() ?? '',
    });
    await this.#refreshTaints();
    this.#o.logger?.warn?.('ca: authority tainted', { kind, id });
    return { ...a, tainted: true };
  }

  /**
   * Revokes a tainted key. Without an upstream authority it leaves the bundle, so whatever it
   * signed stops verifying everywhere. Under an upstream authority the bundle holds the upstream
   * roots, which still vouch for it: it is marked revoked, never used again and agents keep
   * re-issuing away from it, but peers accept what it signed until it expires unless the upstream
   * CA revokes it too (docs/server.md).
   */
  async revoke(kind: AuthorityKind, id: string): Promise<AuthorityInfo> {
    const a = await this.#find(kind, id);
    if (!a.tainted)
      throw opError(`${kind} authority ${id} is not tainted; taint it first so agents move away from it`);
    if (kind === 'jwt' || this.#o.upstream === undefined)
      await this.#o.datastore.updateBundle(this.#o.trustDomain, (cur) =>
        kind === 'x509'
          ? cur.with({ x509Authorities: cur.x509Authorities.filter((c) => authorityKeyId(c) !== id) })
          : cur.with({ jwtAuthorities: [...cur.jwtAuthorities].filter(([kid]) => kid !== id) }),
      );
    await this.#o.datastore.revokeAuthority(kind, id);
    if (kind === 'jwt') this.#retiredJwt.delete(id);
    await this.#writeJournal();
    await this.#refreshTaints();
    this.#o.logger?.warn?.('ca: authority revoked', { kind, id });
    return a;
  }

  /** Tainted authorities as "x509:<subject key ID hex>" and "jwt:<kid>", until they expire or leave the bundle. */
  tainted(): string[] {
    return [...this.#tainted];
  }

  async #find(kind: AuthorityKind, id: string): Promise<AuthorityInfo> {
    const a = (await this.list()).find((x) => x.kind === kind && x.id === id);
    if (a === undefined)
      throw opError(`no ${kind} authority ${JSON.stringify(id)}; see tessera authority show`);
    return a;
  }

  #ownStatus(kind: AuthorityKind, id: string): Status | undefined {
    const slots =
      kind === 'x509' ? [this.#x509.current, this.#x509.next] : [this.#jwt.current, this.#jwt.next];
    for (const s of slots) {
      if (s === undefined) continue;
      const sid = s.authority instanceof X509Authority ? s.authority.id : s.authority.kid;
      if (sid === id) return s.status;
    }
    return undefined;
  }

  /**
   * Re-reads the tainted authorities from the datastore; tells the taint listeners of each new one.
   * When this server's own active key was tainted (by an operator on another server), it rotates
   * to a new key at once. Calls run one after another.
   */
  #refreshTaints(): Promise<void> {
    const run = async () => {
      const now = this.#o.now().getTime();
      const records = await this.#o.datastore.listAuthorities();
      const next = new Set(
        records
          .filter(
            (r) =>
              r.tainted &&
              r.notAfter.getTime() > now &&
              // A revoked key left the bundle and verifies nothing, except an intermediate under an
              // upstream authority, whose roots still vouch for it: agents keep moving away from it.
              (!r.revoked || (r.kind === 'x509' && this.#o.upstream !== undefined)),
          )
          .map((r) => `${r.kind}:${r.id}`),
      );
      const fresh = [...next].filter((t) => !this.#tainted.has(t));
      this.#tainted = next;
      for (const t of fresh) {
        const kind = t.slice(0, t.indexOf(':')) as AuthorityKind;
        const id = t.slice(t.indexOf(':') + 1);
        if (this.#ownStatus(kind, id) === 'active')
          await this.#exclusive(() => this.#replaceTainted(kind, id));
        for (const l of this.#taintListeners) {
          try {
            l(kind, id);
          } catch (err) {
            this.#o.logger?.error?.('ca: a taint listener failed', { error: (err as Error).message });
          }
        }
      }
    };
    this.#refreshing = this.#refreshing.then(run).catch((err: unknown) => {
      this.#o.logger?.error?.('ca: reading tainted authorities failed', { error: (err as Error).message });
    });
    return this.#refreshing;
  }

  /**
   * Runs one change of the slots at a time: the rotation loop, an operator's prepare or activate,
   * and the replacement of a key another server tainted never interleave.
   */
  #exclusive<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.#slotsBusy.then(fn);
    this.#slotsBusy = run.catch(() => undefined);
    return run;
  }

  /** Replaces a tainted active key now (unless it was replaced meanwhile): prepare unless prepared, activate. */
  async #replaceTainted(kind: AuthorityKind, id: string): Promise<void> {
    if (this.#ownStatus(kind, id) !== 'active') return;
    this.#o.logger?.warn?.(
      "ca: this server's active authority was tainted by an operator on another server; rotating to a new key now",
      { kind, id },
    );
    const slots = kind === 'x509' ? this.#x509 : this.#jwt;
    const current = slots.current;
    if (current === undefined) return;
    if (slots.next === undefined) {
      if (kind === 'x509') await this.#prepareX509(other(current.slot));
      else await this.#prepareJwt(other(current.slot));
    }
    if (kind === 'x509') this.#activateX509();
    else this.#activateJwt();
    await this.#persist();
  }

  /** Called after each taint (to push it to agents). */
  onTaint(listener: (kind: AuthorityKind, id: string) => void): () => void {
    this.#taintListeners.add(listener);
    return () => this.#taintListeners.delete(listener);
  }

  /**
   * Runs `hook` each time an X.509 authority is prepared, after it is in the bundle and before it
   * can sign anything: the revocation manager signs its first CRL there, so that every verifier that
   * checks CRLs has one for it before any SVID of it exists. A failing hook fails the preparation.
   */
  onPrepareX509(hook: (authority: X509Authority) => Promise<void>): () => void {
    this.#prepareHooks.push(hook);
    return () => {
      const i = this.#prepareHooks.indexOf(hook);
      if (i >= 0) this.#prepareHooks.splice(i, 1);
    };
  }

  /** Called after each key is prepared or activated (by the schedule or an operator). */
  onRotation(listener: RotationListener): () => void {
    this.#rotationListeners.add(listener);
    return () => this.#rotationListeners.delete(listener);
  }

  #rotated(kind: AuthorityKind, step: 'prepared' | 'activated', id: string): void {
    const trigger = this.#byOperator ? 'operator' : 'schedule';
    for (const l of this.#rotationListeners) {
      try {
        l(kind, step, id, trigger);
      } catch (err) {
        this.#o.logger?.error?.('ca: a rotation listener failed', { error: (err as Error).message });
      }
    }
  }

  async #info(kind: AuthorityKind, status: Status): Promise<AuthorityInfo> {
    const a = (await this.list()).find((x) => x.kind === kind && x.status === status);
    if (a === undefined) throw opError(`no ${status} ${kind} authority`);
    return a;
  }

  /** Drops expired authorities from the bundle (nothing they signed can still be valid). */
  async prune(): Promise<SpiffeBundle> {
    const now = this.#o.now().getTime();
    const keep = (cur: SpiffeBundle) =>
      cur.with({
        x509Authorities: cur.x509Authorities.filter((c) => new Date(c.validTo).getTime() > now),
        // Only this server's retired keys are removed; other servers sharing the bundle prune theirs.
        jwtAuthorities: [...cur.jwtAuthorities].filter(
          ([kid]) => (this.#retiredJwt.get(kid)?.getTime() ?? Number.POSITIVE_INFINITY) > now,
        ),
      });
    // Decided on the bundle as last read (re-read after every change to it), so the rotation loop
    // of an idle server costs the datastore nothing; only a bundle with something to drop is written.
    this.#bundle ??= await this.#o.datastore.getBundle(this.#o.trustDomain);
    const cur = this.#bundle;
    if (cur !== undefined) {
      const next = keep(cur);
      if (
        next.x509Authorities.length === cur.x509Authorities.length &&
        next.jwtAuthorities.size === cur.jwtAuthorities.size
      )
        return cur;
    }
    return this.#o.datastore.updateBundle(this.#o.trustDomain, keep);
  }

  #upstreamIntermediates(): X509Certificate[] {
    const up = this.#o.upstream;
    if (up === undefined || up.certificate.subject === up.certificate.issuer) return [];
    return [up.certificate, ...(up.chain ?? [])];
  }

  async #prepareX509(slot: SlotId): Promise<void> {
    const now = this.#o.now();
    const key = await this.#o.keyManager.generateKey(x509KeyId(slot), this.#o.caKeyType);
    const base = {
      trustDomain: this.#o.trustDomain,
      keyType: this.#o.caKeyType,
      ttlMs: this.#o.caTtlMs,
      subject: this.#o.subject,
      now,
      privateKey: key,
    };
    const up = this.#o.upstream;
    const authority =
      up === undefined
        ? X509Authority.createSelfSigned(base)
        : X509Authority.createSigned({ ...base, upstream: up });
    // Published before it signs anything: every agent and workload gets it in its bundle first.
    // Under an upstream authority the bundle holds the upstream roots, which already vouch for it.
    const published = up === undefined ? [authority.certificate] : up.roots;
    await this.#o.datastore.updateBundle(this.#o.trustDomain, (cur) =>
      cur.with({
        x509Authorities: [
          ...cur.x509Authorities,
          ...published.filter((c) => !cur.x509Bundle().hasAuthority(c)),
        ],
      }),
    );
    this.#x509.next = {
      slot,
      status: 'prepared',
      authority,
      window: { issuedAt: now, notAfter: authority.notAfter },
    };
    this.#heldX509.set(authority.id, authority);
    for (const hook of this.#prepareHooks) await hook(authority);
    this.#rotated('x509', 'prepared', authority.id);
    this.#o.logger?.info?.('ca: prepared X.509 authority', {
      slot,
      notAfter: authority.notAfter.toISOString(),
    });
  }

  #activateX509(): void {
    const next = this.#x509.next;
    if (next === undefined) return;
    const previous = this.#x509.current;
    if (previous !== undefined) this.#retired.push(x509Record(previous, 'old'));
    this.#x509 = { current: { ...next, status: 'active' } };
    this.#rotated('x509', 'activated', next.authority.id);
    this.#o.logger?.info?.('ca: activated X.509 authority', { slot: next.slot });
  }

  async #prepareJwt(slot: SlotId): Promise<void> {
    const now = this.#o.now();
    const key = await this.#o.keyManager.generateKey(jwtKeyId(slot), this.#o.jwtKeyType);
    const notAfter = new Date(now.getTime() + this.#o.caTtlMs);
    const authority = new JwtAuthority({
      trustDomain: this.#o.trustDomain,
      kid: newKid(),
      privateKey: key,
      publicKey: createPublicKey(key),
      notAfter,
      ...(this.#o.jwtIssuer === undefined ? {} : { issuer: this.#o.jwtIssuer }),
    });
    await this.#o.datastore.updateBundle(this.#o.trustDomain, (cur) =>
      cur.with({ jwtAuthorities: [...cur.jwtAuthorities, [authority.kid, authority.publicKey] as const] }),
    );
    this.#jwt.next = { slot, status: 'prepared', authority, window: { issuedAt: now, notAfter } };
    this.#rotated('jwt', 'prepared', authority.kid);
    this.#o.logger?.info?.('ca: prepared JWT authority', { slot, kid: authority.kid });
  }

  #activateJwt(): void {
    const next = this.#jwt.next;
    if (next === undefined) return;
    const previous = this.#jwt.current;
    if (previous !== undefined) {
      this.#retiredJwt.set(previous.authority.kid, previous.window.notAfter);
      this.#retired.push(jwtRecord(previous, 'old'));
    }
    this.#jwt = { current: { ...next, status: 'active' } };
    this.#rotated('jwt', 'activated', next.authority.kid);
    this.#o.logger?.info?.('ca: activated JWT authority', { slot: next.slot, kid: next.authority.kid });
  }

  /** Writes the journal, and this server's keys' statuses to the datastore for every server to see. */
  async #persist(): Promise<void> {
    await this.#writeJournal();
    const records = [
      ...this.#retired.splice(0),
      ...[this.#x509.current, this.#x509.next].flatMap((s) =>
        s === undefined ? [] : [x509Record(s, s.status)],
      ),
      ...[this.#jwt.current, this.#jwt.next].flatMap((s) =>
        s === undefined ? [] : [jwtRecord(s, s.status)],
      ),
    ];
    for (const r of records) await this.#o.datastore.recordAuthority(r);
  }

  async #readJournal(): Promise<Journal> {
    if (this.#o.journalPath === undefined) return { x509: [], jwt: [] };
    try {
      return JSON.parse(await readFile(this.#o.journalPath, 'utf8')) as Journal;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return { x509: [], jwt: [] };
      throw new TesseraError(
        TesseraErrorCode.KEY_FILE,
        `ca: cannot read the authority journal ${this.#o.journalPath}: ${(err as Error).message}`,
        {
          cause: err,
        },
      );
    }
  }

  async #writeJournal(): Promise<void> {
    const path = this.#o.journalPath;
    if (path === undefined) return;
    const journal: Journal = {
      x509: [this.#x509.current, this.#x509.next].flatMap((s) =>
        s === undefined
          ? []
          : [
              {
                slot: s.slot,
                status: s.status,
                certificate: s.authority.certificate.toString(),
                issuedAt: s.window.issuedAt.toISOString(),
              },
            ],
      ),
      jwt: [
        ...[this.#jwt.current, this.#jwt.next].flatMap((s) =>
          s === undefined
            ? []
            : [
                {
                  slot: s.slot,
                  status: s.status,
                  kid: s.authority.kid,
                  issuedAt: s.window.issuedAt.toISOString(),
                  notAfter: s.window.notAfter.toISOString(),
                },
              ],
        ),
        ...[...this.#retiredJwt].map(([kid, notAfter]) => ({
          slot: 'A' as SlotId,
          status: 'old' as Status,
          kid,
          issuedAt: '',
          notAfter: notAfter.toISOString(),
        })),
      ],
    };
    const tmp = `${path}.tmp-${process.pid}`;
    const fh = await open(tmp, 'w', 0o600);
    try {
      await fh.writeFile(JSON.stringify(journal, null, 2));
      await fh.sync();
    } finally {
      await fh.close();
    }
    await rename(tmp, path);
  }
}

function x509Record(s: X509Slot, status: Status): Omit<AuthorityRecord, 'tainted' | 'revoked'> {
  return {
    kind: 'x509',
    id: s.authority.id,
    status,
    notAfter: s.authority.notAfter,
    certificate: s.authority.certificate.toString(),
  };
}

function jwtRecord(s: JwtSlot, status: Status): Omit<AuthorityRecord, 'tainted' | 'revoked'> {
  return { kind: 'jwt', id: s.authority.kid, status, notAfter: s.window.notAfter, certificate: '' };
}
