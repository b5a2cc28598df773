import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { ErrorCode, isSpiffeError } from '../errors.js';
import {
  DEFAULT_WORKLOAD_API_SOCKET,
  defaultWorkloadApiAddress,
  grpcTarget,
  parseWorkloadApiAddress,
  resolveWorkloadApiAddress,
} from './address.js';

describe('parseWorkloadApiAddress', () => {
  const valid: [string, string][] = [
    ['unix:///run/tessera/agent.sock', 'unix:///run/tessera/agent.sock'],
    ['unix:/run/tessera/agent.sock', 'unix:///run/tessera/agent.sock'],
    ['tcp://127.0.0.1:8000', 'ipv4:127.0.0.1:8000'],
    ['tcp://[::1]:8000', 'ipv6:[::1]:8000'],
  ];
  for (const [uri, target] of valid) {
    it(`accepts ${uri}`, () => assert.equal(grpcTarget(parseWorkloadApiAddress(uri)), target));
  }
  // The spec digest's rules (§6), with go-spiffe's wording.
  const invalid: [string, RegExp][] = [
    ['', /not a valid URI/],
    ['/run/agent.sock', /not a valid URI/],
    ['http://127.0.0.1:80', /must have a "tcp" or "unix" scheme/],
    ['unix:opaque', /must not be opaque/],
    ['unix://', /must include a path/],
    ['unix:///', /must include a path/],
    ['unix://host/run/agent.sock', /must not include an authority/],
    ['unix:///run/agent.sock?x=1', /must not include query values/],
    ['unix:///run/agent.sock#frag', /must not include a fragment/],
    ['unix://user@/run/agent.sock', /must not include user info|authority|not a valid URI/],
    ['tcp://', /must include a host/],
    ['tcp://localhost:8000', /host component must be an IP:port/],
    ['tcp://1.2.3.4', /must include a port/],
    ['tcp://1.2.3.4:8000/', /must not include a path/],
    ['tcp://1.2.3.4:8000/foo', /must not include a path/],
    ['tcp://1.2.3.4:8000?x', /must not include query values/],
    ['tcp://1.2.3.4:8000#f', /must not include a fragment/],
    ['tcp://u:p@1.2.3.4:8000', /must not include user info/],
  ];
  for (const [uri, pattern] of invalid) {
    it(`refuses ${JSON.stringify(uri)}`, () =>
      assert.throws(
        () => parseWorkloadApiAddress(uri),
        (e: unknown) => isSpiffeError(e, ErrorCode.WORKLOADAPI_ADDRESS) && pattern.test(e.message),
      ));
  }
  it('falls back to SPIFFE_ENDPOINT_SOCKET, else the Tessera agent default socket', () => {
    assert.equal(
      resolveWorkloadApiAddress(undefined, { SPIFFE_ENDPOINT_SOCKET: 'unix:///a.sock' }).uri,
      'unix:///a.sock',
    );
    assert.equal(
      resolveWorkloadApiAddress('unix:///b.sock', { SPIFFE_ENDPOINT_SOCKET: 'unix:///a.sock' }).uri,
      'unix:///b.sock',
    );
    for (const env of [{}, { SPIFFE_ENDPOINT_SOCKET: '' }]) {
      assert.equal(defaultWorkloadApiAddress(env), `unix://${DEFAULT_WORKLOAD_API_SOCKET}`);
      assert.deepEqual(resolveWorkloadApiAddress(undefined, env), {
        kind: 'unix',
        path: DEFAULT_WORKLOAD_API_SOCKET,
        uri: `unix://${DEFAULT_WORKLOAD_API_SOCKET}`,
      });
    }
    assert.equal(
      defaultWorkloadApiAddress({ SPIFFE_ENDPOINT_SOCKET: 'tcp://127.0.0.1:1' }),
      'tcp://127.0.0.1:1',
    );
    assert.throws(
      () => resolveWorkloadApiAddress(undefined, { SPIFFE_ENDPOINT_SOCKET: '/bare/path.sock' }),
      (e: unknown) =>
        isSpiffeError(e, ErrorCode.WORKLOADAPI_ADDRESS) && /"\/bare\/path.sock"/.test(e.message),
    );
  });
});
