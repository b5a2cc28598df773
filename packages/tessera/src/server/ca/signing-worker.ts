// A signing thread of the SigningPool: it holds copies of the X.509 authorities (certificate and
// private key, cloned into this thread by postMessage) and issues X509-SVIDs from CSRs, so a batch
// of CSRs uses every core. Nothing here logs or audits; the main thread does, from the results.
import { X509Certificate } from 'node:crypto';
import { parentPort } from 'node:worker_threads';
import { parseTrustDomain } from '@tessera/spiffe';
import { isTesseraError } from '../../common/errors.js';
import type { PoolRequest, PoolResponse } from './signing-pool.js';
import { X509Authority } from './x509-authority.js';

const authorities = new Map<string, X509Authority>();

parentPort?.on('message', (req: PoolRequest) => {
  if (req.type === 'authority') {
    authorities.set(
      req.id,
      new X509Authority(
        parseTrustDomain(req.trustDomain),
        new X509Certificate(req.certificate),
        req.privateKey,
        req.upstreamChain.map((c) => new X509Certificate(c)),
      ),
    );
    // Authorities are kept until the pool says otherwise (rotation keeps at most a few alive).
    for (const id of req.drop) authorities.delete(id);
    return;
  }
  const authority = authorities.get(req.authority);
  const now = new Date(req.now);
  const outcomes: PoolResponse['outcomes'] = req.items.map((item) => {
    if (authority === undefined)
      return { ok: false, code: 'INTERNAL', message: 'ca: signing thread has no such authority' };
    try {
      const issued = authority.issueX509Svid({
        csr: item.csr,
        spiffeId: item.spiffeId,
        dnsNames: item.dnsNames,
        ttlMs: item.ttlMs,
        now,
      });
      return {
        ok: true,
        chainDer: [...issued.chainDer],
        expiresAt: issued.expiresAt.getTime(),
        serial: issued.serial,
      };
    } catch (err) {
      return isTesseraError(err)
        ? { ok: false, code: err.code, message: err.message }
        : { ok: false, code: 'INTERNAL', message: (err as Error).message };
    }
  });
  parentPort?.postMessage({ id: req.id, outcomes } satisfies PoolResponse);
});
