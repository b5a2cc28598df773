import type { SpiffeBundle, TrustDomain } from '@tessera/spiffe';

/** A workload-attestation selector, `type:value` (e.g. `unix:uid:1000`: type `unix`, value `uid:1000`). */
export interface Selector {
  readonly type: string;
  readonly value: string;
}

/** What an operator registers: who (selectors, under which parent) gets which SPIFFE ID, and how. */
export interface EntryInput {
  spiffeId: string;
  /** The agent's SPIFFE ID, or another entry's SPIFFE ID for node aliases. */
  parentId: string;
  selectors: readonly Selector[];
  /** Seconds; 0 = the server default. */
  x509SvidTtl?: number;
  jwtSvidTtl?: number;
  dnsNames?: readonly string[];
  /** Trust domain names whose bundles the workload receives. */
  federatesWith?: readonly string[];
  admin?: boolean;
  downstream?: boolean;
  hint?: string;
  /** The entry stops being served after this time. */
  expiresAt?: Date;
  /** Free-form owner metadata (team, ticket, contact), kept for offboarding. */
  metadata?: Readonly<Record<string, string>>;
}

export interface RegistrationEntry extends Required<Omit<EntryInput, 'expiresAt'>> {
  readonly id: string;
  readonly expiresAt: Date | undefined;
  /** Increases on every change; an update must name the revision it read. */
  readonly revision: number;
  readonly createdAt: Date;
  readonly updatedAt: Date;
}

export interface ListEntriesOptions {
  bySpiffeId?: string;
  byParentId?: string;
  /** Entries carrying this selector (among others). */
  bySelector?: Selector;
  /** Default 100, at most 1000. */
  pageSize?: number;
  /** From the previous page's nextPageToken. */
  pageToken?: string;
}

export interface EntryPage {
  entries: RegistrationEntry[];
  /** Absent on the last page. */
  nextPageToken?: string;
}

export interface JoinTokenInput {
  /** The secret; only its SHA-256 is stored. */
  token: string;
  expiresAt: Date;
  /** A fixed agent name for the agent that uses it (else one is derived). */
  agentName?: string;
}

export interface ConsumedJoinToken {
  expiresAt: Date;
  agentName: string | undefined;
}

/** A node that attested: its SPIFFE ID, how it proved itself, and the serial of its current SVID. */
export interface AttestedAgent {
  readonly spiffeId: string;
  /** The node attestor that vouched for it (`join_token`, `x509pop`). */
  readonly attestor: string;
  /** Node selectors from attestation (`x509pop:subject:cn:web-1`), matched by node-alias entries. */
  readonly selectors: readonly Selector[];
  /** Serial (hex) of the agent SVID in use; calls with any other certificate are refused. */
  readonly serial: string;
  /** Serial of the SVID before the last renewal, accepted until the agent switches. */
  readonly previousSerial: string;
  /** When the current agent SVID expires. */
  readonly expiresAt: Date;
  /** A banned agent cannot call the agent API or attest again until evicted. */
  readonly banned: boolean;
  readonly createdAt: Date;
  readonly updatedAt: Date;
}

export interface AgentAttestationInput {
  spiffeId: string;
  attestor: string;
  selectors: readonly Selector[];
  serial: string;
  expiresAt: Date;
}

export interface ListAgentsOptions {
  bySelector?: Selector;
  banned?: boolean;
  pageSize?: number;
  pageToken?: string;
}

export interface AgentPage {
  agents: AttestedAgent[];
  nextPageToken?: string;
}

/** An authority (signing key) as the datastore keeps it, shared by every server of the trust domain. */
export interface AuthorityRecord {
  readonly kind: 'x509' | 'jwt';
  /** X.509: subject key ID (hex); JWT: kid. */
  readonly id: string;
  /** As its own server last recorded it. */
  readonly status: 'prepared' | 'active' | 'old';
  readonly notAfter: Date;
  /** X.509: the CA certificate (PEM); JWT: empty. */
  readonly certificate: string;
  readonly tainted: boolean;
  readonly revoked: boolean;
}

/** An X509-SVID a server of the trust domain issued, kept until it expires so it can be revoked. */
export interface X509SvidRecord {
  /** Upper-case hex without leading zeros (normalizeSerial). */
  readonly serial: string;
  /** Subject key ID (hex) of the X.509 authority that signed it. */
  readonly authorityId: string;
  readonly spiffeId: string;
  /** The registration entry it was issued for; empty for `tessera x509 mint`. */
  readonly entryId: string;
  readonly expiresAt: Date;
}

/** A revoked X509-SVID, on its authority's CRL until it expires. */
export interface X509Revocation extends X509SvidRecord {
  readonly revokedAt: Date;
  /** RFC 5280 CRLReason code. */
  readonly reason: number;
}

/** The current CRL of one X.509 authority, signed by the server holding its key. */
export interface StoredX509Crl {
  readonly authorityId: string;
  readonly number: bigint;
  /** DER. */
  readonly der: Buffer;
  /** When the authority (and so every certificate on the CRL) expires: the CRL is dropped then. */
  readonly notAfter: Date;
  readonly updatedAt: Date;
}

/** A federation relationship created through the admin API (stored); config ones are not stored. */
export interface StoredFederationRelationship {
  readonly trustDomain: string;
  readonly bundleEndpointUrl: string;
  readonly profile: 'https_spiffe' | 'https_web';
  /** https_spiffe; empty for https_web. */
  readonly endpointSpiffeId: string;
  /** https_web with a private CA: its PEM roots; empty = the system's. */
  readonly caBundlePem: string;
  readonly createdAt: Date;
  readonly updatedAt: Date;
}

/**
 * What changed, told to change-feed listeners after the change is committed, with its revision: a
 * gapless number, in commit order, shared by every server on the datastore. `resync` means the feed
 * found itself inconsistent (e.g. it was away longer than events are kept): listeners re-read
 * whatever they hold; changes up to `revision` are in what they read.
 */
export type DatastoreChange = { readonly revision: number } & (
  | { readonly kind: 'entry'; readonly op: 'upsert' | 'delete'; readonly entry: RegistrationEntry }
  | { readonly kind: 'agent'; readonly op: 'upsert' | 'ban' | 'delete'; readonly spiffeId: string }
  | { readonly kind: 'join_token'; readonly op: 'create' | 'use' }
  | { readonly kind: 'bundle'; readonly op: 'update' | 'delete'; readonly trustDomain: string }
  | { readonly kind: 'federation'; readonly op: 'upsert' | 'delete'; readonly trustDomain: string }
  | {
      readonly kind: 'authority';
      readonly op: 'record' | 'taint' | 'revoke';
      readonly authorityKind: 'x509' | 'jwt';
      readonly id: string;
    }
  | { readonly kind: 'revocation'; readonly op: 'revoke' | 'prune'; readonly authorityId: string }
  | { readonly kind: 'crl'; readonly op: 'update'; readonly authorityId: string }
  | { readonly kind: 'resync' }
);

/** The registry's storage: SQLite by default, PostgreSQL for shared deployments. */
export interface Datastore {
  /**
   * Subscribes to the change feed: every committed change, whichever server made it, told once, in
   * revision order. A write through this datastore resolves after its own changes were told here.
   * Returns the unsubscribe function.
   */
  onChange(listener: (change: DatastoreChange) => void): () => void;
  /** The revision of the last change told to listeners. */
  readonly revision: number;
  /**
   * Every entry, read in one consistent snapshot, with the revision it is current at: changes with a
   * higher revision are not in it.
   */
  snapshotEntries(): Promise<{ entries: RegistrationEntry[]; revision: number }>;
  createEntry(input: EntryInput): Promise<RegistrationEntry>;
  /** All or none, in one transaction. */
  createEntries(inputs: readonly EntryInput[]): Promise<RegistrationEntry[]>;
  getEntry(id: string): Promise<RegistrationEntry | undefined>;
  /** Replaces the entry's fields; `revision` must be the one read, else ERR_REVISION_CONFLICT. */
  updateEntry(id: string, revision: number, input: EntryInput): Promise<RegistrationEntry>;
  deleteEntry(id: string): Promise<void>;
  listEntries(options?: ListEntriesOptions): Promise<EntryPage>;
  countEntries(): Promise<number>;
  createJoinToken(input: JoinTokenInput): Promise<void>;
  /**
   * Records that a node attestor used a piece of evidence (`digest`, e.g. the SHA-256 of a token or
   * a signed document) until `expiresAt`: true the first time, false when it was used before and
   * has not expired — a replay, on any server sharing the datastore. Expired records are dropped.
   */
  useEvidence(attestor: string, digest: string, expiresAt: Date, now: Date): Promise<boolean>;
  /** Uses a token once: refused when unknown, already used or expired at `now`. */
  consumeJoinToken(token: string, now: Date): Promise<ConsumedJoinToken>;
  /** The stored bundle of a trust domain (own or federated). */
  getBundle(trustDomain: TrustDomain): Promise<SpiffeBundle | undefined>;
  /**
   * Changes a trust domain's bundle atomically (servers sharing a database each add their own
   * keys): `change` gets the current bundle (empty if none) and returns the new one; when it
   * differs, it is stored with spiffe_sequence incremented.
   */
  updateBundle(
    trustDomain: TrustDomain,
    change: (current: SpiffeBundle) => SpiffeBundle,
  ): Promise<SpiffeBundle>;
  /** Every stored bundle (own and federated), by trust domain name. */
  listBundles(): Promise<SpiffeBundle[]>;
  /** Removes a (federated) trust domain's bundle; false when there was none. */
  deleteBundle(trustDomain: TrustDomain): Promise<boolean>;
  /**
   * Stores a bundle fetched from a trust domain's bundle endpoint as it was served (its own
   * spiffe_sequence kept); nothing is written when it equals the stored one. True when it changed.
   */
  storeFetchedBundle(bundle: SpiffeBundle): Promise<boolean>;
  listFederationRelationships(): Promise<StoredFederationRelationship[]>;
  getFederationRelationship(trustDomain: string): Promise<StoredFederationRelationship | undefined>;
  /**
   * Creates (`create`: refused with ERR_FEDERATION_EXISTS when one exists) or replaces (refused with
   * ERR_FEDERATION_NOT_FOUND when none does) a relationship; with `bundle`, that trust domain's
   * bundle (the one that authenticates the first fetch) is set in the same transaction.
   */
  putFederationRelationship(
    rel: Omit<StoredFederationRelationship, 'createdAt' | 'updatedAt'>,
    mode: 'create' | 'update',
    bundle?: SpiffeBundle,
  ): Promise<StoredFederationRelationship>;
  /**
   * Deletes a relationship and the trust domain's bundle in one transaction (workloads stop
   * trusting it); ERR_FEDERATION_NOT_FOUND when there is none.
   */
  deleteFederationRelationship(trustDomain: string): Promise<void>;
  /**
   * Records a successful attestation: creates the agent or, when it attested before, replaces its
   * selectors and SVID serial. Refused with ERR_AGENT_BANNED for a banned agent.
   */
  attestAgent(input: AgentAttestationInput): Promise<AttestedAgent>;
  /** After renewal: the new SVID serial becomes current, `presentedSerial` the previous one. */
  renewAgent(
    spiffeId: string,
    presentedSerial: string,
    newSerial: string,
    expiresAt: Date,
  ): Promise<AttestedAgent>;
  getAgent(spiffeId: string): Promise<AttestedAgent | undefined>;
  listAgents(options?: ListAgentsOptions): Promise<AgentPage>;
  countAgents(): Promise<number>;
  /** Bans an agent: its SVIDs stop being accepted and it cannot attest again until evicted. */
  banAgent(spiffeId: string): Promise<void>;
  /** Evicts (deletes) an agent: it must attest again; a banned agent becomes able to. */
  deleteAgent(spiffeId: string): Promise<void>;
  /** Records (or updates the status of) an authority; taint and revocation marks are kept. */
  recordAuthority(a: Omit<AuthorityRecord, 'tainted' | 'revoked'>): Promise<void>;
  listAuthorities(): Promise<AuthorityRecord[]>;
  /** Marks an authority tainted (created as `old` when not recorded yet, e.g. a bundle root). */
  taintAuthority(a: Omit<AuthorityRecord, 'tainted' | 'revoked' | 'status'>): Promise<void>;
  /** Marks a tainted authority revoked. */
  revokeAuthority(kind: 'x509' | 'jwt', id: string): Promise<void>;
  /** Records issued X509-SVIDs (one transaction); kept until they expire (pruneX509). */
  recordX509Svids(records: readonly X509SvidRecord[]): Promise<void>;
  /** Issued X509-SVIDs not expired at `now`, by serial or by entry. */
  findX509Svids(query: { serial: string } | { entryId: string }, now: Date): Promise<X509SvidRecord[]>;
  /**
   * Revokes X509-SVIDs (one transaction; one `revocation` change per authority). Returns the ones
   * newly revoked; an already revoked serial keeps its first revocation.
   */
  revokeX509Svids(revocations: readonly X509Revocation[]): Promise<X509Revocation[]>;
  /** Revocations not expired at `now`, optionally of one authority, oldest first. */
  listX509Revocations(now: Date, authorityId?: string): Promise<X509Revocation[]>;
  /**
   * Stores an authority's CRL unless a CRL with the same or a higher number is stored (another
   * server, or an older signing, raced it): true when stored (a `crl` change is told).
   */
  putX509Crl(crl: Omit<StoredX509Crl, 'updatedAt'>): Promise<boolean>;
  /** Every stored CRL whose authority has not expired at `now`. */
  listX509Crls(now: Date): Promise<StoredX509Crl[]>;
  /**
   * Drops issuance records, revocations and CRLs that expired at `now`. Returns the authorities
   * whose revocation lists lost an entry (a `revocation` prune change each), to re-sign.
   */
  pruneX509(now: Date): Promise<string[]>;
  close(): Promise<void>;
}
