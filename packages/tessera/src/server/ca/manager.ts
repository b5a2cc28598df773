import { createPublicKey, type KeyObject, X509Certificate } from 'node:crypto';
import { open, readFile, rename } from 'node:fs/promises';
import type { Logger, SpiffeBundle, TrustDomain } from 'spiffe';
import { TesseraError, TesseraErrorCode } from '../../common/errors.js';
import type { DistinguishedName } from '../../common/x509.js';
import type { Datastore } from '../datastore/types.js';
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

/** What this server remembers about its own keys (the bundle in the datastore is shared). */
interface Journal {
  x509: X509JournalEntry[];
  jwt: JwtJournalEntry[];
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
    await this.#writeJournal();
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

  /** A prepared X.509 authority waiting for activation, if any. */
  get nextX509(): X509Authority | undefined {
    return this.#x509.next?.authority;
  }

  /** One step of the rotation loop: prepare or activate what the schedule says, at `now`. */
  async rotate(): Promise<{ x509: 'none' | 'prepare' | 'activate'; jwt: 'none' | 'prepare' | 'activate' }> {
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
    if (xStep !== 'none' || jStep !== 'none') await this.#writeJournal();
    return { x509: xStep, jwt: jStep };
  }

  /** Drops expired authorities from the bundle (nothing they signed can still be valid). */
  async prune(): Promise<SpiffeBundle> {
    const now = this.#o.now().getTime();
    return this.#o.datastore.updateBundle(this.#o.trustDomain, (cur) =>
      cur.with({
        x509Authorities: cur.x509Authorities.filter((c) => new Date(c.validTo).getTime() > now),
        // Only this server's retired keys are removed; other servers sharing the bundle prune theirs.
        jwtAuthorities: [...cur.jwtAuthorities].filter(
          ([kid]) => (this.#retiredJwt.get(kid)?.getTime() ?? Number.POSITIVE_INFINITY) > now,
        ),
      }),
    );
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
    this.#o.logger?.info?.('ca: prepared X.509 authority', {
      slot,
      notAfter: authority.notAfter.toISOString(),
    });
  }

  #activateX509(): void {
    const next = this.#x509.next;
    if (next === undefined) return;
    this.#x509 = { current: { ...next, status: 'active' } };
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
    this.#o.logger?.info?.('ca: prepared JWT authority', { slot, kid: authority.kid });
  }

  #activateJwt(): void {
    const next = this.#jwt.next;
    if (next === undefined) return;
    const previous = this.#jwt.current;
    if (previous !== undefined) this.#retiredJwt.set(previous.authority.kid, previous.window.notAfter);
    this.#jwt = { current: { ...next, status: 'active' } };
    this.#o.logger?.info?.('ca: activated JWT authority', { slot: next.slot, kid: next.authority.kid });
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
