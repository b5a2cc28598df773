// The server as operators run it: a real process, real signals, real files and ports.
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { get } from 'node:http';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { generateKey, makeTempDir, type TempDir, TestCa } from '@tessera/testkit';
import { spawnTessera, waitForLog } from './tessera-process.js';

function httpGet(port: number, path: string): Promise<number> {
  return new Promise((resolve, reject) =>
    get({ host: '127.0.0.1', port, path }, (res) => resolve(res.statusCode ?? 0)).on('error', reject),
  );
}

function httpText(port: number, path: string): Promise<string> {
  return new Promise((resolve, reject) =>
    get({ host: '127.0.0.1', port, path }, (res) => {
      let body = '';
      res.setEncoding('utf8').on('data', (d: string) => {
        body += d;
      });
      res.on('end', () => resolve(body));
    }).on('error', reject),
  );
}

function config(dir: string, healthPort = 0): string {
  mkdirSync(dir, { recursive: true });
  const file = join(dir, 'server.yaml');
  writeFileSync(
    file,
    `trust_domain: example.org\ndata_dir: ${dir}/data\nhealth: { address: 127.0.0.1, port: ${healthPort} }\nagent_api: { address: 127.0.0.1, port: 0 }\nadmin_socket: ${dir}/admin.sock\nlog: { level: info }\n`,
  );
  return file;
}

describe('tessera server run', () => {
  let tmp: TempDir;
  before(async () => {
    tmp = await makeTempDir('srv-');
  });
  after(() => tmp.cleanup());

  it('starts, answers /live and /ready, refuses a second server on its data dir and a taken port, stops on SIGTERM', async () => {
    const dir = join(tmp.path, 'a');
    const file = config(dir);
    const server = spawnTessera('server', 'run', '--config', file);
    try {
      const [, port] = await waitForLog(server, /server started .*health=127\.0\.0\.1:(\d+)/);
      assert.equal(await httpGet(Number(port), '/live'), 200);
      assert.equal(await httpGet(Number(port), '/ready'), 200);
      const metrics = await httpText(Number(port), '/metrics');
      assert.match(metrics, /^tessera_entries 0$/m);
      assert.match(metrics, /^tessera_ca_x509_expiry_timestamp_seconds \d{10}$/m);
      assert.match(metrics, /^tessera_ca_jwt_expiry_timestamp_seconds \d{10}$/m);

      const second = spawnTessera('server', 'run', '--config', file);
      assert.equal(await second.exit, 1);
      assert.match(second.stderr(), /another tessera server \(pid \d+\) is already using the data directory/);
      assert.doesNotMatch(second.stderr(), /\n\s+at /);

      const otherDir = join(tmp.path, 'b');
      const clash = spawnTessera('server', 'run', '--config', config(otherDir, Number(port)));
      assert.equal(await clash.exit, 1);
      assert.match(clash.stderr(), new RegExp(`health port 127.0.0.1:${port} is already in use`));
      assert.ok(!existsSync(join(otherDir, 'data', 'server.lock')), 'a failed start releases its lock');

      const [, agentPort] = server.stderr().match(/agent_api=127\.0\.0\.1:(\d+)/) ?? [];
      const agentDir = join(tmp.path, 'b2');
      mkdirSync(agentDir, { recursive: true });
      const agentClashFile = join(agentDir, 'server.yaml');
      writeFileSync(
        agentClashFile,
        `trust_domain: example.org\ndata_dir: ${agentDir}/data\nhealth: { port: 0 }\nagent_api: { address: 127.0.0.1, port: ${agentPort} }\nadmin_socket: ${agentDir}/admin.sock\n`,
      );
      const agentClash = spawnTessera('server', 'run', '--config', agentClashFile);
      assert.equal(await agentClash.exit, 1);
      assert.match(
        agentClash.stderr(),
        new RegExp(`agent API port 127.0.0.1:${agentPort} is already in use`),
      );
      assert.doesNotMatch(agentClash.stderr(), /\n\s+at /);
    } finally {
      server.child.kill('SIGTERM');
    }
    assert.equal(await server.exit, 0);
    assert.ok(!existsSync(join(dir, 'data', 'server.lock')));
  });

  it('restarts with the same CA, and a corrupt key file is one clear error', async () => {
    const dir = join(tmp.path, 'c');
    const file = config(dir);
    const first = spawnTessera('server', 'run', '--config', file);
    const [, ca1] = await waitForLog(first, /server started .*ca=(\S+)/);
    first.child.kill('SIGTERM');
    assert.equal(await first.exit, 0);
    const second = spawnTessera('server', 'run', '--config', file);
    const [, ca2] = await waitForLog(second, /server started .*ca=(\S+)/);
    second.child.kill('SIGTERM');
    assert.equal(await second.exit, 0);
    assert.equal(ca2, ca1);

    writeFileSync(join(dir, 'data', 'keys', 'x509-CA-A.pem'), 'not a key', { mode: 0o600 });
    const broken = spawnTessera('server', 'run', '--config', file);
    assert.equal(await broken.exit, 1);
    assert.match(broken.stderr(), /x509-CA-A\.pem is not a readable private key/);
    assert.doesNotMatch(broken.stderr(), /\n\s+at /);
  });

  it('runs under an upstream authority, and refuses a key that is not the upstream certificate’s', async () => {
    const dir = join(tmp.path, 'up');
    mkdirSync(dir, { recursive: true });
    const org = TestCa.create({ trustDomain: 'example.org' });
    writeFileSync(join(dir, 'up.crt'), org.rootPem());
    writeFileSync(join(dir, 'up.key'), org.privateKey.export({ type: 'pkcs8', format: 'pem' }), {
      mode: 0o600,
    });
    writeFileSync(join(dir, 'other.key'), generateKey().privateKey.export({ type: 'pkcs8', format: 'pem' }), {
      mode: 0o600,
    });
    const yaml = (key: string) =>
      `trust_domain: example.org\ndata_dir: ${dir}/data\nhealth: { port: 0 }\nagent_api: { address: 127.0.0.1, port: 0 }\nadmin_socket: ${dir}/admin.sock\nupstream_authority:\n  disk: { cert_file: ${dir}/up.crt, key_file: ${dir}/${key} }\n`;
    writeFileSync(join(dir, 'bad.yaml'), yaml('other.key'));
    const bad = spawnTessera('server', 'run', '--config', join(dir, 'bad.yaml'));
    assert.equal(await bad.exit, 1);
    assert.match(bad.stderr(), /upstream authority: .*other\.key is not the key of .*up\.crt/);
    writeFileSync(join(dir, 'good.yaml'), yaml('up.key'));
    const good = spawnTessera('server', 'run', '--config', join(dir, 'good.yaml'));
    await waitForLog(good, /server started/);
    good.child.kill('SIGTERM');
    assert.equal(await good.exit, 0);
  });

  it('a data directory that cannot be created is one clear error', async () => {
    const blocker = join(tmp.path, 'a-file');
    writeFileSync(blocker, 'not a directory');
    const file = join(tmp.path, 'bad.yaml');
    writeFileSync(
      file,
      `trust_domain: example.org\ndata_dir: ${blocker}/tessera\nhealth: { port: 0 }\nagent_api: { port: 0 }\n`,
    );
    const r = spawnTessera('server', 'run', '--config', file);
    assert.equal(await r.exit, 1);
    assert.match(r.stderr(), /cannot create the data directory .*a-file\/tessera: ENOTDIR/);
  });
});
