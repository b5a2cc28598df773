// Registry records on the wire (tessera.common.v1): one conversion, used by the agent and admin APIs.
import { create, type MessageInitShape } from '@bufbuild/protobuf';
import type { SpiffeBundle } from '@tessera/spiffe';
import { type Bundle, BundleSchema, type Entry, EntrySchema } from '../../gen/tessera/common/v1/types_pb.js';
import type { EntryInput, RegistrationEntry } from '../datastore/types.js';

const seconds = (d: Date | undefined) => (d === undefined ? 0n : BigInt(Math.floor(d.getTime() / 1000)));

export function entryToProto(e: RegistrationEntry): Entry {
  return create(EntrySchema, {
    id: e.id,
    spiffeId: e.spiffeId,
    parentId: e.parentId,
    selectors: e.selectors.map((s) => ({ type: s.type, value: s.value })),
    x509SvidTtl: e.x509SvidTtl,
    jwtSvidTtl: e.jwtSvidTtl,
    dnsNames: [...e.dnsNames],
    federatesWith: [...e.federatesWith],
    admin: e.admin,
    downstream: e.downstream,
    hint: e.hint,
    expiresAt: seconds(e.expiresAt),
    metadata: { ...e.metadata },
    revision: BigInt(e.revision),
    createdAt: seconds(e.createdAt),
    updatedAt: seconds(e.updatedAt),
  });
}

/** The writable fields of a wire entry (id, revision and times are the server's). */
export function entryInputFromProto(e: MessageInitShape<typeof EntrySchema> | Entry): EntryInput {
  const expires = Number(e.expiresAt ?? 0n);
  return {
    spiffeId: e.spiffeId ?? '',
    parentId: e.parentId ?? '',
    selectors: (e.selectors ?? []).map((s) => ({ type: s.type ?? '', value: s.value ?? '' })),
    x509SvidTtl: e.x509SvidTtl ?? 0,
    jwtSvidTtl: e.jwtSvidTtl ?? 0,
    dnsNames: [...(e.dnsNames ?? [])],
    federatesWith: [...(e.federatesWith ?? [])],
    admin: e.admin ?? false,
    downstream: e.downstream ?? false,
    hint: e.hint ?? '',
    ...(expires > 0 ? { expiresAt: new Date(expires * 1000) } : {}),
    metadata: { ...(e.metadata ?? {}) },
  };
}

export function bundleToProto(b: SpiffeBundle): Bundle {
  return create(BundleSchema, {
    trustDomain: b.trustDomain.name,
    spiffeBundle: new TextEncoder().encode(b.marshal()),
    sequence: b.sequenceNumber ?? 0n,
  });
}
