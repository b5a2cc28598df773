/**
 * The `docker` workload attestor against a real Docker daemon (dockerd.ts: Debian's dockerd on a
 * private socket, started here) and a real server and agent in this process. Workloads are the
 * static go-spiffe peer in containers of an image imported here (no registry, no network): the one
 * whose label an entry names gets that SVID, the one with another label is refused, a process in no
 * container gets no docker selectors, and a daemon that does not answer or is down refuses the
 * caller with an error naming the container and the socket. Without dockerd or the static peer
 * (test/interop/setup.sh) the suite is skipped loudly, or fails with TESSERA_REQUIRE_INTEROP=1.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdirSync } from 'node:fs';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import type { RunningAgent } from '@tessera/tessera/dist/agent/run.js';
import { startTestAgent } from '@tessera/tessera/dist/agent/test-agent.test.util.js';
import { attestWorkload } from '@tessera/tessera/dist/agent/workload/attest.js';
import { findContainer } from '@tessera/tessera/dist/agent/workload/container-id.js';
import { DockerWorkloadAttestor } from '@tessera/tessera/dist/agent/workload/docker.js';
import { isTesseraError } from '@tessera/tessera/dist/common/errors.js';
import { createLogger } from '@tessera/tessera/dist/common/log.js';
import { startTestServer } from '@tessera/tessera/dist/server/api/test-server.test.util.js';
import type { RunningServer } from '@tessera/tessera/dist/server/run.js';
import { makeTempDir, type TempDir } from '@tessera/testkit';
import { type Dockerd, dockerUnavailable, importTestImage, startDockerd } from './dockerd.js';
import { type ErrorLine, type GoWorkloadLine, runPeer, type X509UpdateLine } from './workload-peers.js';

const skip = dockerUnavailable('docker workload attestor');
const IMAGE = 'tessera-test/workload:1';
const AGENT_ID = 'spiffe://example.org/tessera/agent/join_token/docker-host';
/** The agent's warnings and errors (refusals are logged as warnings). */
const logged: string[] = [];
const logger = createLogger({ level: 'warn', format: 'json', write: (line) => logged.push(line) });
/** `docker run` of the test image: never pulled (there is no registry), no network. */
const RUN = ['run', '--pull', 'never', '--network', 'none'] as const;

describe('the docker workload attestor against a real dockerd', { skip, timeout: 240_000 }, () => {
  let tmp: TempDir;
  let dockerd: Dockerd;
  let imageId: string;
  let server: RunningServer;
  let agent: RunningAgent;
  /** The agent's socket directory, bind-mounted into every container as /sock. */
  let sockDir: string;
  /** A container that waits on /io/trigger before it runs the peer (for when dockerd is down). */
  let waiter: { id: string; io: string };

  before(async () => {
    tmp = await makeTempDir('docker-attestor-');
    dockerd = await startDockerd(join(tmp.path, 'docker'));
    imageId = await importTestImage(dockerd, tmp.path, IMAGE);
    server = await startTestServer(join(tmp.path, 'server'), []);
    await server.datastore.createJoinToken({
      token: 'docker-host-token-0123456',
      expiresAt: new Date(Date.now() + 60_000),
      agentName: 'docker-host',
    });
    await server.datastore.createEntry({
      spiffeId: 'spiffe://example.org/web',
      parentId: AGENT_ID,
      selectors: [
        { type: 'docker', value: 'label:app:web' },
        { type: 'docker', value: `image_config_digest:${imageId}` },
      ],
    });
    sockDir = join(tmp.path, 'sock');
    mkdirSync(sockDir);
    agent = await startTestAgent(server, join(tmp.path, 'agent'), 'docker-host-token-0123456', logger, {
      socketPath: join(sockDir, 'agent.sock'),
      config: [
        'workload_attestors:',
        '  docker:',
        `    docker_socket_path: unix://${dockerd.socket}`,
        // Generous: a busy CI machine must not turn a slow answer into a refusal here.
        '    timeout: 10s',
      ],
    });
    const io = join(tmp.path, 'io');
    mkdirSync(io);
    execFileSync('mkfifo', [join(io, 'trigger'), join(io, 'done')]);
    const id = (
      await dockerd.docker([
        ...RUN,
        '-d',
        '--label',
        'app=web',
        '-v',
        `${sockDir}:/sock`,
        '-v',
        `${io}:/io`,
        '-e',
        'SPIFFE_ENDPOINT_SOCKET=unix:///sock/agent.sock',
        IMAGE,
        '/bin/sh',
        '-c',
        'read x < /io/trigger; /interop workload --timeout 4s > /io/out 2>&1; echo done > /io/done',
      ])
    ).trim();
    waiter = { id, io };
  });

  after(async () => {
    await agent?.stop();
    await server?.stop();
    await dockerd?.cleanup();
    await tmp?.cleanup();
  });

  /** `interop workload` in a new container with these labels and environment, via `docker run`. */
  const runInContainer = (labels: Record<string, string>, timeoutS: number) =>
    runPeer<GoWorkloadLine>(
      'docker',
      [
        ...RUN,
        '--rm',
        ...Object.entries(labels).flatMap(([k, v]) => ['--label', `${k}=${v}`]),
        '-e',
        'SPIFFE_ENDPOINT_SOCKET=unix:///sock/agent.sock',
        '-v',
        `${sockDir}:/sock`,
        IMAGE,
        '/interop',
        'workload',
        '--updates',
        '1',
        '--timeout',
        `${timeoutS}s`,
      ],
      join(sockDir, 'agent.sock'),
      { env: { DOCKER_HOST: `unix://${dockerd.socket}`, DOCKER_API_VERSION: '1.41' } },
      timeoutS * 1000,
    );

  /** Lets the waiting container run its peer now, and returns what the peer printed. */
  const triggerWaiter = async (): Promise<GoWorkloadLine[]> => {
    const done = readFile(join(waiter.io, 'done'), 'utf8');
    await writeFile(join(waiter.io, 'trigger'), 'go\n');
    await done;
    return (await readFile(join(waiter.io, 'out'), 'utf8'))
      .split('\n')
      .filter((l) => l.startsWith('{'))
      .map((l) => JSON.parse(l) as GoWorkloadLine);
  };

  const firstError = (lines: GoWorkloadLine[]) => lines.find((l): l is ErrorLine => l.kind === 'error');

  test('the attestor yields the labels, environment, image name and image ID of a container', async () => {
    const id = (
      await dockerd.docker([
        ...RUN,
        '-d',
        '--label',
        'app=db',
        '--label',
        'tier=backend',
        '-e',
        'ROLE=primary',
        IMAGE,
        '/bin/sleep',
        '60',
      ])
    ).trim();
    try {
      const pid = Number((await dockerd.docker(['inspect', '-f', '{{.State.Pid}}', id])).trim());
      const found = await findContainer(pid);
      assert.equal(found?.id, id);
      assert.equal(found?.runtime, 'docker');
      const attestor = new DockerWorkloadAttestor({ socketPath: dockerd.socket });
      const selectors = (await attestWorkload({ pid, uid: 0, gid: 0 }, [attestor])).map(
        (s) => `${s.type}:${s.value}`,
      );
      assert.deepEqual(
        selectors.filter((s) => !s.startsWith('docker:env:PATH=')),
        [
          'docker:label:app:db',
          'docker:label:tier:backend',
          'docker:env:ROLE=primary',
          `docker:image_id:${IMAGE}`,
          `docker:image_config_digest:${imageId}`,
        ],
      );
    } finally {
      await dockerd.docker(['rm', '-f', id]);
    }
  });

  test('a process in no container gets no docker selectors', async () => {
    assert.equal(await findContainer(process.pid), undefined);
    const attestor = new DockerWorkloadAttestor({ socketPath: dockerd.socket });
    assert.deepEqual(await attestor.attest({ pid: process.pid, uid: 0, gid: 0 }), []);
  });

  test('a workload in a container labelled app=web gets the SVID of the docker:label entry', async () => {
    const run = await runInContainer({ app: 'web' }, 30); // it exits once it has the SVID
    const x509 = run.lines.find((l): l is X509UpdateLine => l.kind === 'x509');
    assert.ok(x509, `no SVID; the peer printed ${JSON.stringify(run.lines)} ${run.stderr}`);
    assert.deepEqual(
      x509.svids.map((s) => s.spiffe_id),
      ['spiffe://example.org/web'],
    );
  });

  test('a workload in a container with another label is refused: no identity', async () => {
    const run = await runInContainer({ app: 'db' }, 4); // refused: it retries until then
    assert.equal(
      run.lines.find((l) => l.kind === 'x509'),
      undefined,
    );
    const err = firstError(run.lines);
    assert.equal(err?.code, 'PermissionDenied', JSON.stringify(run.lines));
  });

  test('a container the daemon does not know: refused when its cgroup says docker, no selectors when it says containerd', async () => {
    const unknown = 'f'.repeat(64);
    const asDocker = new DockerWorkloadAttestor({
      socketPath: dockerd.socket,
      findContainer: async () => ({ id: unknown, runtime: 'docker', source: `/docker/${unknown}` }),
    });
    await assert.rejects(asDocker.attest({ pid: process.pid, uid: 0, gid: 0 }), (err: unknown) => {
      assert.ok(isTesseraError(err, 'ERR_WORKLOAD_ATTESTATION'));
      assert.ok(
        err.message.includes(
          `is in container ${unknown} (/docker/${unknown}), which the docker daemon at ${dockerd.socket} does not know`,
        ),
        err.message,
      );
      return true;
    });
    const asContainerd = new DockerWorkloadAttestor({
      socketPath: dockerd.socket,
      findContainer: async () => ({
        id: unknown,
        runtime: 'containerd',
        source: `/k/cri-containerd-${unknown}.scope`,
      }),
    });
    assert.deepEqual(await asContainerd.attest({ pid: process.pid, uid: 0, gid: 0 }), []);
  });

  test('a daemon that does not answer: the caller is refused once the timeout passes', async () => {
    const attestor = new DockerWorkloadAttestor({ socketPath: dockerd.socket, timeoutMs: 300 });
    const pid = Number((await dockerd.docker(['inspect', '-f', '{{.State.Pid}}', waiter.id])).trim());
    dockerd.pause();
    try {
      await assert.rejects(attestor.attest({ pid, uid: 0, gid: 0 }), (err: unknown) => {
        assert.ok(isTesseraError(err, 'ERR_WORKLOAD_ATTESTATION'));
        assert.match(err.message, new RegExp(`container ${waiter.id}`));
        assert.match(err.message, /did not answer within 300ms/);
        assert.ok(err.message.includes(dockerd.socket));
        return true;
      });
    } finally {
      dockerd.resume();
    }
  });

  test('dockerd stopped: a workload in a still running container is refused, naming the container and the socket', async () => {
    await dockerd.stop();
    try {
      const lines = await triggerWaiter();
      assert.equal(
        lines.find((l) => l.kind === 'x509'),
        undefined,
        JSON.stringify(lines),
      );
      const err = firstError(lines);
      assert.equal(err?.code, 'Unavailable', JSON.stringify(lines));
      assert.match(
        err?.error ?? '',
        new RegExp(`workload attestation failed: docker: process \\d+ is in container ${waiter.id}`),
      );
      assert.ok(err?.error.includes(`cannot reach the docker daemon at ${dockerd.socket}`), err?.error);
      // The agent logs the refusal: who (the peer, the process), what (attestation) and why.
      const line = logged
        .map((l) => JSON.parse(l) as { level: string; msg: string; error?: string })
        .find((l) => l.msg === 'workload API: workload attestation failed' && l.error?.includes(waiter.id));
      assert.ok(line, logged.join('\n'));
      assert.equal(line.level, 'warn');
      assert.match(line.error ?? '', /docker: process \d+ is in container .*cannot reach the docker daemon/);
    } finally {
      await dockerd.start();
    }
  });
});
