import { ErrorCode, SpiffeError } from '../errors.js';
import { describeChar, isTrustDomainChar, Reason } from './charset.js';
import { SpiffeId, trustDomainOfIdString } from './spiffe-id.js';

/**
 * A SPIFFE trust domain: the authority part of a SPIFFE ID (`example.org`).
 * Immutable; compare with `equals` (names are compared byte for byte: the grammar only allows
 * lowercase).
 */
export class TrustDomain {
  /** The bare name, e.g. `example.org`. */
  readonly name: string;

  /** @internal use parseTrustDomain; the name must already be valid. */
  constructor(name: string, token: typeof internal) {
    if (token !== internal) throw new TypeError('spiffeid: use parseTrustDomain() to build a TrustDomain');
    this.name = name;
  }

  /** The trust domain's own SPIFFE ID (`spiffe://example.org`), used for CA certificates. */
  id(): SpiffeId {
    return SpiffeId.fromValidatedParts(this, '');
  }

  /** `spiffe://example.org`: the key of bundle maps on the Workload API. */
  idString(): string {
    return `spiffe://${this.name}`;
  }

  toString(): string {
    return this.name;
  }

  toJSON(): string {
    return this.name;
  }

  equals(other: TrustDomain | undefined | null): boolean {
    return other != null && other.name === this.name;
  }

  /** Orders trust domains by name, for stable output. */
  compare(other: TrustDomain): number {
    return this.name < other.name ? -1 : this.name > other.name ? 1 : 0;
  }
}

const internal: unique symbol = Symbol('TrustDomain');

/** @internal */
export function makeTrustDomain(name: string): TrustDomain {
  return new TrustDomain(name, internal);
}

/**
 * Parses a trust domain name (`example.org`), or takes the trust domain of a SPIFFE ID
 * (`spiffe://example.org/x` gives `example.org`), as go-spiffe's TrustDomainFromString does.
 * Throws a SpiffeError with code ERR_TRUST_DOMAIN_INVALID naming the rule that was broken.
 */
export function parseTrustDomain(input: string): TrustDomain {
  if (typeof input !== 'string') throw new TypeError('spiffeid: trust domain must be a string');
  if (input === '') throw tdError(input, Reason.tdMissing);
  if (input.includes(':/')) return trustDomainOfIdString(input);
  for (let i = 0; i < input.length; i++) {
    if (!isTrustDomainChar(input.charCodeAt(i))) {
      throw tdError(input, Reason.tdChars, `found ${describeChar(input, i)}`);
    }
  }
  return makeTrustDomain(input);
}

function tdError(input: string, reason: Reason, detail?: string): SpiffeError {
  return new SpiffeError(
    ErrorCode.TRUST_DOMAIN_INVALID,
    `spiffeid: invalid trust domain ${JSON.stringify(input)}: ${reason}${detail ? ` (${detail})` : ''}`,
  );
}
