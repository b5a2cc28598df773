#!/usr/bin/env node
// `npm run demo`: the whole system on one machine, narrated. A server (SQLite, in a temporary
// directory) and an agent start; two workloads are registered, selected by Unix uid (or, when not
// run as root, by executable path); they run as two processes that talk mTLS with the `spiffe`
// library; a certificate is renewed; the frontend's entry is deleted and its calls are refused once
// its last certificate expires. Everything is removed at the end; exits 0, or 1 saying what failed.
//   npm run build && node scripts/demo.mjs
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import {
  cli,
  createDemo,
  createEntries,
  fail,
  isRoot,
  say,
  startAgent,
  startServer,
  waitForEvent,
  workloadRuns,
} from './demo-lib.mjs';

const TD = 'demo.example';
const BACKEND = `spiffe://${TD}/backend`;
const FRONTEND = `spiffe://${TD}/frontend`;
const SVID_TTL_S = 10;
const DEADLINE_MS = 58_000;

const demo = createDemo({ deadlineMs: DEADLINE_MS });
const short = (serial) => `${serial.slice(0, 8)}…`;
const clock = (iso) => iso.slice(11, 19);

// ---------------------------------------------------------------------------------------------
// The two workloads. Written into the temporary directory; they import the `spiffe` package of
// this repository (its URL is filled in, since a bare specifier resolves from the file's directory).

const workloadPrelude = (spiffeUrl) => `
import { authorizeId, createSpiffeHttpsServer, peerSpiffeId, spiffeHttpsAgent, X509Source } from '${spiffeUrl}';
const emit = (event) => process.stdout.write(JSON.stringify(event) + '\\n');
const about = (svid) => ({ id: svid.id.toString(), serial: svid.leaf.serialNumber, notAfter: svid.expiresAt.toISOString() });
// Give up if no identity comes within 15 s (the signal closes the source, so it is disarmed after).
const deadline = new AbortController();
const timer = setTimeout(() => deadline.abort(), 15000);
const source = await X509Source.create({ signal: deadline.signal });
clearTimeout(timer);
emit({ type: 'svid', ...about(source.getX509Svid()) });
source.on('update', () => emit({ type: 'svid', ...about(source.getX509Svid()) }));
source.on('watchError', (err) => emit({ type: 'watchError', code: err.code, message: err.message }));
process.on('SIGTERM', () => process.exit(0));
`;

// An HTTPS server that answers only spiffe://demo.example/frontend; refusals are logged as events.
const backendScript = (spiffeUrl) => `${workloadPrelude(spiffeUrl)}
const logger = { warn: (message) => emit({ type: 'refused', message }) };
const server = createSpiffeHttpsServer(
  { svid: source, bundles: source, authorizer: authorizeId('${FRONTEND}'), logger },
  (req, res) => res.end('hello ' + peerSpiffeId(req.socket)),
);
server.listen(0, '127.0.0.1', () => emit({ type: 'listening', port: server.address().port }));
`;

// Calls the backend every second over mTLS (a new connection each time, so each call presents the
// current certificate), accepting only spiffe://demo.example/backend.
const frontendScript = (spiffeUrl, port) => `${workloadPrelude(spiffeUrl)}
import * as https from 'node:https';
const agent = spiffeHttpsAgent({ svid: source, bundles: source, authorizer: authorizeId('${BACKEND}') }, { keepAlive: false });
let n = 0;
const call = () => {
  const number = ++n;
  const serial = source.getX509Svid().leaf.serialNumber;
  https
    .get({ host: '127.0.0.1', port: ${port}, path: '/', agent, timeout: 3000 }, (res) => {
      let body = '';
      res.setEncoding('utf8').on('data', (d) => (body += d));
      res.on('end', () => emit({ type: 'call', n: number, ok: true, reply: body, serial }));
    })
    .on('timeout', function () { this.destroy(new Error('no answer within 3 s')); })
    .on('error', (err) => emit({ type: 'call', n: number, ok: false, error: err.message, serial, at: Date.now() }));
};
call();
setInterval(call, 1000);
`;

// ---------------------------------------------------------------------------------------------

async function main() {
  const tmp = demo.tempDir();
  const spiffeUrl = import.meta.resolve('@tessera/spiffe');

  say('Tessera demo: an identity server, an agent and two workloads that talk mTLS, on this machine.');
  say(`Everything lives in ${tmp} and is removed at the end.`);
  say();

  // 1. The server.
  say(`1. Starting the identity server (tessera server run) for the trust domain "${TD}".`);
  say(`   It keeps its CA and registry (SQLite) in the temporary directory. Workload certificates`);
  say(`   will live only ${SVID_TTL_S} seconds, so that you can watch one being renewed.`);
  const { adminSocket, agentPort } = await startServer(demo, { trustDomain: TD, svidTtlS: SVID_TTL_S });
  say(`   The server is up; agents connect to it on 127.0.0.1:${agentPort}.`);
  say();

  // 2. The agent.
  say('2. Starting the agent (tessera agent run), which hands identities to processes on this machine.');
  say('   It proves who it is with a one-time join token from `tessera token generate`, and trusts the');
  say('   server through its CA certificate from `tessera bundle show`.');
  const { agentSocket, agentId } = await startAgent(demo, {
    trustDomain: TD,
    adminSocket,
    agentPort,
    agentName: 'demo-node',
  });
  say(`   The agent is attested as ${agentId}`);
  say(`   and serves the SPIFFE Workload API on ${agentSocket}.`);
  say();

  // 3. The registrations.
  say('3. Registering two workloads with `tessera entry create`, both parented to that agent:');
  const { backend: backendRun, frontend: frontendRun } = workloadRuns(demo, ['backend', 'frontend']);
  const how = isRoot
    ? 'The agent learns the uid of each caller from the kernel (SO_PEERCRED on the socket), not from the caller.'
    : 'Not running as root, so the two workloads cannot run as uids of their own: each runs node under its\n' +
      "   own file name (a hard link, or a copy), and the agent reads the caller's executable from /proc/<pid>/exe.";
  const [, frontendEntry] = await createEntries(adminSocket, agentId, [
    { id: BACKEND, selector: backendRun.selector },
    { id: FRONTEND, selector: frontendRun.selector },
  ]);
  for (const [id, run] of [
    [BACKEND, backendRun],
    [FRONTEND, frontendRun],
  ])
    say(`   ${id.padEnd(32)} for any process with selector ${run.selector}`);
  say(`   ${how}`);
  say();

  // 4. The workloads.
  say('4. Starting the workloads. Each asks the agent for its identity over the Workload API');
  say('   (SPIFFE_ENDPOINT_SOCKET) and gets an X.509 certificate (an X509-SVID) and its private key.');
  const env = { SPIFFE_ENDPOINT_SOCKET: `unix://${agentSocket}` };
  writeFileSync(join(tmp, 'backend.mjs'), backendScript(spiffeUrl));
  const backend = demo.start('backend', backendRun.cmd, [join(tmp, 'backend.mjs')], {
    env,
    uid: backendRun.uid,
    onEvent: (e) => {
      if (e.type === 'refused') say(`   backend  | refused a caller: ${e.message}`);
    },
  });
  const bSvid = await waitForEvent(backend, (e) => e.type === 'svid', 20_000, 'the backend got no identity');
  const { port } = await waitForEvent(
    backend,
    (e) => e.type === 'listening',
    10_000,
    'the backend did not listen',
  );
  if (bSvid.id !== BACKEND) fail(`the backend got ${bSvid.id} instead of ${BACKEND}`);
  say(`   The backend got ${bSvid.id}, selected by ${backendRun.because}.`);
  say(`   It serves HTTPS on 127.0.0.1:${port} and accepts only clients that prove ${FRONTEND}.`);

  let lastSvid;
  let afterDelete = false;
  let toldNoIdentity = false;
  writeFileSync(join(tmp, 'frontend.mjs'), frontendScript(spiffeUrl, port));
  const frontend = demo.start('frontend', frontendRun.cmd, [join(tmp, 'frontend.mjs')], {
    env,
    uid: frontendRun.uid,
    onEvent: (e) => {
      if (e.type === 'call' && e.ok)
        say(
          `   frontend | call ${e.n}: the backend replied "${e.reply}"; my certificate: ${short(e.serial)}`,
        );
      else if (e.type === 'call')
        say(`   frontend | call ${e.n}: FAILED (${e.error}); my certificate: ${short(e.serial)}`);
      else if (e.type === 'svid' && lastSvid !== undefined && e.serial !== lastSvid.serial)
        say(
          `   >> The frontend's certificate was renewed: serial ${short(lastSvid.serial)} → ${short(e.serial)}` +
            ` (valid until ${clock(e.notAfter)}), without a restart.`,
        );
      else if (e.type === 'watchError' && afterDelete && !toldNoIdentity) {
        toldNoIdentity = true;
        say(`   >> The agent told the frontend it has no identity any more (${e.code});`);
        say('      the frontend keeps asking, in case it is registered again.');
      }
      if (e.type === 'svid') lastSvid = e;
    },
  });
  const fSvid = await waitForEvent(
    frontend,
    (e) => e.type === 'svid',
    20_000,
    'the frontend got no identity',
  );
  if (fSvid.id !== FRONTEND) fail(`the frontend got ${fSvid.id} instead of ${FRONTEND}`);
  say(`   The frontend got ${fSvid.id}, selected by ${frontendRun.because}.`);
  say(
    `   Its certificate has serial ${short(fSvid.serial)} (serials are shortened to 8 hex digits here) and`,
  );
  say(
    `   expires at ${clock(fSvid.notAfter)} UTC. It calls the backend every second, over a new mTLS connection`,
  );
  say(
    '   each time. (The two workloads are the scripts backendScript and frontendScript in scripts/demo.mjs.)',
  );
  say();

  const firstOk = await waitForEvent(
    frontend,
    (e) => e.type === 'call' && e.ok,
    10_000,
    'no call of the frontend succeeded',
  );
  say(
    `   >> First successful mTLS call (call ${firstOk.n}): each side checked the other's certificate against the trust`,
  );
  say(`      domain's CA and its SPIFFE ID against what it allows.`);
  say(
    `   Waiting for the agent to renew the frontend's certificate (at about half of its ${SVID_TTL_S} s life)…`,
  );
  const fromRotation = frontend.events.indexOf(fSvid) + 1;
  await waitForEvent(
    frontend,
    (e) => e.type === 'svid' && e.serial !== fSvid.serial,
    SVID_TTL_S * 1000 + 5_000,
    "the frontend's certificate was not renewed",
    fromRotation,
  );
  await waitForEvent(
    frontend,
    (e) => e.type === 'call' && e.ok && e.serial === lastSvid.serial,
    5_000,
    'no call succeeded with the renewed certificate',
  );
  say();

  // 5. The deletion.
  let held = lastSvid;
  say(`5. Deleting the frontend's entry: tessera entry delete --entry-id ${frontendEntry}`);
  say("   The agent will stop renewing the frontend's certificate. A certificate already handed out cannot");
  say(
    `   be recalled, so the frontend keeps using ${short(held.serial)} until it expires at ${clock(held.notAfter)}.`,
  );
  afterDelete = true;
  const fromDelete = frontend.events.length;
  await cli(adminSocket, 'entry', 'delete', '--entry-id', frontendEntry);
  if (lastSvid !== held) {
    held = lastSvid;
    say(
      `   (It was renewed once more just before the deletion: ${short(held.serial)}, until ${clock(held.notAfter)}.)`,
    );
  }
  const expiry = Date.parse(held.notAfter);
  const refused = await waitForEvent(
    frontend,
    (e) => e.type === 'call' && !e.ok,
    Math.max(expiry - Date.now(), 0) + 5_000,
    "the frontend's calls were not refused after its entry was deleted and its certificate expired",
    fromDelete,
  );
  const lateOk = frontend.events.find((e) => e.type === 'call' && e.ok && e.n > refused.n);
  if (lateOk !== undefined)
    fail(`call ${lateOk.n} of the frontend succeeded after call ${refused.n} was refused`);
  const backendSaid = await waitForEvent(
    backend,
    (e) => e.type === 'refused' && e.message.includes(FRONTEND),
    3_000,
    'the backend did not log why it refused the frontend',
  ).catch(() => undefined);
  await waitForEvent(
    frontend,
    (e) => e.type === 'call' && e.n === refused.n + 1,
    3_000,
    'the frontend stopped calling',
  );
  const newSvid = frontend.events.some((e) => e.type === 'svid' && Date.parse(e.notAfter) > expiry);
  if (newSvid) fail('the frontend received a new certificate after its entry was deleted');
  if (backendSaid !== undefined && /has expired/.test(backendSaid.message)) {
    say(
      `   >> The frontend's calls are now refused: its last certificate (serial ${short(held.serial)}) expired at`,
    );
    say(
      `      ${clock(held.notAfter)} and the agent, with no entry for it any more, did not renew it. The backend`,
    );
    say(
      '      checks every client certificate, sees it has expired and closes the connection before reading the',
    );
    say(
      '      request (the frontend only sees "socket hang up"). Nothing was revoked: the short lifetime of',
    );
    say('      certificates is what bounds how long a deleted workload keeps its access.');
  } else {
    const why =
      backendSaid === undefined ? 'the backend logged no reason' : `the backend said: ${backendSaid.message}`;
    const when = refused.at < expiry ? 'before' : 'after';
    say(
      `   >> The frontend's calls are now refused, ${when} its last certificate's expiry (${clock(held.notAfter)}); ${why}.`,
    );
  }
  say();
}

await demo.run(main, {
  lastStep:
    '6. Cleaning up: stopping the workloads, the agent and the server, and removing the temporary directory.',
});
