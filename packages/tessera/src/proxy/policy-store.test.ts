// The policies in force in a proxy, as the listeners ask them: a decision that cannot be made is a
// denial with the reason logged, and the store goes on deciding.
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { makeTempDir, type TempDir } from '@tessera/testkit';
import { createLogger } from '../common/log.js';
import type { PolicyRequest } from './policy/types.js';
import { PolicyStore } from './policy-store.js';

const POLICY = `apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: catalogue, namespace: sock-shop}
spec:
  action: ALLOW
  rules:
  - from: [{source: {principals: ["spiffe://example.org/vm/catalog-client"]}}]
    when: [{key: "request.headers[x-team]", values: ["shop"]}]
`;

describe('PolicyStore.decide', () => {
  let tmp: TempDir;
  before(async () => {
    tmp = await makeTempDir('policy-store-');
    writeFileSync(join(tmp.path, 'catalogue.yaml'), POLICY);
  });
  after(() => tmp?.cleanup());

  it('denies a request the engine cannot evaluate, logs why, and decides the next one', () => {
    const lines: string[] = [];
    const store = new PolicyStore({
      paths: [tmp.path],
      workload: { namespace: 'sock-shop', labels: {} },
      protocols: ['http'],
      logger: createLogger({ level: 'info', format: 'json', write: (l) => lines.push(l) }),
    });
    const request = (headers: Readonly<Record<string, string>>): PolicyRequest => ({
      protocol: 'http',
      sourcePrincipal: 'spiffe://example.org/vm/catalog-client',
      http: { method: 'GET', path: '/catalogue', host: 'catalogue', headers },
    });
    // Headers whose every read throws: the engine cannot evaluate the when condition.
    const hostile = new Proxy({} as Record<string, string>, {
      get() {
        throw new Error('headers unreadable');
      },
    });
    const d = store.decide('http', request(hostile));
    assert.equal(d.allowed, false);
    assert.match(d.reason, /policy engine failed on this request: headers unreadable/);
    const logged = lines
      .map((l) => JSON.parse(l) as Record<string, unknown>)
      .find((l) => l.level === 'error');
    assert.equal(logged?.msg, 'policy evaluation failed; the request is denied');
    assert.equal(logged?.principal, 'spiffe://example.org/vm/catalog-client');
    assert.equal(store.decide('http', request({ 'x-team': 'shop' })).allowed, true);
    assert.equal(store.decide('http', request({ 'x-team': 'orders' })).allowed, false);
    store.close();
  });
});
