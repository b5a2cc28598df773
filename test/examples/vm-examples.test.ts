// The files in examples/vm are documentation users copy: they must stay valid. The configurations
// load with the proxy's schema, and the policy decides the scenario's requests as the issue says.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { parseProxyConfig } from '@tessera/tessera/dist/proxy/config.js';
import { createPolicyEngine, loadPolicies } from '@tessera/tessera/dist/proxy/policy/index.js';

const dir = (name: string) => fileURLToPath(new URL(`../../../examples/vm/${name}`, import.meta.url));

it('examples/vm: the proxy configurations are valid and the policy decides the scenario', () => {
  const inbound = parseProxyConfig(readFileSync(dir('inbound.yaml'), 'utf8'), 'inbound.yaml');
  const outbound = parseProxyConfig(readFileSync(dir('outbound.yaml'), 'utf8'), 'outbound.yaml');
  assert.equal(inbound.inbound.length, 1);
  assert.deepEqual(outbound.outbound[0]?.server_spiffe_ids, [
    'spiffe://example.org/ns/sock-shop/sa/catalogue',
  ]);
  const { policies, warnings } = loadPolicies([dir('catalogue-allow-vm-auth.yaml')]);
  assert.deepEqual(warnings, []);
  const engine = createPolicyEngine(
    policies,
    { namespace: inbound.namespace, labels: inbound.labels, rootNamespace: inbound.root_namespace },
    { protocol: 'http' },
  );
  const decide = (principal: string, method: string, path: string) =>
    engine.evaluate({
      protocol: 'http',
      sourcePrincipal: principal,
      destinationPort: 8080,
      http: { method, path, host: 'catalogue', headers: {} },
    }).allowed;
  const vm = 'spiffe://example.org/vm/catalog-client';
  for (const path of ['/catalogue', '/catalogue/42', '/tags'])
    assert.equal(decide(vm, 'GET', path), true, path);
  assert.equal(decide(vm, 'POST', '/catalogue'), false);
  assert.equal(decide(vm, 'GET', '/orders'), false);
  assert.equal(decide('spiffe://example.org/vm/other-client', 'GET', '/tags'), false);
});
