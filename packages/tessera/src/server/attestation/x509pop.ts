// The x509pop node attestor: the node holds a certificate (and its key) issued by a CA the operator
// trusts for this purpose (node_attestors.x509pop.ca_bundle_path). The agent sends the chain; the
// server verifies it to one of those CAs, then sends a random nonce the agent must sign with the
// certificate's key. Agent ID: …/tessera/agent/x509pop/<SHA-256 of the leaf, hex>.
import { createHash, type KeyObject, randomBytes, sign, verify, type X509Certificate } from 'node:crypto';
import { fromBinary } from '@bufbuild/protobuf';
import { type TrustDomain, verifyCertificateChain } from '@tessera/spiffe';
import { TesseraError, TesseraErrorCode } from '../../common/errors.js';
import { X509PopPayloadSchema } from '../../gen/tessera/agent/v1/agent_pb.js';
import type { Selector } from '../datastore/types.js';
import { type AttestationResult, agentId, type NodeAttestor } from './types.js';

/** Domain separation: the node key signs this label and the nonce, never a bare server-chosen blob. */
export const X509POP_CHALLENGE_LABEL = 'tessera x509pop challenge v1\0';

function failed(message: string, cause?: unknown): TesseraError {
  return new TesseraError(
    TesseraErrorCode.ATTESTATION_FAILED,
    `x509pop: ${message}`,
    cause === undefined ? undefined : { cause },
  );
}

/** The signature algorithm's digest for a key: SHA-256 for EC and RSA (PKCS#1 v1.5), none for Ed25519. */
export function x509popDigest(keyType: string | undefined): string | null {
  return keyType === 'ed25519' || keyType === 'ed448' ? null : 'sha256';
}

function fingerprint(cert: X509Certificate): string {
  return createHash('sha256').update(cert.raw).digest('hex');
}

function selectorsOf(leaf: X509Certificate, path: readonly X509Certificate[]): Selector[] {
  const out: Selector[] = [];
  const cn = /(?:^|\n)CN=([^\n]*)/.exec(leaf.subject)?.[1];
  if (cn !== undefined && cn !== '') out.push({ type: 'x509pop', value: `subject:cn:${cn}` });
  for (const part of (leaf.subjectAltName ?? '').split(', ')) {
    const m = /^(DNS|URI|IP Address|email):(.*)$/.exec(part);
    if (m === null) continue;
    const kind = { DNS: 'dns', URI: 'uri', 'IP Address': 'ip', email: 'email' }[m[1] as string];
    out.push({ type: 'x509pop', value: `san:${kind}:${m[2]}` });
  }
  for (const ca of path.slice(1)) out.push({ type: 'x509pop', value: `ca:fingerprint:${fingerprint(ca)}` });
  return out;
}

export class X509PopAttestor implements NodeAttestor {
  readonly type = 'x509pop';
  readonly #td: TrustDomain;
  readonly #roots: readonly X509Certificate[];

  constructor(trustDomain: TrustDomain, roots: readonly X509Certificate[]) {
    if (roots.length === 0) throw new TypeError('x509pop: no CA certificates to trust');
    this.#td = trustDomain;
    this.#roots = roots;
  }

  async attest(
    payload: Uint8Array,
    challenge: (bytes: Uint8Array) => Promise<Uint8Array>,
    now: Date,
  ): Promise<AttestationResult> {
    let certificates: Uint8Array[];
    try {
      ({ certificates } = fromBinary(X509PopPayloadSchema, payload));
    } catch (err) {
      throw failed(`the payload is not an X509PopPayload message: ${(err as Error).message}`, err);
    }
    if (certificates.length === 0) throw failed('the payload holds no certificate');
    if (certificates.length > 10)
      throw failed(`the payload holds ${certificates.length} certificates; at most 10`);
    let path: X509Certificate[];
    try {
      path = verifyCertificateChain(certificates, this.#roots, { now });
    } catch (err) {
      throw failed(
        `the node certificate is not trusted: ${(err as Error).message.replace(/^x509svid: /, '')}`,
        err,
      );
    }
    const leaf = path[0] as X509Certificate;
    const nonce = randomBytes(32);
    const response = await challenge(nonce);
    const signed = Buffer.concat([Buffer.from(X509POP_CHALLENGE_LABEL), nonce]);
    let ok = false;
    try {
      ok = verify(x509popDigest(leaf.publicKey.asymmetricKeyType), signed, leaf.publicKey, response);
    } catch (err) {
      throw failed(`the challenge response is not a signature: ${(err as Error).message}`, err);
    }
    if (!ok)
      throw failed(
        `the challenge response is not signed by the key of the node certificate (subject ${leaf.subject.replaceAll('\n', ', ')})`,
      );
    return { spiffeId: agentId(this.#td, 'x509pop', fingerprint(leaf)), selectors: selectorsOf(leaf, path) };
  }
}

/** The agent's side: the response to an x509pop challenge, signed with the node certificate's key. */
export function x509popChallengeResponse(nonce: Uint8Array, nodeKey: KeyObject): Buffer {
  return sign(
    x509popDigest(nodeKey.asymmetricKeyType),
    Buffer.concat([Buffer.from(X509POP_CHALLENGE_LABEL), nonce]),
    nodeKey,
  );
}
