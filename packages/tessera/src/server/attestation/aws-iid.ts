// The aws_iid node attestor, as SPIRE's: the agent sends the EC2 instance identity document and its
// RSA-2048 PKCS#7 signature from the instance metadata service; the server verifies the signature
// with AWS's certificates (configured: a bundle, or one per region), checks the account against an
// allow list, and trusts on first use — an instance that attested once is refused another
// attestation unless allow_reattestation is set. A document is also refused when it was used within
// replay_window (on any server sharing the datastore), which makes two attestations of one document
// at the same time end with exactly one agent.
//
// Agent ID: …/tessera/agent/aws_iid/<account>/<region>/<instance id> (SPIRE: …/spire/agent/aws_iid/…).
// Selectors from the document alone: aws_iid:az:, image:id:, instance:id:, region: (SPIRE's) and
// account:id:, instance:type: (ours). Nothing here calls the EC2 or IAM API: SPIRE's tag:, sg:id:,
// sg:name: and iamrole: selectors, its instance-state and block-device checks need it (docs/attestation.md).
import { createHash, X509Certificate } from 'node:crypto';
import { readFileSync } from 'node:fs';
import type { TrustDomain } from '@tessera/spiffe';
import { absolutePath } from '../../common/config-fields.js';
import type { Field } from '../../common/config-schema.js';
import { formatDuration } from '../../common/duration.js';
import { TesseraError, TesseraErrorCode } from '../../common/errors.js';
import type { Datastore, Selector } from '../datastore/types.js';
import {
  decodeSignature,
  IidSignatureError,
  type ParsedSignedData,
  parseSignedData,
  verifySignedData,
} from './aws-iid-signature.js';
import type { NodeAttestorPlugin } from './registry.js';
import { type AttestationResult, agentId, type NodeAttestor } from './types.js';

export const AWS_IID = 'aws_iid';

/** What the agent sends: SPIRE's IIDAttestationData JSON (`document`, `rsa2048`; `signature` unused). */
export interface AwsIidPayload {
  readonly document: string;
  readonly rsa2048: string;
}

/** The fields of an instance identity document this attestor reads. */
export interface InstanceIdentityDocument {
  readonly accountId: string;
  readonly region: string;
  readonly instanceId: string;
  readonly availabilityZone?: string;
  readonly imageId?: string;
  readonly instanceType?: string;
  readonly pendingTime?: string;
}

const MAX_PAYLOAD = 64 * 1024;
const ACCOUNT_ID = /^\d{12}$/;
const REGION = /^[a-z]{2}(-[a-z]+)+-\d+$/;
const INSTANCE_ID = /^i-[0-9a-f]{8}([0-9a-f]{9})?$/;
const TOKEN = /^[a-z0-9][a-z0-9.-]*$/;

export const accountIdProblem = (v: string): string | undefined =>
  ACCOUNT_ID.test(v) ? undefined : `must be a 12-digit AWS account ID; got ${JSON.stringify(v)}`;
export const regionProblem = (v: string): string | undefined =>
  REGION.test(v) ? undefined : `must be an AWS region such as us-east-1; got ${JSON.stringify(v)}`;

export interface AwsIidConfig {
  readonly account_ids: readonly string[];
  readonly certificate_bundle_path?: string;
  readonly region_certificate_paths: Readonly<Record<string, string>>;
  readonly allow_reattestation: boolean;
  /** Milliseconds. */
  readonly replay_window: number;
}

export const AWS_IID_SERVER_CONFIG = {
  kind: 'object',
  fields: {
    // Without the EC2 API there is no "can our credentials see this instance" check (SPIRE's implicit
    // one), so the accounts are listed: any EC2 instance of any account holds a valid document.
    account_ids: {
      kind: 'list',
      of: { kind: 'string', check: accountIdProblem },
      required: true,
      minItems: 1,
      single: true,
    },
    // AWS's RSA-2048 certificates for identity documents: all in one PEM file (any region's
    // certificate verifies any document) and/or one file per region (that region's documents are
    // verified with that file's certificates only).
    certificate_bundle_path: { kind: 'string', check: absolutePath },
    region_certificate_paths: {
      kind: 'map',
      of: { kind: 'string', check: absolutePath },
      checkKey: regionProblem,
    },
    allow_reattestation: { kind: 'bool', default: false },
    replay_window: { kind: 'duration', default: '1h', min: '1s' },
  },
} as const satisfies Field & { kind: 'object' };

function failed(message: string, cause?: unknown): TesseraError {
  return new TesseraError(
    TesseraErrorCode.ATTESTATION_FAILED,
    `aws_iid: ${message}`,
    cause === undefined ? undefined : { cause },
  );
}

/** The payload as the agent sent it; throws naming what is missing. */
export function parseAwsIidPayload(payload: Uint8Array): AwsIidPayload {
  if (payload.length > MAX_PAYLOAD)
    throw failed(`the payload is ${payload.length} bytes; at most ${MAX_PAYLOAD}`);
  let v: unknown;
  try {
    v = JSON.parse(Buffer.from(payload).toString('utf8'));
  } catch (err) {
    throw failed(`the payload is not JSON: ${(err as Error).message}`, err);
  }
  if (typeof v !== 'object' || v === null || Array.isArray(v))
    throw failed('the payload is not a JSON object with "document" and "rsa2048"');
  const o = v as Record<string, unknown>;
  if (typeof o.document !== 'string' || o.document === '')
    throw failed('the payload has no "document" (the instance identity document)');
  if (typeof o.rsa2048 !== 'string' || o.rsa2048 === '')
    throw failed(
      typeof o.signature === 'string'
        ? 'the payload has only the RSA-1024 "signature"; the "rsa2048" PKCS#7 signature is required'
        : 'the payload has no "rsa2048" (the PKCS#7 signature of the document)',
    );
  return { document: o.document, rsa2048: o.rsa2048 };
}

/** The document's fields, each checked for the form AWS gives it (they become ID path segments). */
export function parseInstanceIdentityDocument(content: Buffer): InstanceIdentityDocument {
  let v: unknown;
  try {
    v = JSON.parse(content.toString('utf8'));
  } catch (err) {
    throw failed(`the instance identity document is not JSON: ${(err as Error).message}`, err);
  }
  if (typeof v !== 'object' || v === null || Array.isArray(v))
    throw failed('the instance identity document is not a JSON object');
  const o = v as Record<string, unknown>;
  const field = (name: string, re: RegExp, required: boolean): string | undefined => {
    const x = o[name];
    if (x === undefined || x === null) {
      if (required) throw failed(`the instance identity document has no ${name}`);
      return undefined;
    }
    if (typeof x !== 'string' || !re.test(x))
      throw failed(
        `the instance identity document's ${name} ${JSON.stringify(x)} is not of the form AWS gives it`,
      );
    return x;
  };
  const doc: Record<string, string> = {
    accountId: field('accountId', ACCOUNT_ID, true) as string,
    region: field('region', REGION, true) as string,
    instanceId: field('instanceId', INSTANCE_ID, true) as string,
  };
  for (const [name, re] of [
    ['availabilityZone', TOKEN],
    ['imageId', /^ami-[0-9a-f]{8,17}$/],
    ['instanceType', TOKEN],
    ['pendingTime', /^[0-9T:.Z+-]+$/],
  ] as const) {
    const x = field(name, re, false);
    if (x !== undefined) doc[name] = x;
  }
  return doc as unknown as InstanceIdentityDocument;
}

/** The selectors a document gives, sorted (SPIRE's names where SPIRE has the selector). */
export function awsIidSelectors(doc: InstanceIdentityDocument): Selector[] {
  const values = [
    `account:id:${doc.accountId}`,
    `instance:id:${doc.instanceId}`,
    `region:${doc.region}`,
    ...(doc.availabilityZone === undefined ? [] : [`az:${doc.availabilityZone}`]),
    ...(doc.imageId === undefined ? [] : [`image:id:${doc.imageId}`]),
    ...(doc.instanceType === undefined ? [] : [`instance:type:${doc.instanceType}`]),
  ].sort();
  return values.map((value) => ({ type: AWS_IID, value }));
}

export interface AwsIidAttestorOptions {
  readonly trustDomain: TrustDomain;
  /** Checked and recorded on: getAgent (trust on first use) and useEvidence (replay). */
  readonly datastore: Pick<Datastore, 'getAgent' | 'useEvidence'>;
  readonly accountIds: readonly string[];
  /** Certificates for any region. */
  readonly certificates: readonly X509Certificate[];
  /** Certificates for one region; a region listed here is verified with these only. */
  readonly regionCertificates: ReadonlyMap<string, readonly X509Certificate[]>;
  readonly allowReattestation: boolean;
  readonly replayWindowMs: number;
}

export class AwsIidAttestor implements NodeAttestor {
  readonly type = AWS_IID;
  readonly #o: AwsIidAttestorOptions;
  readonly #accounts: ReadonlySet<string>;

  constructor(options: AwsIidAttestorOptions) {
    if (options.accountIds.length === 0) throw new TypeError('aws_iid: no account IDs to allow');
    if (options.certificates.length === 0 && options.regionCertificates.size === 0)
      throw new TypeError('aws_iid: no AWS certificates to verify documents with');
    this.#o = options;
    this.#accounts = new Set(options.accountIds);
  }

  #certificatesFor(region: string): readonly X509Certificate[] {
    const own = this.#o.regionCertificates.get(region);
    if (own !== undefined) return own;
    if (this.#o.certificates.length > 0) return this.#o.certificates;
    throw failed(
      `no AWS certificate is configured for region ${region} (region_certificate_paths has ${[...this.#o.regionCertificates.keys()].join(', ')}; certificate_bundle_path is not set)`,
    );
  }

  async attest(payload: Uint8Array, _challenge: unknown, now: Date): Promise<AttestationResult> {
    const { document, rsa2048 } = parseAwsIidPayload(payload);
    let signed: ParsedSignedData;
    try {
      signed = parseSignedData(decodeSignature(rsa2048));
    } catch (err) {
      throw failed(`rsa2048: ${(err as Error).message}`, err);
    }
    const sent = Buffer.from(document, 'utf8');
    // AWS envelops the document in its signature; the copy sent beside it must be that one.
    if (signed.content !== undefined && !signed.content.equals(sent))
      throw failed(
        'the document is not the one signed: it differs from the document inside the rsa2048 signature',
      );
    const doc = parseInstanceIdentityDocument(sent);
    const certificates = this.#certificatesFor(doc.region);
    try {
      verifySignedData(signed, sent, certificates);
    } catch (err) {
      if (!(err instanceof IidSignatureError)) throw err;
      throw failed(`rsa2048 (instance ${doc.instanceId}, region ${doc.region}): ${err.message}`, err);
    }
    if (!this.#accounts.has(doc.accountId))
      throw failed(
        `account ${doc.accountId} (instance ${doc.instanceId}) is not in account_ids (${[...this.#accounts].join(', ')})`,
      );
    const spiffeId = agentId(
      this.#o.trustDomain,
      AWS_IID,
      `${doc.accountId}/${doc.region}/${doc.instanceId}`,
    );
    // Trust on first use: checked before the document is recorded, so a refused attempt (someone
    // else's copy of the document) does not hold the document back from the instance later.
    const existing = await this.#o.datastore.getAgent(spiffeId);
    if (existing !== undefined && !this.#o.allowReattestation)
      throw failed(
        `instance ${doc.instanceId} has already attested as ${spiffeId}${existing.banned ? ' (banned)' : ''}; an instance attests once (trust on first use): evict that agent (tessera agent evict --spiffe-id ${spiffeId}) to let it attest again, or set allow_reattestation`,
      );
    const digest = createHash('sha256').update(sent).digest('hex');
    const fresh = await this.#o.datastore.useEvidence(
      AWS_IID,
      digest,
      new Date(now.getTime() + this.#o.replayWindowMs),
      now,
    );
    if (!fresh)
      throw failed(
        `this instance identity document (instance ${doc.instanceId}) was already used to attest within replay_window (${formatDuration(this.#o.replayWindowMs)}); a replay is refused`,
      );
    return { spiffeId, selectors: awsIidSelectors(doc) };
  }
}

function readCertificates(key: string, file: string): X509Certificate[] {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    throw new Error(
      `${key}: cannot read ${file}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`,
      {
        cause: err,
      },
    );
  }
  const blocks = text.match(/-----BEGIN CERTIFICATE-----[\s\S]*?-----END CERTIFICATE-----/g) ?? [];
  if (blocks.length === 0) throw new Error(`${key}: ${file} holds no PEM certificate`);
  return blocks.map((b, i) => {
    let cert: X509Certificate;
    try {
      cert = new X509Certificate(b);
    } catch (err) {
      throw new Error(`${key}: certificate ${i + 1} of ${file} is unreadable: ${(err as Error).message}`, {
        cause: err,
      });
    }
    if (cert.publicKey.asymmetricKeyType !== 'rsa')
      throw new Error(
        `${key}: certificate ${i + 1} of ${file} has a key of type ${cert.publicKey.asymmetricKeyType}, not RSA; use AWS's RSA-2048 certificates (the DSA and RSA-1024 ones are for the other signatures)`,
      );
    return cert;
  });
}

export const awsIidServerPlugin: NodeAttestorPlugin = {
  name: AWS_IID,
  config: AWS_IID_SERVER_CONFIG,
  create(config, ctx) {
    const c = config as AwsIidConfig;
    if (c.certificate_bundle_path === undefined && Object.keys(c.region_certificate_paths).length === 0)
      throw new Error(
        "set certificate_bundle_path (a PEM file of AWS's RSA-2048 certificates for instance identity documents) or region_certificate_paths (region: PEM file)",
      );
    const certificates =
      c.certificate_bundle_path === undefined
        ? []
        : readCertificates('certificate_bundle_path', c.certificate_bundle_path);
    const regionCertificates = new Map(
      Object.entries(c.region_certificate_paths).map(([region, file]) => [
        region,
        readCertificates(`region_certificate_paths.${region}`, file),
      ]),
    );
    ctx.logger.info('aws_iid: enabled', {
      accounts: c.account_ids.join(','),
      certificates: certificates.length,
      regions: [...regionCertificates.keys()].join(','),
      allow_reattestation: c.allow_reattestation,
    });
    return new AwsIidAttestor({
      trustDomain: ctx.trustDomain,
      datastore: ctx.datastore,
      accountIds: c.account_ids,
      certificates,
      regionCertificates,
      allowReattestation: c.allow_reattestation,
      replayWindowMs: c.replay_window,
    });
  },
};
