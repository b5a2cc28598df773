import type { TrustDomain } from '../spiffeid/trust-domain.js';
import { bundleNotFound } from './errors.js';
import type { JwtBundle } from './jwt-bundle.js';
import type { JwtBundleSource, X509BundleSource } from './source.js';
import type { SpiffeBundle } from './spiffe-bundle.js';
import type { X509Bundle } from './x509-bundle.js';

/** Bundles of several trust domains, one per trust domain, keyed by name. */
class BundleSet<B extends { readonly trustDomain: TrustDomain }> {
  readonly #bundles = new Map<string, B>();

  constructor(bundles: Iterable<B> = []) {
    for (const b of bundles) this.add(b);
  }

  /** Adds or replaces the bundle of `bundle.trustDomain`. */
  add(bundle: B): void {
    this.#bundles.set(bundle.trustDomain.name, bundle);
  }

  remove(trustDomain: TrustDomain): boolean {
    return this.#bundles.delete(trustDomain.name);
  }

  has(trustDomain: TrustDomain): boolean {
    return this.#bundles.has(trustDomain.name);
  }

  get(trustDomain: TrustDomain): B | undefined {
    return this.#bundles.get(trustDomain.name);
  }

  /** The bundles sorted by trust domain name. */
  list(): B[] {
    return [...this.#bundles.values()].sort((a, b) => a.trustDomain.compare(b.trustDomain));
  }

  get size(): number {
    return this.#bundles.size;
  }
}

export class X509BundleSet extends BundleSet<X509Bundle> implements X509BundleSource {
  getX509BundleForTrustDomain(trustDomain: TrustDomain): X509Bundle {
    const b = this.get(trustDomain);
    if (b === undefined) throw bundleNotFound('X.509', trustDomain);
    return b;
  }
}

export class JwtBundleSet extends BundleSet<JwtBundle> implements JwtBundleSource {
  getJwtBundleForTrustDomain(trustDomain: TrustDomain): JwtBundle {
    const b = this.get(trustDomain);
    if (b === undefined) throw bundleNotFound('JWT', trustDomain);
    return b;
  }
}

export class SpiffeBundleSet extends BundleSet<SpiffeBundle> implements X509BundleSource, JwtBundleSource {
  getX509BundleForTrustDomain(trustDomain: TrustDomain): X509Bundle {
    const b = this.get(trustDomain);
    if (b === undefined) throw bundleNotFound('X.509', trustDomain);
    return b.x509Bundle();
  }

  getJwtBundleForTrustDomain(trustDomain: TrustDomain): JwtBundle {
    const b = this.get(trustDomain);
    if (b === undefined) throw bundleNotFound('JWT', trustDomain);
    return b.jwtBundle();
  }
}
