import type { JwtBundle } from '../bundle/jwt-bundle.js';
import type { JwtBundleSet, X509BundleSet } from '../bundle/set.js';
import type { JwtBundleSource, X509BundleSource } from '../bundle/source.js';
import type { X509Bundle } from '../bundle/x509-bundle.js';
import { ErrorCode, SpiffeError } from '../errors.js';
import type { TrustDomain } from '../spiffeid/trust-domain.js';
import type { JwtSvid } from '../svid/jwt-svid.js';
import type { JwtSvidParams, JwtSvidSource, X509SvidSource } from '../svid/source.js';
import type { X509Crl, X509CrlSource } from '../svid/x509-crl.js';
import type { X509Svid } from '../svid/x509-svid.js';
import type { X509Context } from './client.js';
import { LiveSource, type SourceOptions } from './source-base.js';

/** Chooses the SVID a source serves among those the Workload API returned (first = default). */
export type X509SvidPicker = (svids: readonly X509Svid[]) => X509Svid;

/** A picker that serves the SVID with `hint`, or the default (first) one when none carries it. */
export function pickByHint(hint: string): X509SvidPicker {
  return (svids) => svids.find((s) => s.hint === hint) ?? (svids[0] as X509Svid);
}

export interface X509SourceOptions extends SourceOptions {
  picker?: X509SvidPicker;
}

/**
 * The current X509-SVID and X.509 bundles of this process, kept up to date by a Workload API
 * watch; pass it to the TLS helpers as both the SVID source and the bundle source. Emits 'update'
 * after each rotation.
 */
export class X509Source extends LiveSource implements X509SvidSource, X509BundleSource, X509CrlSource {
  readonly #picker: X509SvidPicker;
  #context: X509Context | undefined;

  constructor(options: X509SourceOptions = {}) {
    super('x509source', 'an X509-SVID', options);
    this.#picker = options.picker ?? ((svids) => svids[0] as X509Svid);
    this.run(
      this.client.watchX509Context(
        {
          onUpdate: (ctx) => {
            this.#context = ctx;
            this.updated(true);
          },
          onError: (err) => this.recordError(err),
        },
        this.stopSignal,
      ),
    );
  }

  /** Creates a source and waits until it has its first SVID (abort with `options.signal`). */
  static async create(options: X509SourceOptions = {}): Promise<X509Source> {
    return LiveSource.whenReady(new X509Source(options), options.readyTimeoutMs);
  }

  getX509Svid(): X509Svid {
    return this.#picker(this.#current().svids);
  }

  /** Every SVID the Workload API returned, in its order. */
  getX509Svids(): readonly X509Svid[] {
    return this.#current().svids;
  }

  getX509BundleForTrustDomain(trustDomain: TrustDomain): X509Bundle {
    return this.#current().bundles.getX509BundleForTrustDomain(trustDomain);
  }

  /** All current X.509 bundles (own trust domain and federated). */
  getX509Bundles(): X509BundleSet {
    return this.#current().bundles;
  }

  /**
   * The CRLs of the latest update (one per X.509 authority of a Tessera agent's trust domain; none
   * from SPIRE): pass the source as `revocation` to the TLS helpers to refuse revoked peers.
   */
  getX509Crls(): readonly X509Crl[] {
    return this.#current().crls;
  }

  #current(): X509Context {
    this.assertOpen();
    if (this.#context === undefined) throw notReady('x509source');
    return this.#context;
  }
}

/**
 * JWT bundles kept current by a watch, and JWT-SVIDs fetched from the Workload API on demand
 * (not cached: the agent mints and caches them).
 */
export class JwtSource extends LiveSource implements JwtSvidSource, JwtBundleSource {
  #bundles: JwtBundleSet | undefined;

  constructor(options: SourceOptions = {}) {
    super('jwtsource', 'JWT bundles', options);
    this.run(
      this.client.watchJwtBundles(
        {
          onUpdate: (set) => {
            this.#bundles = set;
            this.updated(true);
          },
          onError: (err) => this.recordError(err),
        },
        this.stopSignal,
      ),
    );
  }

  static async create(options: SourceOptions = {}): Promise<JwtSource> {
    return LiveSource.whenReady(new JwtSource(options), options.readyTimeoutMs);
  }

  async fetchJwtSvid(params: JwtSvidParams): Promise<JwtSvid> {
    this.assertOpen();
    return this.client.fetchJwtSvid(params, { signal: this.stopSignal });
  }

  async fetchJwtSvids(params: JwtSvidParams): Promise<JwtSvid[]> {
    this.assertOpen();
    return this.client.fetchJwtSvids(params, { signal: this.stopSignal });
  }

  getJwtBundleForTrustDomain(trustDomain: TrustDomain): JwtBundle {
    this.assertOpen();
    if (this.#bundles === undefined) throw notReady('jwtsource');
    return this.#bundles.getJwtBundleForTrustDomain(trustDomain);
  }
}

/** X.509 and JWT bundles kept current by two watches; for services that verify peers but hold no SVID. */
export class BundleSource extends LiveSource implements X509BundleSource, JwtBundleSource {
  #x509: X509BundleSet | undefined;
  #jwt: JwtBundleSet | undefined;

  constructor(options: SourceOptions = {}) {
    super('bundlesource', 'X.509 and JWT bundles', options);
    const onError = (err: Parameters<LiveSource['recordError']>[0]) => this.recordError(err);
    this.run(
      this.client.watchX509Bundles(
        {
          onUpdate: (set) => {
            this.#x509 = set;
            this.updated(this.#jwt !== undefined);
          },
          onError,
        },
        this.stopSignal,
      ),
    );
    this.run(
      this.client.watchJwtBundles(
        {
          onUpdate: (set) => {
            this.#jwt = set;
            this.updated(this.#x509 !== undefined);
          },
          onError,
        },
        this.stopSignal,
      ),
    );
  }

  static async create(options: SourceOptions = {}): Promise<BundleSource> {
    return LiveSource.whenReady(new BundleSource(options), options.readyTimeoutMs);
  }

  getX509BundleForTrustDomain(trustDomain: TrustDomain): X509Bundle {
    this.assertOpen();
    if (this.#x509 === undefined) throw notReady('bundlesource');
    return this.#x509.getX509BundleForTrustDomain(trustDomain);
  }

  getX509Bundles(): X509BundleSet {
    this.assertOpen();
    if (this.#x509 === undefined) throw notReady('bundlesource');
    return this.#x509;
  }

  getJwtBundleForTrustDomain(trustDomain: TrustDomain): JwtBundle {
    this.assertOpen();
    if (this.#jwt === undefined) throw notReady('bundlesource');
    return this.#jwt.getJwtBundleForTrustDomain(trustDomain);
  }
}

function notReady(name: string): SpiffeError {
  return new SpiffeError(
    ErrorCode.WORKLOADAPI_UNAVAILABLE,
    `${name}: no update has arrived from the Workload API yet; await ready() before using the source`,
  );
}
