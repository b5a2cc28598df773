// Revoking single X509-SVIDs: each X.509 authority has a CRL, signed by the server that holds its
// key and stored in the datastore, so every server of the trust domain pushes the same CRLs to its
// agents. A CRL's nextUpdate is its authority's notAfter: freshness comes from the push (agents hear
// of a new CRL at once), and a server that is down never makes what its authority signed fail
// verification because a CRL went stale.

import type { Logger } from '@tessera/spiffe';
import { normalizeSerial, parseX509Crl, type X509Crl } from '@tessera/spiffe';
import { TesseraError, TesseraErrorCode } from '../../common/errors.js';
import { signX509Crl } from '../../common/x509.js';
import type { Datastore, StoredX509Crl, X509Revocation, X509SvidRecord } from '../datastore/types.js';
import type { X509Authority } from './x509-authority.js';

/** What the revocation manager needs of the authority manager. */
export interface HeldAuthorities {
  heldX509(): ReadonlyMap<string, X509Authority>;
  onPrepareX509(hook: (authority: X509Authority) => Promise<void>): () => void;
}

export interface X509RevocationsOptions {
  datastore: Datastore;
  authority: HeldAuthorities;
  now: () => Date;
  logger?: Logger;
}

export interface RevokeResult {
  revoked: X509Revocation[];
  alreadyRevoked: X509Revocation[];
  /** CRLs this server signed for the revocation (authorities held elsewhere are signed there). */
  crls: StoredX509Crl[];
  /** For the operator: authorities whose CRL may never be signed (no server may hold the key). */
  warnings: string[];
}

export class X509Revocations {
  readonly #o: X509RevocationsOptions;
  /** The trust domain's CRLs as the datastore last said (re-read at each `crl` change). */
  #crls: StoredX509Crl[] = [];
  /** The same, parsed (what TLS verification of callers checks). */
  #parsed: X509Crl[] = [];
  readonly #listeners = new Set<() => void>();
  /** Signing runs one at a time; `#latest` is each authority's last queued or running signing. */
  #chain: Promise<unknown> = Promise.resolve();
  readonly #latest = new Map<string, Promise<StoredX509Crl | undefined>>();
  #reload: Promise<void> = Promise.resolve();
  #offs: (() => void)[] = [];

  constructor(options: X509RevocationsOptions) {
    this.#o = options;
  }

  /**
   * Signs a CRL for every held authority whose stored one is missing or lists other serials than
   * its revocations (e.g. revoked while this server was down), then follows the change feed.
   */
  async init(): Promise<void> {
    const { datastore } = this.#o;
    this.#offs.push(
      datastore.onChange((c) => {
        if (c.kind === 'revocation' && this.#o.authority.heldX509().has(c.authorityId))
          void this.#resign(c.authorityId);
        if (c.kind === 'crl' || c.kind === 'resync') void this.#refresh();
        if (c.kind === 'resync') for (const id of this.#o.authority.heldX509().keys()) void this.#resign(id);
      }),
      // A new authority has a CRL before it signs anything: a verifier that checks CRLs (Envoy)
      // refuses a certificate whose issuer has none.
      this.#o.authority.onPrepareX509(async (authority) => {
        const crl = await this.#resign(authority.id);
        if (crl === undefined) throw new Error('ca: the new X.509 authority has no CRL; preparing it again');
      }),
    );
    const now = this.#o.now();
    const stored = new Map((await datastore.listX509Crls(now)).map((c) => [c.authorityId, c]));
    for (const id of this.#o.authority.heldX509().keys()) {
      const crl = stored.get(id);
      const want = (await datastore.listX509Revocations(now, id)).map((r) => r.serial).sort();
      const have = crl === undefined ? undefined : [...parseX509Crl(crl.der).entries.keys()].sort();
      if (have === undefined || have.join() !== want.join()) await this.#resign(id);
    }
    await this.#refresh();
  }

  close(): void {
    for (const off of this.#offs.splice(0)) off();
  }

  /** The trust domain's current CRLs (DER), one per X.509 authority that has one. */
  crls(): readonly StoredX509Crl[] {
    const now = this.#o.now().getTime();
    return this.#crls.filter((c) => c.notAfter.getTime() > now);
  }

  /** The CRLs parsed: the server refuses callers with a revoked SVID (admin entries over mTLS). */
  getX509Crls(): readonly X509Crl[] {
    return this.#parsed;
  }

  /** Told after the set of CRLs changed (a new number for one of them, or one dropped). */
  onChange(listener: () => void): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }

  /**
   * Revokes the X509-SVID with `serial`, or every unexpired one issued for entry `entryId`, with an
   * RFC 5280 reason code. Refused with ERR_X509_SVID_NOT_FOUND when there is none. Resolves after
   * this server signed the CRLs of the authorities it holds.
   */
  async revoke(by: { serial: string } | { entryId: string }, reason: number): Promise<RevokeResult> {
    const { datastore } = this.#o;
    const now = this.#o.now();
    let query: { serial: string } | { entryId: string };
    if ('serial' in by) {
      try {
        query = { serial: normalizeSerial(by.serial) };
      } catch {
        throw new TesseraError(
          TesseraErrorCode.INVALID_ARGUMENT,
          `x509 revoke: serial ${JSON.stringify(by.serial)} is not a hexadecimal serial number (as openssl x509 -noout -serial prints it)`,
        );
      }
    } else query = by;
    if (!Number.isInteger(reason) || reason < 0 || reason > 10 || reason === 7)
      throw new TesseraError(
        TesseraErrorCode.INVALID_ARGUMENT,
        `x509 revoke: reason ${reason} is not an RFC 5280 CRLReason (0-6, 8-10)`,
      );
    const found = await datastore.findX509Svids(query, now);
    if (found.length === 0)
      throw new TesseraError(
        TesseraErrorCode.X509_SVID_NOT_FOUND,
        'serial' in query
          ? `x509 revoke: no unexpired X509-SVID with serial ${query.serial} was issued by this trust domain's servers; check the serial (openssl x509 -noout -serial -in svid.pem)`
          : `x509 revoke: entry ${JSON.stringify(query.entryId)} has no unexpired X509-SVIDs (tessera entry show --id ${query.entryId} checks the ID)`,
      );
    const revocations = found.map((r: X509SvidRecord) => ({ ...r, reason, revokedAt: now }));
    const fresh = await datastore.revokeX509Svids(revocations);
    // The feed told this server's listener of the revocation before the write resolved, so the
    // signing it queued (if this server holds the authority) includes it: taken now, before it ends.
    const signing = [...new Set(fresh.map((r) => r.authorityId))].flatMap((id) => {
      const p = this.#latest.get(id);
      return p === undefined ? [] : [p];
    });
    const freshSerials = new Set(fresh.map((r) => r.serial));
    const already = (await datastore.listX509Revocations(now)).filter(
      (r) => found.some((f) => f.serial === r.serial) && !freshSerials.has(r.serial),
    );
    this.#o.logger?.warn?.('ca: X509-SVIDs revoked', {
      serials: fresh.map((r) => r.serial).join(','),
      spiffe_ids: [...new Set(fresh.map((r) => r.spiffeId))].join(','),
      reason,
    });
    const crls = (await Promise.all(signing)).filter((c): c is StoredX509Crl => c !== undefined);
    // An authority signed elsewhere is fine while its server holds the key; one its server retired
    // may be held by nobody (retired keys are kept in memory only): say what to do then.
    const signed = new Set(crls.map((c) => c.authorityId));
    const records = await datastore.listAuthorities();
    const warnings = [...new Set(fresh.map((r) => r.authorityId))]
      .filter((id) => !signed.has(id))
      .flatMap((id) => {
        const a = records.find((r) => r.kind === 'x509' && r.id === id);
        return a === undefined || a.status === 'old'
          ? [
              `authority ${id} is retired: its CRL is signed only if the server that retired it has not restarted since (retired keys are kept in memory); if \`tessera x509 revoked\` shows no new CRL number for it, taint and revoke the authority (tessera authority taint|revoke --kind x509 --id ${id})`,
            ]
          : [];
      });
    for (const w of warnings) this.#o.logger?.warn?.(`ca: ${w}`);
    await this.#reload;
    return { revoked: fresh, alreadyRevoked: already, crls, warnings };
  }

  /** The unexpired revocations, oldest first. */
  list(): Promise<X509Revocation[]> {
    return this.#o.datastore.listX509Revocations(this.#o.now());
  }

  /** Drops expired records and re-signs the CRLs that lost an entry. */
  async prune(): Promise<void> {
    const ids = await this.#o.datastore.pruneX509(this.#o.now());
    await Promise.all(ids.map((id) => this.#latest.get(id)));
    await this.#refresh();
  }

  /** Queues a new CRL for held authority `id` (number + 1, every unexpired revocation of it). */
  #resign(id: string): Promise<StoredX509Crl | undefined> {
    const job = this.#chain.then(async () => {
      const authority = this.#o.authority.heldX509().get(id);
      if (authority === undefined) return undefined;
      const { datastore } = this.#o;
      for (let attempt = 0; attempt < 3; attempt++) {
        const now = this.#o.now();
        const current = (await datastore.listX509Crls(now)).find((c) => c.authorityId === id);
        const revoked = await datastore.listX509Revocations(now, id);
        const number = (current?.number ?? 0n) + 1n;
        const der = signX509Crl(authority, {
          number,
          thisUpdate: now,
          nextUpdate: authority.notAfter,
          revoked: revoked.map((r) => ({ serial: r.serial, revokedAt: r.revokedAt, reason: r.reason })),
        });
        const crl = { authorityId: id, number, der, notAfter: authority.notAfter };
        if (await datastore.putX509Crl(crl)) {
          this.#o.logger?.info?.('ca: signed a CRL', {
            authority: id,
            number: String(number),
            revoked: revoked.length,
          });
          return { ...crl, updatedAt: now };
        }
      }
      throw new Error(`three CRLs of authority ${id} raced this one; the next revocation re-signs it`);
    });
    const logged = job.catch((err: unknown) => {
      this.#o.logger?.error?.(
        'ca: signing a CRL failed; revocations of this authority wait for the next signing',
        {
          authority: id,
          error: (err as Error).message,
        },
      );
      return undefined;
    });
    this.#chain = logged;
    this.#latest.set(id, logged);
    void logged.then(() => {
      if (this.#latest.get(id) === logged) this.#latest.delete(id);
    });
    return logged;
  }

  #refresh(): Promise<void> {
    this.#reload = this.#reload
      .then(async () => {
        const next = await this.#o.datastore.listX509Crls(this.#o.now());
        const key = (l: readonly StoredX509Crl[]) => l.map((c) => `${c.authorityId}:${c.number}`).join();
        if (key(next) === key(this.#crls)) return;
        this.#crls = next;
        this.#parsed = next.map((c) => parseX509Crl(c.der));
        for (const l of this.#listeners) l();
      })
      .catch((err: unknown) => {
        this.#o.logger?.error?.('ca: reading the CRLs failed', { error: (err as Error).message });
      });
    return this.#reload;
  }
}
