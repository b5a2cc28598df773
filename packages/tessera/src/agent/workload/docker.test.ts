// What the docker attestor makes of an engine's answer, and the callers it does not ask the engine
// about. Against a real dockerd: test/interop/docker-attestor.test.ts.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { isTesseraError } from '../../common/errors.js';
import { DockerWorkloadAttestor, dockerSocketPath, selectorsOf } from './docker.js';

const ID = 'aa2a2df141f8d1fa3aaa35848e658734acd11f6d53e83325d53f553445779c53';
const IMAGE = `sha256:${'c'.repeat(64)}`;
const text = (s: readonly { type: string; value: string }[]) => s.map((x) => `${x.type}:${x.value}`);

describe('docker selectors', () => {
  const running = {
    Id: ID,
    Image: IMAGE,
    State: { Running: true, Status: 'running' },
    Config: {
      Labels: { 'com.example.app': 'web', a: 'x:y' },
      Env: ['PATH=/bin', 'ROLE=frontend'],
      Image: 'envoyproxy/envoy:v1',
    },
  };

  it("are SPIRE's: label, env, image_id (the name) and image_config_digest (the image ID)", () => {
    assert.deepEqual(text(selectorsOf(running, ID, 'x')), [
      'docker:label:a:x:y',
      'docker:label:com.example.app:web',
      'docker:env:PATH=/bin',
      'docker:env:ROLE=frontend',
      'docker:image_id:envoyproxy/envoy:v1',
      `docker:image_config_digest:${IMAGE}`,
    ]);
  });

  it('take a bare hex image ID as sha256, and leave out an image ID that is neither', () => {
    assert.ok(
      text(selectorsOf({ ...running, Image: 'c'.repeat(64) }, ID, 'x')).includes(
        `docker:image_config_digest:${IMAGE}`,
      ),
    );
    assert.ok(
      !text(selectorsOf({ ...running, Image: 'latest' }, ID, 'x')).some((s) =>
        s.includes('image_config_digest'),
      ),
    );
  });

  it('refuse an answer about another container, a stopped container, or malformed labels and environment', () => {
    const refused = (json: Parameters<typeof selectorsOf>[0], why: RegExp) =>
      assert.throws(
        () => selectorsOf(json, ID, 'here'),
        (err: unknown) => isTesseraError(err, 'ERR_WORKLOAD_ATTESTATION') && why.test(err.message),
      );
    refused({ ...running, Id: 'other' }, /here answered about container "other" instead/);
    refused({ ...running, State: { Running: false, Status: 'exited' } }, /not running \(state "exited"\)/);
    refused({ ...running, Config: { Labels: { a: 1 } } }, /labels that are not strings/);
    refused({ ...running, Config: { Env: 'A=1' } }, /environment that is not a list/);
  });
});

describe('the docker attestor without asking the engine', () => {
  it('gives no selectors to a process in no container, nor to a podman one when podman_socket_path is unset', async () => {
    const debug: string[] = [];
    const none = new DockerWorkloadAttestor({
      socketPath: '/nonexistent.sock',
      findContainer: async () => undefined,
    });
    assert.deepEqual(await none.attest({ pid: 1, uid: 0, gid: 0 }), []);
    const podman = new DockerWorkloadAttestor({
      socketPath: '/nonexistent.sock',
      findContainer: async () => ({ id: ID, runtime: 'podman', source: `/machine.slice/libpod-${ID}.scope` }),
      logger: { debug: (_msg, fields) => debug.push(String(fields?.why)) },
    });
    assert.deepEqual(await podman.attest({ pid: 1, uid: 0, gid: 0 }), []);
    assert.match(debug[0] ?? '', /podman_socket_path is not set/);
  });

  it('refuses a caller whose container it cannot read, naming the process', async () => {
    const broken = new DockerWorkloadAttestor({
      findContainer: async () => {
        throw new Error('/proc/7/cgroup names two containers');
      },
    });
    await assert.rejects(
      broken.attest({ pid: 7, uid: 0, gid: 0 }),
      /docker: process 7: \/proc\/7\/cgroup names two containers/,
    );
  });

  it('takes unix:// or absolute socket paths', () => {
    assert.equal(dockerSocketPath('unix:///var/run/docker.sock'), '/var/run/docker.sock');
    assert.equal(dockerSocketPath('/run/podman/podman.sock'), '/run/podman/podman.sock');
    assert.equal(dockerSocketPath('tcp://127.0.0.1:2375'), undefined);
  });
});
