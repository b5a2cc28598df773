// packaging/: the systemd units and the Dockerfile, checked as far as this machine can.
//
// The units: `systemd-analyze verify` (syntax, known settings, the commands exist — ExecStart
// pointed at this checkout's bin for the check), `systemd-analyze security --offline` (the exposure
// level stays "OK"), systemd-sysusers on the users file (in a scratch root), and the directories
// and modes against the daemons' own defaults, so a changed default fails here until the units
// follow. No systemd runs here as PID 1: the units are not started.
//
// The Dockerfile: parsed and linted by dockerfile-utils (the VS Code Docker extension's validator:
// unknown instructions and flags, bad ports, JSON forms), its stages and copies checked against the
// repository and the .dockerignore beside it; `docker build --check` when a Docker engine with
// buildx answers (none runs on this kind of machine: that test is skipped, saying why).
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { DEFAULT_WORKLOAD_API_SOCKET } from '@tessera/spiffe';
import { AGENT_CONFIG_SCHEMA } from '@tessera/tessera/dist/agent/config.js';
import { DEFAULT_ADMIN_SOCKET } from '@tessera/tessera/dist/common/default-paths.js';
import { SERVER_CONFIG_SCHEMA } from '@tessera/tessera/dist/server/config.js';
import { makeTempDir, type TempDir } from '@tessera/testkit';
import { validate } from 'dockerfile-utils';
import { runCommand } from './tessera-process.js';

const ROOT = fileURLToPath(new URL('../../../', import.meta.url));
const UNITS = join(ROOT, 'packaging/systemd');
const DOCKERFILE = join(ROOT, 'packaging/docker/Dockerfile');
const BIN = join(ROOT, 'packages/tessera/bin/tessera.js');
const DAEMONS = ['server', 'agent', 'proxy'] as const;

/** A unit's [Service] settings: key → every value, in order. */
function serviceSettings(file: string): Map<string, string[]> {
  const settings = new Map<string, string[]>();
  let section = '';
  for (const raw of readFileSync(file, 'utf8').split('\n')) {
    const line = raw.trim();
    if (line === '' || line.startsWith('#')) continue;
    const header = line.match(/^\[(.+)\]$/);
    if (header !== null) section = header[1] as string;
    else if (section === 'Service') {
      const i = line.indexOf('=');
      settings.set(line.slice(0, i), [...(settings.get(line.slice(0, i)) ?? []), line.slice(i + 1)]);
    }
  }
  return settings;
}

function one(s: Map<string, string[]>, key: string): string | undefined {
  const v = s.get(key);
  return v === undefined ? undefined : v[v.length - 1];
}

/** `systemd-analyze` where it exists; else undefined, and the tests that need it skip saying why. */
async function systemdAnalyze(): Promise<string | undefined> {
  const r = await runCommand('systemd-analyze', ['--version']).catch(() => undefined);
  return r?.code === 0 ? 'systemd-analyze' : undefined;
}

function defaultOf(schema: { fields: Record<string, unknown> }, key: string): string {
  return (schema.fields[key] as { default: string }).default;
}

describe('packaging/systemd', () => {
  let tmp: TempDir;
  let analyze: string | undefined;
  const noSystemd = 'systemd-analyze not installed (Debian package systemd)';
  before(async () => {
    tmp = await makeTempDir('units-');
    analyze = await systemdAnalyze();
    if (analyze === undefined)
      console.warn(`*** packaging/systemd: ${noSystemd}; the unit checks are skipped ***`);
    // The units as installed, but for the binary: this checkout's, so that verify finds it.
    for (const d of DAEMONS) {
      const text = readFileSync(join(UNITS, `tessera-${d}.service`), 'utf8');
      writeFileSync(
        join(tmp.path, `tessera-${d}.service`),
        text.replaceAll('/usr/local/bin/tessera ', `${BIN} `),
      );
    }
  });
  after(() => tmp?.cleanup());

  it('a unit for each daemon, started with --config /etc/tessera/<daemon>.yaml under its own user', () => {
    assert.deepEqual(
      readdirSync(UNITS)
        .filter((f) => f.endsWith('.service'))
        .sort(),
      DAEMONS.map((d) => `tessera-${d}.service`).sort(),
    );
    const users = readFileSync(join(UNITS, 'tessera.sysusers'), 'utf8');
    for (const d of DAEMONS) {
      const s = serviceSettings(join(UNITS, `tessera-${d}.service`));
      assert.deepEqual(s.get('ExecStart'), [
        `/usr/local/bin/tessera ${d} run --config /etc/tessera/${d}.yaml`,
      ]);
      assert.equal(one(s, 'User'), `tessera-${d}`);
      assert.equal(one(s, 'Group'), `tessera-${d}`);
      assert.match(users, new RegExp(`^u tessera-${d} `, 'm'), `tessera.sysusers creates tessera-${d}`);
      assert.equal(one(s, 'Restart'), 'on-failure');
      for (const [key, value] of [
        ['NoNewPrivileges', 'yes'],
        ['ProtectSystem', 'strict'],
        ['ProtectHome', 'yes'],
        ['PrivateTmp', 'yes'],
        ['UMask', '0077'],
      ])
        assert.equal(one(s, key as string), value, `${d}: ${key}`);
      assert.ok(s.has('ReadWritePaths'), `${d}: ReadWritePaths`);
      const caps = one(s, 'CapabilityBoundingSet');
      assert.equal(caps, d === 'agent' ? 'CAP_SYS_PTRACE' : '', `${d}: capabilities`);
      assert.equal(one(s, 'AmbientCapabilities'), caps, `${d}: ambient = bounding`);
    }
  });

  it("the directories and modes are the daemons' defaults: the server's admin socket dir 0700, the agent's socket dir open to every uid", () => {
    const server = serviceSettings(join(UNITS, 'tessera-server.service'));
    const agent = serviceSettings(join(UNITS, 'tessera-agent.service'));
    const proxy = serviceSettings(join(UNITS, 'tessera-proxy.service'));

    // Server: /run/tessera/server/server.sock in a RuntimeDirectory of its own, 0700.
    const adminDir = DEFAULT_ADMIN_SOCKET.slice(0, DEFAULT_ADMIN_SOCKET.lastIndexOf('/'));
    assert.equal(`/run/${one(server, 'RuntimeDirectory')}`, adminDir);
    assert.equal(one(server, 'RuntimeDirectoryMode'), '0700');
    const serverData = defaultOf(SERVER_CONFIG_SCHEMA, 'data_dir');
    assert.equal(`/var/lib/${one(server, 'StateDirectory')}`, serverData);
    assert.equal(one(server, 'StateDirectoryMode'), '0700');
    assert.deepEqual(one(server, 'ReadWritePaths')?.split(' ').sort(), [adminDir, serverData].sort());

    // Agent: /run/tessera/agent.sock, whose directory others may enter; not a RuntimeDirectory
    // (systemd would chown the server's directory below it to the agent, and remove it on stop).
    assert.equal(defaultOf(AGENT_CONFIG_SCHEMA, 'socket_path'), DEFAULT_WORKLOAD_API_SOCKET);
    const socketDir = DEFAULT_WORKLOAD_API_SOCKET.slice(0, DEFAULT_WORKLOAD_API_SOCKET.lastIndexOf('/'));
    assert.equal(agent.get('RuntimeDirectory'), undefined);
    assert.equal(
      adminDir.startsWith(`${socketDir}/`),
      true,
      'the admin directory is below the socket directory',
    );
    const pre = agent.get('ExecStartPre') ?? [];
    const make = pre.find((c) => c.endsWith(` ${socketDir}`));
    assert.ok(make !== undefined, `an ExecStartPre makes ${socketDir}: ${pre.join(' | ')}`);
    assert.match(make, /^\+\/usr\/bin\/install -d -o root -g tessera-agent -m (\d+) /);
    const mode = Number.parseInt((make.match(/-m (\d+)/) as RegExpMatchArray)[1] as string, 8);
    assert.equal(mode & 0o001, 0o001, 'others may enter the socket directory');
    assert.equal(mode & 0o020, 0o020, 'the agent (group) may create its socket there');
    assert.equal(mode & 0o1000, 0o1000, "sticky: the agent cannot remove or rename the server's directory");
    assert.equal(mode & 0o002, 0, 'others may not write there');
    const agentData = defaultOf(AGENT_CONFIG_SCHEMA, 'data_dir');
    assert.equal(`/var/lib/${one(agent, 'StateDirectory')}`, agentData);
    assert.equal(one(agent, 'StateDirectoryMode'), '0700');
    assert.deepEqual(one(agent, 'ReadWritePaths')?.split(' ').sort(), [agentData, socketDir].sort());
    assert.equal(agent.get('ProtectProc'), undefined, 'workload attestation reads every /proc/<pid>');

    // Proxy: nothing of its own but the audit log's directory.
    assert.equal(one(proxy, 'ReadWritePaths'), `/var/log/${one(proxy, 'LogsDirectory')}`);
  });

  it('systemd-analyze verify accepts the units', async (t) => {
    if (analyze === undefined) return t.skip(noSystemd);
    const r = await runCommand(
      analyze,
      ['verify', ...DAEMONS.map((d) => join(tmp.path, `tessera-${d}.service`))],
      { timeoutMs: 60_000 },
    );
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stderr.trim(), '', 'no warnings');
  });

  it('systemd-analyze security --offline rates each unit OK (exposure below 3)', async (t) => {
    if (analyze === undefined) return t.skip(noSystemd);
    for (const d of DAEMONS) {
      const r = await runCommand(
        analyze,
        ['security', '--offline=yes', '--no-pager', join(tmp.path, `tessera-${d}.service`)],
        { timeoutMs: 60_000 },
      );
      assert.equal(r.code, 0, r.stderr);
      const m = r.stdout.match(/Overall exposure level for tessera-\w+\.service: (\d+\.\d+) (\w+)/);
      assert.ok(m !== null, r.stdout);
      assert.ok(Number(m[1]) < 3, `${d}: exposure ${m[1]} ${m[2]}`);
      assert.equal(m[2], 'OK', d);
    }
  });

  it('systemd-sysusers creates the three users from tessera.sysusers', async (t) => {
    if (analyze === undefined) return t.skip(noSystemd);
    const root = join(tmp.path, 'root');
    mkdirSync(join(root, 'etc'), { recursive: true });
    const r = await runCommand('systemd-sysusers', [`--root=${root}`, join(UNITS, 'tessera.sysusers')]);
    assert.equal(r.code, 0, r.stderr);
    const passwd = readFileSync(join(root, 'etc/passwd'), 'utf8');
    for (const d of DAEMONS) assert.match(passwd, new RegExp(`^tessera-${d}:x:\\d+:\\d+:`, 'm'));
  });
});

/** The Dockerfile's instructions, continuation lines joined, comments dropped. */
function instructions(text: string): { keyword: string; args: string }[] {
  const out: { keyword: string; args: string }[] = [];
  let pending = '';
  for (const raw of text.split('\n')) {
    if (pending === '' && /^\s*#/.test(raw)) continue;
    const line = raw.replace(/\s+$/, '');
    if (line.endsWith('\\')) {
      pending += `${line.slice(0, -1)} `;
      continue;
    }
    const full = (pending + line).replace(/\s+/g, ' ').trim();
    pending = '';
    if (full === '') continue;
    const m = full.match(/^(\w+)\s+(.*)$/s);
    if (m !== null) out.push({ keyword: (m[1] as string).toUpperCase(), args: m[2] as string });
  }
  return out;
}

describe('packaging/docker/Dockerfile', () => {
  const text = readFileSync(DOCKERFILE, 'utf8');
  const all = instructions(text);

  it('parses and lints clean (dockerfile-utils)', () => {
    assert.deepEqual(
      validate(text).map((d) => `line ${d.range.start.line + 1}: ${d.message}`),
      [],
    );
  });

  it('is multi-stage: build and install from the Node image, a runtime of Node and the installed packages, non-root, ENTRYPOINT tessera', () => {
    const froms = all.filter((i) => i.keyword === 'FROM').map((i) => i.args);
    // biome-ignore lint/suspicious/noTemplateCurlyInString: the Dockerfile's variable, not JavaScript's
    const image = '${NODE_IMAGE}';
    assert.deepEqual(froms, [`${image} AS build`, `${image} AS install`, `${image} AS runtime`]);
    assert.match(text, /^ARG NODE_IMAGE=node:20-[a-z]+-slim$/m);
    const stages = new Map<string, { keyword: string; args: string }[]>();
    let current = '';
    for (const i of all) {
      if (i.keyword === 'FROM') current = i.args.split(' AS ')[1] as string;
      else stages.set(current, [...(stages.get(current) ?? []), i]);
    }
    const run = (stage: string) =>
      (stages.get(stage) ?? [])
        .filter((i) => i.keyword === 'RUN')
        .map((i) => i.args)
        .join('\n');
    assert.match(run('build'), /npm ci /);
    assert.match(run('build'), /npx tsc -b packages\/tessera && node scripts\/bundle-cli\.mjs/);
    assert.match(run('install'), /node_modules\/\.bin\/tessera --version/);
    assert.match(run('build'), /npm pack --pack-destination \/pack -w packages\/spiffe -w packages\/tessera/);
    assert.match(
      run('install'),
      /npm install --omit=dev .*\/pack\/tessera-spiffe-\*\.tgz \/pack\/tessera-tessera-\*\.tgz/,
    );
    const runtime = stages.get('runtime') ?? [];
    assert.deepEqual(
      runtime.filter((i) => i.keyword === 'COPY').map((i) => i.args),
      ['--from=install /opt/tessera/ /opt/tessera/'],
      'the runtime stage takes the installed packages only',
    );
    assert.doesNotMatch(run('runtime'), /apt-get|npm /, 'no tools installed in the runtime stage');
    const user = runtime.filter((i) => i.keyword === 'USER').map((i) => i.args);
    assert.deepEqual(user, ['tessera']);
    assert.match(run('runtime'), /useradd --system --gid tessera /);
    assert.deepEqual(
      runtime.filter((i) => i.keyword === 'ENTRYPOINT').map((i) => i.args),
      ['["tessera"]'],
    );
    // The directories the defaults name.
    const socketDir = DEFAULT_WORKLOAD_API_SOCKET.slice(0, DEFAULT_WORKLOAD_API_SOCKET.lastIndexOf('/'));
    assert.match(run('runtime'), new RegExp(`-m 0755 ${socketDir} `));
    for (const dir of [
      defaultOf(SERVER_CONFIG_SCHEMA, 'data_dir'),
      defaultOf(AGENT_CONFIG_SCHEMA, 'data_dir'),
    ])
      assert.match(run('runtime'), new RegExp(`-m 0700 .*${dir}\\b`));
  });

  it('every file copied from the context exists and is not excluded by Dockerfile.dockerignore', () => {
    const ignore = readFileSync(join(ROOT, 'packaging/docker/Dockerfile.dockerignore'), 'utf8')
      .split('\n')
      .map((l) => l.trim())
      .filter((l) => l !== '' && !l.startsWith('#'));
    const ignored = (path: string) =>
      ignore.some((p) => {
        const glob = p
          .replace(/[.+^$()|[\]{}]/g, '\\$&')
          .replace(/\*\*\//g, '\0')
          .replace(/\*/g, '[^/]*')
          .replaceAll('\0', '(?:.*/)?');
        const re = new RegExp(`^${glob}(?:/|$)`);
        return re.test(path);
      });
    const sources = all
      .filter((i) => i.keyword === 'COPY' && !i.args.startsWith('--from='))
      .flatMap((i) => i.args.split(/\s+/).slice(0, -1));
    assert.ok(sources.length > 0);
    for (const s of sources) {
      assert.ok(existsSync(join(ROOT, s)), `COPY ${s}: not in the repository`);
      assert.equal(ignored(s.replace(/\/$/, '')), false, `COPY ${s}: excluded by Dockerfile.dockerignore`);
    }
    // What the build needs from packages/ stays in the context; local builds and installs do not.
    assert.equal(ignored('packages/tessera/src/cli/main.ts'), false);
    assert.equal(ignored('packages/tessera/dist/cli/main.js'), true);
    assert.equal(ignored('packages/spiffe/node_modules/x'), true);
    assert.equal(ignored('node_modules/typescript'), true);
  });

  it('docker build --check (where a Docker engine with buildx answers)', async (t) => {
    const info = await runCommand('docker', ['buildx', 'version'], { timeoutMs: 10_000 }).catch(
      () => undefined,
    );
    const engine = await runCommand('docker', ['info', '--format', '{{.ServerVersion}}'], {
      timeoutMs: 10_000,
    }).catch(() => undefined);
    if (info?.code !== 0 || engine?.code !== 0)
      return t.skip('no Docker engine with buildx here (docker buildx version / docker info fail)');
    const r = await runCommand('docker', ['build', '--check', '-f', DOCKERFILE, ROOT], {
      timeoutMs: 120_000,
    });
    assert.equal(r.code, 0, `${r.stdout}\n${r.stderr}`);
  });
});
