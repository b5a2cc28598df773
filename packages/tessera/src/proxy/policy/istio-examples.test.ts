// Istio's documented AuthorizationPolicy examples, through the public API: the policies as the pages
// apply them, the requests the pages make, the decisions the pages show.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { createPolicyEngine, parsePolicies } from './index.js';
import { ISTIO_EXAMPLES } from './istio-examples.test-data.js';

describe("Istio's documented examples", () => {
  for (const example of ISTIO_EXAMPLES) {
    it(example.name, () => {
      const { policies, warnings } = parsePolicies(example.policies, 'example.yaml');
      for (const re of example.loadWarnings ?? []) {
        assert.ok(
          warnings.some((w) => re.test(w.message)),
          `no load warning matches ${re}: ${JSON.stringify(warnings)}`,
        );
      }
      if (example.loadWarnings === undefined) assert.deepEqual(warnings, []);
      for (const r of example.requests) {
        const engine = createPolicyEngine(policies, r.workload ?? example.workload);
        const d = engine.evaluate(r.request);
        const context = `${example.source}\n  ${r.what}: ${d.reason}`;
        assert.equal(d.allowed, r.allowed, context);
        assert.equal(d.decidedBy?.policy, r.decidedBy, context);
        assert.deepEqual(
          d.audited.map((a) => a.policy),
          r.audited ?? [],
          context,
        );
        if (r.decidedBy !== undefined) assert.match(d.reason, new RegExp(`${r.decidedBy} rule \\d`), context);
      }
      if (example.tcpWarnings !== undefined) {
        const tcp = createPolicyEngine(policies, example.workload, { protocol: 'tcp' });
        assert.equal(tcp.warnings.length, example.tcpWarnings.length, JSON.stringify(tcp.warnings));
        for (const re of example.tcpWarnings) {
          assert.ok(
            tcp.warnings.some(
              (w) => re.test(w.message) && w.file === 'example.yaml' && typeof w.line === 'number',
            ),
            `no TCP warning matches ${re}: ${JSON.stringify(tcp.warnings)}`,
          );
        }
      }
    });
  }
});
