#!/usr/bin/env node
// `npm run demo:vm`: a VM workload joins the mesh, narrated. A server and an agent (SQLite, in a
// temporary directory); a "catalogue" app that speaks plain HTTP behind an inbound `tessera proxy`
// holding the catalogue's SPIFFE ID and enforcing an Istio AuthorizationPolicy; two VM identities
// calling it through outbound proxies. Allowed and denied requests, a client with no certificate,
// then the VM offboarded by deleting its entry. Exits 0, or 1 saying what failed.
//   npm run build && node scripts/demo-vm.mjs
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { createServer, request } from 'node:http';
import { join } from 'node:path';
import { connect as tlsConnect } from 'node:tls';
import {
  cli,
  createDemo,
  createEntries,
  fail,
  freePort,
  isRoot,
  ROOT,
  say,
  startAgent,
  startServer,
  TESSERA,
  waitFor,
  waitForLog,
  workloadRuns,
} from './demo-lib.mjs';

const TD = 'example.org';
const CATALOGUE = `spiffe://${TD}/ns/sock-shop/sa/catalogue`;
const CLIENT = `spiffe://${TD}/vm/catalog-client`;
const OTHER = `spiffe://${TD}/vm/other-client`;
const DEADLINE_MS = 45_000;
/** How long offboarding may take before the demo calls it a failure. */
const OFFBOARD_LIMIT_MS = 5_000;
const DENIED = 'RBAC: access denied';
/** The issue's policy, as applied in the cluster (comments dropped when shown). */
const POLICY = readFileSync(join(ROOT, 'examples/vm/catalogue-allow-vm-auth.yaml'), 'utf8')
  .split('\n')
  .filter((line) => !line.startsWith('#'))
  .join('\n');

const demo = createDemo({ deadlineMs: DEADLINE_MS, tmpPrefix: 'tessera-demo-vm-' });
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** One plain HTTP/1.1 request on a new connection; resolves with the status and body, rejects on a socket error. */
function call(port, method, path) {
  return new Promise((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port, method, path, agent: false, timeout: 3_000 }, (res) => {
      let body = '';
      res.setEncoding('utf8').on('data', (d) => {
        body += d;
      });
      res.on('end', () => resolve({ status: res.statusCode, body }));
      res.on('error', reject);
    });
    req.on('timeout', () => req.destroy(new Error('no answer within 3 s')));
    req.on('error', reject);
    req.end();
  });
}

/** A `key=value` field of a tessera text log line (quoted values are JSON strings). */
function logField(line, key) {
  const m = new RegExp(`\\b${key}=("(?:[^"\\\\]|\\\\.)*"|\\S+)`).exec(line);
  if (m === null) return undefined;
  return m[1].startsWith('"') ? JSON.parse(m[1]) : m[1];
}

/** A tessera text log line without its time and level. */
const withoutTimeAndLevel = (line) => line.replace(/^\S+\s+\S+\s+/, '');

/** The first stderr line of `p` written after offset `from` that matches `re`, within `ms`. */
const logLineSince = (p, from, re, ms, what) =>
  waitFor(
    p,
    () =>
      p.stderr
        .slice(from)
        .split('\n')
        .find((l) => re.test(l)),
    ms,
    what,
  );

async function main() {
  const tmp = demo.tempDir();
  say('Tessera VM demo: a legacy app on a VM joins a service mesh governed by Istio AuthorizationPolicy.');
  say('The catalogue service sits behind an inbound `tessera proxy`; two VM workloads call it through');
  say('outbound proxies. No app touches a certificate: the proxies get theirs from the agent.');
  say(`Everything lives in ${tmp} and is removed at the end.`);
  say();

  // 1. The server and the agent.
  say(`1. Starting the identity server (tessera server run) for the trust domain "${TD}" (SQLite, in the`);
  say('   temporary directory), and an agent (tessera agent run) on the "VM", attested with a one-time');
  say('   join token from `tessera token generate`.');
  const { adminSocket, agentPort } = await startServer(demo, { trustDomain: TD });
  const { agentSocket, agentId } = await startAgent(demo, {
    trustDomain: TD,
    adminSocket,
    agentPort,
    agentName: 'vm-1',
  });
  say(`   The server is up (agents connect on 127.0.0.1:${agentPort}); the agent is attested as`);
  say(`   ${agentId} and serves the Workload API on ${agentSocket}.`);
  say();

  // 2. The registrations.
  say('2. Registering three identities with `tessera entry create`, parented to that agent:');
  const runs = workloadRuns(demo, ['catalogue', 'catalog-client', 'other-client']);
  const ids = { catalogue: CATALOGUE, 'catalog-client': CLIENT, 'other-client': OTHER };
  const names = Object.keys(ids);
  const entryIds = await createEntries(
    adminSocket,
    agentId,
    names.map((n) => ({ id: ids[n], selector: runs[n].selector })),
  );
  for (const n of names) say(`   ${ids[n].padEnd(48)} selector ${runs[n].selector}`);
  say(
    isRoot
      ? '   Each proxy runs as that uid; the agent learns the uid of its caller from the kernel (SO_PEERCRED).'
      : '   Not running as root, so each proxy runs node under its own file name (a hard link, or a copy):\n' +
          "   `<that node> packages/tessera/bin/tessera.js proxy run …`; the agent reads the caller's\n" +
          '   executable from /proc/<pid>/exe.',
  );
  say();

  // 3. The app.
  const seen = [];
  const app = createServer((req, res) => {
    const xfcc = req.headers['x-forwarded-client-cert'];
    seen.push({ method: req.method, path: req.url, xfcc });
    res
      .writeHead(200, { 'content-type': 'application/json' })
      .end(JSON.stringify({ service: 'catalogue', method: req.method, path: req.url, xfcc: xfcc ?? null }));
  });
  await new Promise((resolve, reject) => {
    app.once('error', reject);
    app.listen(0, '127.0.0.1', resolve);
  });
  demo.atCleanup(
    () =>
      new Promise((resolve) => {
        app.closeAllConnections();
        app.close(() => resolve());
      }),
  );
  const appPort = app.address().port;
  say(`3. The catalogue app (in this demo's own process): plain HTTP on 127.0.0.1:${appPort}, no TLS,`);
  say('   no notion of identity. It answers JSON and echoes the x-forwarded-client-cert header it got.');
  say();

  // 4. The proxies.
  const policyDir = join(tmp, 'policies');
  mkdirSync(policyDir);
  writeFileSync(join(policyDir, 'catalogue.yaml'), POLICY);
  const inboundPort = await freePort();
  const outboundPorts = { 'catalog-client': await freePort(), 'other-client': await freePort() };
  const configs = {
    catalogue: [
      `workload_api_socket: unix://${agentSocket}`,
      'namespace: sock-shop',
      'labels: {app: catalogue}',
      `policies: [${policyDir}]`,
      'inbound:',
      `  - {name: catalogue, listen: "127.0.0.1:${inboundPort}", upstream: "127.0.0.1:${appPort}"}`,
      'health: {port: 0}',
    ],
  };
  for (const n of ['catalog-client', 'other-client'])
    configs[n] = [
      `workload_api_socket: unix://${agentSocket}`,
      'outbound:',
      '  - name: catalogue',
      `    listen: "127.0.0.1:${outboundPorts[n]}"`,
      `    upstream: "127.0.0.1:${inboundPort}"`,
      `    server_spiffe_ids: ["${CATALOGUE}"]`,
      '    protocol: http1',
      'health: {port: 0}',
    ];
  const files = {};
  for (const n of names) {
    files[n] = join(tmp, n === 'catalogue' ? 'inbound.yaml' : `${n}.yaml`);
    writeFileSync(files[n], `${configs[n].join('\n')}\n`);
  }
  say('4. Starting the proxies (tessera proxy run --config …). The inbound one, as the catalogue, with');
  say('   namespace sock-shop, labels {app: catalogue} and this policy from its policy directory:');
  for (const line of POLICY.trimEnd().split('\n')) say(`      ${line}`);
  say(`   It terminates mTLS on 127.0.0.1:${inboundPort} and forwards what the policy allows to the app.`);
  say('   One outbound proxy per VM identity: a plain listener on the VM that carries each connection over');
  say(`   mTLS to the inbound proxy, presenting the VM's certificate and requiring the server to be`);
  say(`   ${CATALOGUE} (server_spiffe_ids, protocol http1).`);
  const proxies = {};
  for (const n of names)
    proxies[n] = demo.start(`${n} proxy`, runs[n].cmd, [TESSERA, 'proxy', 'run', '--config', files[n]], {
      uid: runs[n].uid,
    });
  for (const n of names) {
    const p = proxies[n];
    await waitForLog(p, /proxy ready/, 20_000, `the ${p.name} did not log "proxy ready"`);
    const got = p.stderr.match(/identity received spiffe_id=(\S+)/)?.[1];
    if (got !== ids[n]) fail(`the ${p.name} got the identity ${got} instead of ${ids[n]}`);
    const where =
      n === 'catalogue'
        ? `inbound 127.0.0.1:${inboundPort} → app 127.0.0.1:${appPort}`
        : `outbound 127.0.0.1:${outboundPorts[n]} → 127.0.0.1:${inboundPort}`;
    say(`   ${`${n} proxy`.padEnd(20)} ready: ${got} (by ${runs[n].because}); ${where}`);
  }
  say();

  // 5. Allowed.
  say('5. The catalog-client VM calls the catalogue in plain HTTP through its outbound proxy:');
  for (const path of ['/catalogue', '/catalogue/42', '/tags']) {
    const before = seen.length;
    const r = await call(outboundPorts['catalog-client'], 'GET', path).catch((err) =>
      fail(`GET ${path} from the catalog-client failed: ${err.message}`),
    );
    if (r.status !== 200)
      fail(`GET ${path} from the catalog-client got ${r.status} (${r.body}) instead of 200`);
    const xfcc = seen[before]?.xfcc;
    if (xfcc === undefined) fail(`GET ${path} got 200 but the app received no x-forwarded-client-cert`);
    if (JSON.parse(r.body).xfcc !== xfcc)
      fail(`GET ${path}: the app's answer does not echo what it received`);
    if (!xfcc.startsWith(`By=${CATALOGUE};`) || !xfcc.endsWith(`;URI=${CLIENT}`))
      fail(`GET ${path}: x-forwarded-client-cert is ${xfcc}, not By=${CATALOGUE};…;URI=${CLIENT}`);
    say(`   GET  ${path.padEnd(14)} → ${r.status}; the app saw x-forwarded-client-cert:`);
    say(`        ${xfcc}`);
  }
  say("   >> The inbound proxy checked the VM's certificate, matched its SPIFFE ID, method and path against");
  say('      the policy, and told the app who called: By (the catalogue), Hash (of the client certificate),');
  say('      URI (the caller).');
  say();

  // 6. Denied.
  say('6. Requests the policy does not allow get 403 from the inbound proxy, and never reach the app:');
  const inbound = proxies.catalogue;
  for (const [n, method, path] of [
    ['catalog-client', 'POST', '/catalogue'],
    ['catalog-client', 'GET', '/orders'],
    ['other-client', 'GET', '/catalogue'],
  ]) {
    const before = seen.length;
    const from = inbound.stderr.length;
    const r = await call(outboundPorts[n], method, path).catch((err) =>
      fail(`${method} ${path} from the ${n} failed: ${err.message}`),
    );
    if (r.status !== 403 || r.body !== DENIED)
      fail(`${method} ${path} from the ${n} got ${r.status} "${r.body}" instead of 403 "${DENIED}"`);
    if (seen.length !== before) fail(`${method} ${path} from the ${n} was denied but reached the app`);
    const line = await logLineSince(
      inbound,
      from,
      /request denied/,
      2_000,
      `the catalogue proxy did not log why it denied ${method} ${path}`,
    );
    say(`   ${`${method} ${path}`.padEnd(19)} from ${n.padEnd(14)} → ${r.status} "${r.body}"`);
    say(`        the inbound proxy logged: ${logField(line, 'reason') ?? line}`);
  }
  const from = inbound.stderr.length;
  const noCert = await new Promise((resolve) => {
    let got = '';
    const s = tlsConnect(
      { host: '127.0.0.1', port: inboundPort, rejectUnauthorized: false, ALPNProtocols: ['http/1.1'] },
      () => s.write('GET /tags HTTP/1.1\r\nhost: catalogue\r\nconnection: close\r\n\r\n'),
    );
    s.setTimeout(3_000, () => s.destroy(new Error('no answer within 3 s')));
    s.on('data', (d) => {
      got += d.toString();
    });
    s.on('error', (err) => resolve({ got, how: err.message }));
    s.on('close', () => resolve({ got, how: 'connection closed' }));
  });
  if (/HTTP\/1\.1/.test(noCert.got)) fail(`a TLS client with no certificate got an answer: ${noCert.got}`);
  const refusal = await logLineSince(
    inbound,
    from,
    /no certificate|handshake with a client failed/,
    2_000,
    'the catalogue proxy logged no refusal',
  ).catch(() => undefined);
  say(`   A TLS client with no certificate (GET /tags) → no answer (${noCert.how})`);
  say(
    refusal === undefined
      ? '        the inbound proxy logged nothing about it'
      : `        the inbound proxy logged: ${withoutTimeAndLevel(refusal)}`,
  );
  say();

  // 7. Offboarding.
  const catalogClientEntry = entryIds[names.indexOf('catalog-client')];
  const client = proxies['catalog-client'];
  say(`7. Offboarding the catalog-client VM: tessera entry delete --entry-id ${catalogClientEntry}`);
  const last = await call(outboundPorts['catalog-client'], 'GET', '/tags').catch((err) =>
    fail(`GET /tags from the catalog-client failed before the deletion: ${err.message}`),
  );
  if (last.status !== 200) fail(`GET /tags from the catalog-client got ${last.status} before the deletion`);
  say(
    `   Just before: GET /tags from catalog-client → ${last.status}. Now deleting, then calling every 50 ms…`,
  );
  const fromLog = client.stderr.length;
  const deleted = Date.now();
  await cli(adminSocket, 'entry', 'delete', '--entry-id', catalogClientEntry);
  const returned = Date.now();
  let failure;
  let ok = 0;
  while (failure === undefined && Date.now() - deleted < OFFBOARD_LIMIT_MS * 2) {
    const r = await call(outboundPorts['catalog-client'], 'GET', '/tags').catch((err) => ({
      error: err.message,
    }));
    if (r.status === 200) {
      ok++;
      await sleep(50);
    } else failure = { at: Date.now(), what: r.error ?? `${r.status} ${r.body}` };
  }
  if (failure === undefined)
    fail(
      `the catalog-client's calls still succeed ${(OFFBOARD_LIMIT_MS * 2) / 1000} s after its entry was deleted`,
    );
  const ms = failure.at - deleted;
  if (ms > OFFBOARD_LIMIT_MS)
    fail(
      `the catalog-client's calls failed only ${ms} ms after its entry was deleted (limit ${OFFBOARD_LIMIT_MS} ms)`,
    );
  say(
    `   >> ${ms} ms after running \`tessera entry delete\` (the command itself took ${returned - deleted} ms), GET /tags`,
  );
  say(
    ok === 0
      ? `      failed: ${failure.what}. The first call after the command returned already failed.`
      : `      failed: ${failure.what}. ${ok} call${ok === 1 ? '' : 's'} still succeeded after the command returned.`,
  );
  for (let i = 0; i < 3; i++) {
    const r = await call(outboundPorts['catalog-client'], 'GET', '/tags').catch(() => undefined);
    if (r?.status === 200)
      fail('a call of the catalog-client succeeded again after its calls had started failing');
  }
  const lost = await logLineSince(
    client,
    fromLog,
    /no longer gives this workload an identity/,
    3_000,
    'the catalog-client proxy did not log that it lost its identity',
  );
  say('      The next calls fail too. The catalog-client proxy logged:');
  say(`        ${withoutTimeAndLevel(lost)}`);
  say('      The agent told it over the Workload API that it has no identity any more; it closed its');
  say('      connections and refuses new ones, although its last certificate has not expired.');
  const other = await call(outboundPorts['other-client'], 'GET', '/tags').catch((err) =>
    fail(`GET /tags from the other-client failed after the offboarding: ${err.message}`),
  );
  if (other.status !== 403) fail(`GET /tags from the other-client got ${other.status} instead of 403`);
  say(
    `   The other VM is unaffected: GET /tags from other-client → ${other.status} "${other.body}", as before.`,
  );
  say();
}

await demo.run(main, {
  lastStep:
    '8. Cleaning up: stopping the proxies, the agent and the server, and removing the temporary directory.',
});
