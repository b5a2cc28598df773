// The jwt node attestor against a real HTTPS token issuer in this process (OIDC discovery + JWKS,
// tokens signed by real RSA keys): first through the attestor the server builds from server.yaml
// (a fake clock, a real SQLite datastore), then with a real server and agent.
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { createWorkloadApiClient, parseTrustDomain } from '@tessera/spiffe';
import { FakeClock, makeTempDir, type TempDir } from '@tessera/testkit';
import { parseAgentConfig } from '../../agent/config.js';
import { type RunningAgent, startAgent } from '../../agent/run.js';
import { ConfigError } from '../../common/config-schema.js';
import { isTesseraError, TesseraErrorCode } from '../../common/errors.js';
import { createLogger } from '../../common/log.js';
import { startTestServer } from '../api/test-server.test.util.js';
import { parseServerConfig } from '../config.js';
import { openSqliteDatastore } from '../datastore/sqlite.js';
import type { Datastore } from '../datastore/types.js';
import type { RunningServer } from '../run.js';
import { globMatches, jwtNodeAttestorPlugin } from './jwt.js';
import { startTestOidcIssuer, type TestOidcIssuer } from './oidc-issuer.test.util.js';
import type { NodeAttestor } from './types.js';

const quiet = createLogger({ level: 'error', write: () => undefined });
const noChallenge = async (): Promise<Uint8Array> => assert.fail('the jwt attestor sends no challenge');
const td = parseTrustDomain('example.org');

/** A GitHub Actions OIDC token's claims, as GitHub's documentation shows them. */
function githubClaims(over: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    jti: 'c5a3b1e0-7d2f-4a8e-9b1c-2f3e4d5a6b7c',
    sub: 'repo:octo-org/octo-repo:environment:prod',
    aud: 'example.org',
    environment: 'prod',
    ref: 'refs/heads/main',
    sha: 'e4b2f8a1c3d5',
    repository: 'octo-org/octo-repo',
    repository_owner: 'octo-org',
    actor_id: '12',
    repository_visibility: 'private',
    repository_id: '74',
    repository_owner_id: '65',
    run_id: '5150',
    run_number: '10',
    run_attempt: '2',
    runner_environment: 'github-hosted',
    actor: 'octocat',
    workflow: 'deploy',
    head_ref: '',
    base_ref: '',
    event_name: 'push',
    ref_type: 'branch',
    workflow_ref: 'octo-org/octo-repo/.github/workflows/deploy.yml@refs/heads/main',
    job_workflow_ref: 'octo-org/octo-repo/.github/workflows/deploy.yml@refs/heads/main',
    ...over,
  };
}

/** A GitLab CI id_token's claims, as GitLab's documentation shows them. */
function gitlabClaims(over: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    namespace_id: '72',
    namespace_path: 'platform',
    project_id: '20',
    project_path: 'platform/billing',
    user_id: '1',
    user_login: 'sample-user',
    user_email: 'sample-user@example.com',
    pipeline_id: '574',
    pipeline_source: 'push',
    job_id: '302',
    ref: 'main',
    ref_type: 'branch',
    ref_path: 'refs/heads/main',
    ref_protected: 'true',
    environment: 'production',
    environment_protected: 'true',
    deployment_tier: 'production',
    runner_id: 1,
    runner_environment: 'gitlab-hosted',
    sha: '714a629c0b401fdce83e847fc9589983fc6f46bc',
    project_visibility: 'private',
    ci_config_ref_uri: 'gitlab.example.com/platform/billing//.gitlab-ci.yml@refs/heads/main',
    jti: '235b3a54-b797-45c7-ae9a-f72d7bc6ef5b',
    sub: 'project_path:platform/billing:ref_type:branch:ref:main',
    aud: 'example.org',
    ...over,
  };
}

function rejectsWith(p: Promise<unknown>, code: string, pattern: RegExp): Promise<void> {
  return assert.rejects(p, (e: unknown) => {
    assert.ok(isTesseraError(e), `expected a TesseraError, got ${String(e)}`);
    assert.equal(e.code, code);
    assert.match(e.message, pattern);
    return true;
  });
}

describe('jwt node attestor', () => {
  let tmp: TempDir;
  let ci: TestOidcIssuer;
  let github: TestOidcIssuer;
  let gitlab: TestOidcIssuer;
  let ds: Datastore;
  let n = 0;
  const clock = new FakeClock();

  before(async () => {
    tmp = await makeTempDir('jwt-attestor-');
    const now = () => clock.now();
    // An issuer with a path (as GitHub Enterprise's and many providers' are).
    [ci, github, gitlab] = await Promise.all([
      startTestOidcIssuer(tmp.path, { name: 'ci', path: '/tenants/ci', now }),
      startTestOidcIssuer(tmp.path, { name: 'github', now }),
      startTestOidcIssuer(tmp.path, { name: 'gitlab', now }),
    ]);
    ds = await openSqliteDatastore(':memory:');
  });
  after(async () => {
    await ds?.close();
    await Promise.all([ci?.close(), github?.close(), gitlab?.close()]);
    await tmp?.cleanup();
  });

  /** The jwt section of a server.yaml, validated as the server validates it, then built. */
  function section(yaml: string): unknown {
    const c = parseServerConfig(`trust_domain: example.org\ndata_dir: ${tmp.path}/data\n${yaml}`);
    return (c.node_attestors as unknown as Record<string, unknown>).jwt;
  }
  const build = (yaml: string): Promise<NodeAttestor> =>
    Promise.resolve(
      jwtNodeAttestorPlugin.create(section(yaml), {
        trustDomain: td,
        datastore: ds,
        logger: quiet,
        now: () => clock.now(),
      }),
    );
  const attest = (a: NodeAttestor, token: string) => a.attest(Buffer.from(token), noChallenge, clock.now());
  const ciYaml = (extra = '') =>
    [
      'node_attestors:',
      '  jwt:',
      '    issuers:',
      '      ci:',
      `        issuer: ${ci.issuer}`,
      `        ca_bundle_path: ${ci.caPath}`,
      '        selector_claims: [team, groups]',
      '        allow:',
      '          - team: payments',
      '            env: prod',
      '          - team: "plat*"',
      extra,
    ].join('\n');
  const ciToken = (claims: Record<string, unknown> = {}, o?: Parameters<TestOidcIssuer['sign']>[1]) =>
    ci.sign(
      { sub: 'runner-1', aud: 'example.org', jti: `jti-${++n}`, team: 'payments', env: 'prod', ...claims },
      o,
    );

  it('attests a token that matches an allow rule: agent ID by jti, selectors iss, sub and the selector claims', async () => {
    const a = await build(ciYaml());
    assert.deepEqual(ci.requests.slice(0, 2), [
      '/tenants/ci/.well-known/openid-configuration',
      '/tenants/ci/jwks',
    ]);
    const r = await attest(a, ciToken({ jti: 'run-42', groups: ['ops', 'dev'] }));
    assert.equal(r.spiffeId, 'spiffe://example.org/tessera/agent/jwt/ci/run-42');
    assert.deepEqual(
      r.selectors.map((s) => `${s.type}:${s.value}`),
      [
        'jwt:issuer:ci',
        `jwt:iss:${ci.issuer}`,
        'jwt:sub:runner-1',
        'jwt:team:payments',
        'jwt:groups:ops',
        'jwt:groups:dev',
      ],
    );
    // The second rule, by glob; an agent_id_claim value that is no path segment is hashed.
    const b = await build(ciYaml('        agent_id_claim: sub'));
    const r2 = await attest(b, ciToken({ team: 'platform', env: 'dev', sub: 'repo:x/y' }));
    assert.match(r2.spiffeId, /^spiffe:\/\/example\.org\/tessera\/agent\/jwt\/ci\/[0-9a-f]{32}$/);
  });

  it('refuses a token of an issuer that is not configured, and one whose iss differs from its signer', async () => {
    const a = await build(ciYaml());
    await rejectsWith(
      attest(a, github.sign({ sub: 'x', aud: 'example.org', jti: 'j', team: 'payments', env: 'prod' })),
      TesseraErrorCode.ATTESTATION_FAILED,
      new RegExp(
        `^jwt: wrong issuer: no issuer is configured for iss "${github.issuer}" \\(configured: ci = ${ci.issuer}\\)$`,
      ),
    );
    // Claims naming the configured issuer, signed by another issuer's key: the key is not found.
    await rejectsWith(
      attest(a, ciToken({}, { key: github.key })),
      TesseraErrorCode.ATTESTATION_FAILED,
      new RegExp(
        `^jwt: issuer ci: unknown signing key: the JWKS of ${ci.issuer} \\(by OIDC discovery\\) has no key ID "${github.key.kid}"`,
      ),
    );
  });

  it('refuses a wrong audience; the default audience is the trust domain, audience sets others', async () => {
    const a = await build(ciYaml());
    await rejectsWith(
      attest(a, ciToken({ aud: ['https://github.com/octo-org', 'vault'] })),
      TesseraErrorCode.ATTESTATION_FAILED,
      /^jwt: issuer ci: wrong audience: aud is \["https:\/\/github.com\/octo-org","vault"\], expected one of \["example.org"\] \(audience\)$/,
    );
    await rejectsWith(
      attest(a, ciToken({ aud: undefined })),
      TesseraErrorCode.ATTESTATION_FAILED,
      /wrong audience: the token has no aud/,
    );
    const b = await build(ciYaml('        audience: [tessera-ci, example.org]'));
    await attest(b, ciToken({ aud: ['vault', 'tessera-ci'] }));
  });

  it('refuses an expired token, one not yet valid and one issued in the future, within a clock_skew leeway', async () => {
    const a = await build(ciYaml('        clock_skew: 10s'));
    const t = Math.floor(clock.now().getTime() / 1000);
    await rejectsWith(
      attest(a, ciToken({ iat: t - 600, nbf: t - 600, exp: t - 11 })),
      TesseraErrorCode.ATTESTATION_FAILED,
      /^jwt: issuer ci: expired: exp .* is before now .* \(leeway 10s, clock_skew\)$/,
    );
    await attest(a, ciToken({ iat: t - 600, nbf: t - 600, exp: t - 9 }));
    await rejectsWith(
      attest(a, ciToken({ nbf: t + 60 })),
      TesseraErrorCode.ATTESTATION_FAILED,
      /^jwt: issuer ci: not valid yet: nbf/,
    );
    await rejectsWith(
      attest(a, ciToken({ iat: t + 60, nbf: undefined })),
      TesseraErrorCode.ATTESTATION_FAILED,
      /^jwt: issuer ci: issued in the future: iat/,
    );
    await rejectsWith(
      attest(a, ciToken({ exp: undefined })),
      TesseraErrorCode.ATTESTATION_FAILED,
      /^jwt: issuer ci: the token has no exp/,
    );
  });

  it('refuses a bad signature, alg none, HS256 keyed with the public key, and what is not a JWT', async () => {
    const a = await build(ciYaml());
    const impostor = ci.newKey(ci.key.kid);
    await rejectsWith(
      attest(a, ciToken({}, { key: impostor })),
      TesseraErrorCode.ATTESTATION_FAILED,
      new RegExp(
        `^jwt: issuer ci: bad signature: the token \\(RS256, kid "${ci.key.kid}"\\) is not signed by the key`,
      ),
    );
    const tampered = ciToken().split('.');
    tampered[1] = Buffer.from(
      JSON.stringify({
        ...JSON.parse(Buffer.from(tampered[1] as string, 'base64url').toString()),
        team: 'platform',
      }),
    ).toString('base64url');
    await rejectsWith(attest(a, tampered.join('.')), TesseraErrorCode.ATTESTATION_FAILED, /bad signature/);
    await rejectsWith(
      attest(a, ciToken({}, { header: { alg: 'none' } })),
      TesseraErrorCode.ATTESTATION_FAILED,
      /^jwt: issuer ci: the token's alg "none" is not allowed; allowed: RS256/,
    );
    await rejectsWith(
      attest(a, ciToken({}, { header: { alg: 'HS256' } })),
      TesseraErrorCode.ATTESTATION_FAILED,
      /the token's alg "HS256" is not allowed/,
    );
    await rejectsWith(
      attest(a, 'not a token'),
      TesseraErrorCode.ATTESTATION_FAILED,
      /^jwt: the evidence is not a JWT in compact form/,
    );
  });

  it('on an unknown key ID fetches the JWKS again (at most every 30 s): a rotated-in key is accepted, an unpublished one refused', async () => {
    const a = await build(ciYaml());
    const rotated = ci.newKey('rotated-1');
    ci.publish([ci.key, rotated]);
    clock.advance(31_000); // the keys were fetched at start: not again within 30 s
    const before = ci.requests.length;
    await attest(a, ciToken({}, { key: rotated }));
    assert.deepEqual(ci.requests.slice(before), [
      '/tenants/ci/.well-known/openid-configuration',
      '/tenants/ci/jwks',
    ]);
    const unpublished = ci.newKey('never-published');
    await rejectsWith(
      attest(a, ciToken({}, { key: unpublished })),
      TesseraErrorCode.ATTESTATION_FAILED,
      /^jwt: issuer ci: unknown signing key: .* has no key ID "never-published" \(it holds key IDs .*, rotated-1, loaded 0s ago\)$/,
    );
    assert.equal(ci.requests.length, before + 2, 'no second fetch within 30 s');
    clock.advance(31_000);
    await rejectsWith(
      attest(a, ciToken({}, { key: unpublished })),
      TesseraErrorCode.ATTESTATION_FAILED,
      /never-published/,
    );
    assert.equal(ci.requests.length, before + 4, 'one more fetch after 30 s');
    // A key the issuer stops publishing is no longer trusted once the keys are refreshed (5 min).
    ci.publish([rotated]);
    clock.advance(5 * 60_000);
    await rejectsWith(
      attest(a, ciToken()),
      TesseraErrorCode.ATTESTATION_FAILED,
      new RegExp(`has no key ID "${ci.key.kid}"`),
    );
    ci.publish([ci.key]);
    clock.advance(5 * 60_000);
  });

  it('refuses a token no allow rule matches, naming each rule and the claim that failed, never the token', async () => {
    const a = await build(ciYaml());
    const token = ciToken({ team: 'research', env: 'prod' });
    await assert.rejects(attest(a, token), (e: unknown) => {
      assert.ok(isTesseraError(e, TesseraErrorCode.ATTESTATION_FAILED));
      assert.equal(
        e.message,
        'jwt: issuer ci: no allow rule matches the token: allow[0]: team is "research", not "payments"; allow[1]: team is "research", not "plat*"',
      );
      assert.ok(!e.message.includes(token.split('.')[2] as string));
      return true;
    });
    await rejectsWith(
      attest(a, ciToken({ team: 'payments', env: undefined })),
      TesseraErrorCode.ATTESTATION_FAILED,
      /allow\[0\]: the token has no env claim; allow\[1\]: team is "payments", not "plat\*"$/,
    );
    await rejectsWith(
      attest(a, ciToken({ team: { name: 'payments' } })),
      TesseraErrorCode.ATTESTATION_FAILED,
      /allow\[0\]: team is not a string \(\{"name":"payments"\}\)/,
    );
    await rejectsWith(
      attest(a, ciToken({ jti: undefined })),
      TesseraErrorCode.ATTESTATION_FAILED,
      /^jwt: issuer ci: the token has no jti claim to name the agent by \(agent_id_claim\)/,
    );
  });

  it('glob rule values: * matches any run of characters, slashes included; the rest is literal', () => {
    assert.ok(globMatches('refs/heads/*', 'refs/heads/release/1.2'));
    assert.ok(globMatches('octo-org/*', 'octo-org/octo-repo'));
    assert.ok(!globMatches('octo-org/*', 'octo-org-evil/x'));
    assert.ok(globMatches('a.b', 'a.b') && !globMatches('a.b', 'axb'));
    assert.ok(globMatches('v*-rc*', 'v1.2-rc3') && !globMatches('v*-rc', 'v1.2-rc3'));
  });

  it('refuses a replayed token until it expires, on every attestor sharing the datastore', async () => {
    const a = await build(ciYaml());
    const b = await build(ciYaml());
    const token = ciToken();
    await attest(a, token);
    await rejectsWith(
      attest(b, token),
      TesseraErrorCode.ATTESTATION_FAILED,
      /^jwt: issuer ci: replay: this token was used to attest before \(sha256 [0-9a-f]{16}…\); each token attests once — present a new one$/,
    );
    await rejectsWith(attest(a, token), TesseraErrorCode.ATTESTATION_FAILED, /replay/);
  });

  it('github preset: GitHub Actions tokens pass by repository, ref and environment; a fork, another branch or environment does not', async () => {
    const yaml = [
      'node_attestors:',
      '  jwt:',
      '    issuers:',
      '      github:',
      '        preset: github',
      // GitHub Enterprise Server's issuer is its own host; here, the local issuer.
      `        issuer: ${github.issuer}`,
      `        ca_bundle_path: ${github.caPath}`,
      '        allow:',
      '          - repository: octo-org/octo-repo',
      '            ref: refs/heads/main',
      '            environment: prod',
      '          - repository_owner: octo-org',
      '            workflow: nightly',
      '            ref: refs/tags/v*',
    ].join('\n');
    const a = await build(yaml);
    const sign = (over: Record<string, unknown>) => github.sign(githubClaims({ jti: `gh-${++n}`, ...over }));
    const r = await attest(a, sign({ jti: 'c5a3b1e0-7d2f-4a8e-9b1c-2f3e4d5a6b7c' }));
    assert.equal(
      r.spiffeId,
      'spiffe://example.org/tessera/agent/jwt/github/c5a3b1e0-7d2f-4a8e-9b1c-2f3e4d5a6b7c',
    );
    assert.deepEqual(
      r.selectors.map((s) => `${s.type}:${s.value}`),
      [
        'jwt:issuer:github',
        `jwt:iss:${github.issuer}`,
        'jwt:sub:repo:octo-org/octo-repo:environment:prod',
        'jwt:repository:octo-org/octo-repo',
        'jwt:repository_owner:octo-org',
        'jwt:ref:refs/heads/main',
        'jwt:ref_type:branch',
        'jwt:workflow:deploy',
        'jwt:environment:prod',
        'jwt:event_name:push',
        'jwt:runner_environment:github-hosted',
      ],
    );
    await attest(
      a,
      sign({
        repository: 'octo-org/other',
        workflow: 'nightly',
        ref: 'refs/tags/v1.4.0',
        environment: undefined,
      }),
    );
    await rejectsWith(
      attest(a, sign({ repository: 'evil-fork/octo-repo', repository_owner: 'evil-fork' })),
      TesseraErrorCode.ATTESTATION_FAILED,
      /^jwt: issuer github: no allow rule matches the token: allow\[0\]: repository is "evil-fork\/octo-repo", not "octo-org\/octo-repo"; allow\[1\]: repository_owner is "evil-fork", not "octo-org"$/,
    );
    await rejectsWith(
      attest(a, sign({ ref: 'refs/heads/feature' })),
      TesseraErrorCode.ATTESTATION_FAILED,
      /allow\[0\]: ref is "refs\/heads\/feature", not "refs\/heads\/main"; allow\[1\]: workflow is "deploy", not "nightly"/,
    );
    await rejectsWith(
      attest(a, sign({ environment: 'staging' })),
      TesseraErrorCode.ATTESTATION_FAILED,
      /allow\[0\]: environment is "staging", not "prod"/,
    );
    // GitHub's default audience is the owner's URL; the job must ask for the trust domain's.
    await rejectsWith(
      attest(a, sign({ aud: 'https://github.com/octo-org' })),
      TesseraErrorCode.ATTESTATION_FAILED,
      /wrong audience/,
    );
  });

  it('gitlab preset: GitLab CI id_tokens of a self-managed instance pass by project path, protected ref and pipeline source', async () => {
    const yaml = [
      'node_attestors:',
      '  jwt:',
      '    issuers:',
      '      gitlab:',
      '        preset: gitlab',
      `        issuer: ${gitlab.issuer}`,
      `        ca_bundle_path: ${gitlab.caPath}`,
      '        allow:',
      '          - project_path: platform/*',
      '            ref_type: branch',
      '            ref: main',
      '            ref_protected: "true"',
      '            pipeline_source: push',
    ].join('\n');
    const a = await build(yaml);
    const sign = (over: Record<string, unknown>) => gitlab.sign(gitlabClaims({ jti: `gl-${++n}`, ...over }));
    const r = await attest(a, sign({ jti: '235b3a54-b797-45c7-ae9a-f72d7bc6ef5b' }));
    assert.equal(
      r.spiffeId,
      'spiffe://example.org/tessera/agent/jwt/gitlab/235b3a54-b797-45c7-ae9a-f72d7bc6ef5b',
    );
    assert.deepEqual(
      r.selectors.map((s) => `${s.type}:${s.value}`),
      [
        'jwt:issuer:gitlab',
        `jwt:iss:${gitlab.issuer}`,
        'jwt:sub:project_path:platform/billing:ref_type:branch:ref:main',
        'jwt:project_path:platform/billing',
        'jwt:namespace_path:platform',
        'jwt:ref:main',
        'jwt:ref_type:branch',
        'jwt:pipeline_source:push',
        'jwt:environment:production',
      ],
    );
    await rejectsWith(
      attest(a, sign({ project_path: 'research/billing', namespace_path: 'research' })),
      TesseraErrorCode.ATTESTATION_FAILED,
      /^jwt: issuer gitlab: no allow rule matches the token: allow\[0\]: project_path is "research\/billing", not "platform\/\*"$/,
    );
    await rejectsWith(
      attest(a, sign({ ref: 'feature-1', ref_protected: 'false' })),
      TesseraErrorCode.ATTESTATION_FAILED,
      /allow\[0\]: ref is "feature-1", not "main"/,
    );
    await rejectsWith(
      attest(a, sign({ pipeline_source: 'merge_request_event' })),
      TesseraErrorCode.ATTESTATION_FAILED,
      /allow\[0\]: pipeline_source is "merge_request_event", not "push"/,
    );
  });

  it('keys from a JWKS file (jwks_path) or a JWKS URL (jwks_uri), without discovery', async () => {
    const file = join(tmp.path, 'ci-jwks.json');
    writeFileSync(file, JSON.stringify({ keys: [{ ...ci.key.jwk(), use: 'sig' }] }));
    const before = ci.requests.length;
    const a = await build(ciYaml(`        jwks_path: ${file}`));
    await attest(a, ciToken());
    assert.equal(ci.requests.length, before, 'a JWKS file needs no request');
    const b = await build(ciYaml(`        jwks_uri: ${ci.jwksUri}`));
    await attest(b, ciToken());
    assert.deepEqual(ci.requests.slice(before), ['/tenants/ci/jwks']);
  });

  it('an issuer that cannot be reached at start does not stop the server: tokens are refused saying why until its keys can be fetched', async () => {
    const lines: string[] = [];
    ci.fail(503);
    const a = await jwtNodeAttestorPlugin.create(section(ciYaml()), {
      trustDomain: td,
      datastore: ds,
      logger: createLogger({ level: 'warn', write: (l) => lines.push(l) }),
      now: () => clock.now(),
    });
    assert.ok(
      lines.some((l) => l.includes('issuers.ci') && l.includes('answered HTTP 503')),
      lines.join('\n'),
    );
    clock.advance(31_000);
    await rejectsWith(
      attest(a, ciToken()),
      TesseraErrorCode.ATTESTATION_FAILED,
      new RegExp(
        `^jwt: issuer ci: unknown signing key: no signing keys: the JWKS of ${ci.issuer} \\(by OIDC discovery\\) could not be loaded \\(${ci.issuer}/.well-known/openid-configuration answered HTTP 503\\)$`,
      ),
    );
    ci.fail(0);
    clock.advance(31_000);
    await attest(a, ciToken());
  });

  it('configuration problems are named by key: the schema with file and line, the rest all together at start', async () => {
    // (section() puts two lines before these: trust_domain and data_dir.)
    assert.throws(
      () =>
        section(
          [
            'node_attestors:',
            '  jwt:',
            '    issuers:',
            '      "bad name":',
            '        issuer: https://ci.example.com',
            '        allow: [{ a: b }]',
            '      ci:',
            '        preset: circleci',
            '        issuer: http://ci.example.com',
            '        allow: []',
            '        tokn_path: x',
          ].join('\n'),
        ),
      (e: unknown) => {
        assert.ok(e instanceof ConfigError);
        assert.deepEqual(
          e.problems.map((p) => `${p.line}:${p.path}: ${p.message}`),
          [
            '6:node_attestors.jwt.issuers.bad name: must be a name of letters, digits, . _ - (it is a path segment of agent IDs); got "bad name"',
            '10:node_attestors.jwt.issuers.ci.preset: must be one of github, gitlab; got "circleci"',
            '11:node_attestors.jwt.issuers.ci.issuer: must be an https:// URL; got "http://ci.example.com"',
            '12:node_attestors.jwt.issuers.ci.allow: must have at least 1 item',
            '13:node_attestors.jwt.issuers.ci.tokn_path: unknown key; allowed here: preset, issuer, jwks_uri, jwks_path, ca_bundle_path, clock_skew, audience, allow, selector_claims, agent_id_claim',
          ],
        );
        return true;
      },
    );
    await assert.rejects(
      build(
        [
          'node_attestors:',
          '  jwt:',
          '    issuers:',
          '      gh:',
          '        preset: github',
          '        allow:',
          '          - ref: refs/heads/main',
          '          - repo: octo-org/octo-repo',
          '          - repository_owner: "octo-*"',
          '          - {}',
          '      gh2:',
          '        preset: github',
          '        jwks_path: /etc/tessera/gh.json',
          '        jwks_uri: https://example.com/jwks',
          '        selector_claims: [issuer]',
          '        allow: [{ repository: "octo-org/*" }]',
          '      ci:',
          '        allow: [{ team: a }]',
        ].join('\n'),
      ),
      (e: unknown) => {
        assert.equal(
          (e as Error).message,
          [
            "issuers.gh.allow[0]: must name one of repository, repository_id, repository_owner, repository_owner_id, sub — every github user's tokens come from the same issuer, so a rule without them would admit any of them",
            'issuers.gh.allow[1].repo: not a claim the github preset matches; use one of sub, repository, repository_id, repository_owner, repository_owner_id, repository_visibility, ref, ref_type, ref_protected, workflow, workflow_ref, job_workflow_ref, environment, event_name, actor, actor_id, runner_environment',
            "issuers.gh.allow[1]: must name one of repository, repository_id, repository_owner, repository_owner_id, sub — every github user's tokens come from the same issuer, so a rule without them would admit any of them",
            'issuers.gh.allow[2].repository_owner: "octo-*" would match names of other owners; a * may only come after the owner, e.g. "octo-org/*"',
            'issuers.gh.allow[3]: is empty; a rule names at least one claim',
            'issuers.gh2: set one of jwks_path and jwks_uri, not both (neither: OIDC discovery from issuer)',
            'issuers.gh2.selector_claims: "issuer" is taken by the jwt:issuer:<name> selector; it cannot be a selector claim',
            'issuers.gh2.issuer: https://token.actions.githubusercontent.com is the issuer of gh already; merge their allow rules',
            'issuers.ci.issuer: is required without a preset (the exact iss of the tokens)',
          ].join('; '),
        );
        return true;
      },
    );
    await assert.rejects(
      build(['node_attestors:', '  jwt:', '    issuers: {}'].join('\n')),
      /^Error: issuers: name at least one issuer/,
    );
    await assert.rejects(
      build(ciYaml(`        jwks_path: ${tmp.path}/missing.json`)),
      new RegExp(`^Error: issuers\\.ci\\.jwks_path: cannot read ${tmp.path}/missing\\.json: ENOENT$`),
    );
    await assert.rejects(
      build(ciYaml().replace(ci.caPath, `${tmp.path}/nope.pem`)),
      new RegExp(`^Error: issuers\\.ci\\.ca_bundle_path: cannot read ${tmp.path}/nope\\.pem: ENOENT$`),
    );
  });

  describe('with a real server and agent', () => {
    let server: RunningServer;
    const agents: RunningAgent[] = [];
    before(async () => {
      server = await startTestServer(tmp.path, [
        'node_attestors:',
        '  jwt:',
        '    issuers:',
        '      github:',
        '        preset: github',
        `        issuer: ${github.issuer}`,
        `        ca_bundle_path: ${github.caPath}`,
        '        allow:',
        '          - repository: octo-org/octo-repo',
        '            ref: refs/heads/main',
      ]);
      // Every runner of octo-org/octo-repo is "ci-runners"; the deploy identity hangs off that alias.
      await server.datastore.createEntry({
        spiffeId: 'spiffe://example.org/ci-runners/octo-repo',
        parentId: 'spiffe://example.org/tessera/server',
        selectors: [{ type: 'jwt', value: 'repository:octo-org/octo-repo' }],
      });
      await server.datastore.createEntry({
        spiffeId: 'spiffe://example.org/deploy',
        parentId: 'spiffe://example.org/ci-runners/octo-repo',
        selectors: [{ type: 'unix', value: `uid:${process.getuid?.() ?? 0}` }],
      });
    });
    after(async () => {
      for (const a of agents) await a.stop();
      await server?.stop();
    });
    // The runner's token, signed by the issuer with the real clock (the server's).
    const runnerToken = (over: Record<string, unknown> = {}) => {
      const t = Math.floor(Date.now() / 1000);
      return github.sign(githubClaims({ jti: `run-${++n}`, iat: t, nbf: t, exp: t + 300, ...over }));
    };
    const agentConfig = (name: string, attestor: string) =>
      parseAgentConfig(
        [
          'trust_domain: example.org',
          'server_address: 127.0.0.1',
          `server_port: ${server.agentApiPort}`,
          'insecure_bootstrap: true',
          `socket_path: ${tmp.path}/${name}.sock`,
          `data_dir: ${tmp.path}/${name}`,
          'health: { port: 0 }',
          `node_attestor: ${attestor}`,
        ].join('\n'),
      );

    it('an agent with a runner token file attests, and its workload gets the SVID of the alias entry', async () => {
      writeFileSync(join(tmp.path, 'runner.jwt'), `${runnerToken({ jti: 'gh-run-1' })}\n`);
      const agent = await startAgent(agentConfig('gh1', `{ jwt: { token_path: ${tmp.path}/runner.jwt } }`), {
        logger: quiet,
      });
      agents.push(agent);
      assert.equal(agent.manager.id, 'spiffe://example.org/tessera/agent/jwt/github/gh-run-1');
      const client = createWorkloadApiClient({ address: `unix://${agent.socketPath}` });
      try {
        const ctx = await client.fetchX509Context();
        assert.deepEqual(
          ctx.svids.map((s) => s.id.toString()),
          ['spiffe://example.org/deploy'],
        );
      } finally {
        client.close();
      }
      // The same file again (a second agent, a copied token): refused as a replay.
      await assert.rejects(
        startAgent(agentConfig('gh1-again', `{ jwt: { token_path: ${tmp.path}/runner.jwt } }`), {
          logger: quiet,
        }),
        (e: unknown) => {
          assert.ok(isTesseraError(e, TesseraErrorCode.STARTUP));
          assert.match(
            e.message,
            /node attestation \(jwt\) with the server at .* failed: .*jwt: issuer github: replay: this token was used to attest before/,
          );
          return true;
        },
      );
    });

    it('an agent with a token in an environment variable attests; a token no rule matches is refused, the agent told which rule failed', async () => {
      process.env.TESSERA_TEST_ID_TOKEN = runnerToken({ jti: 'gh-run-2' });
      try {
        const agent = await startAgent(agentConfig('gh2', '{ jwt: { token_env: TESSERA_TEST_ID_TOKEN } }'), {
          logger: quiet,
        });
        agents.push(agent);
        assert.equal(agent.manager.id, 'spiffe://example.org/tessera/agent/jwt/github/gh-run-2');
        process.env.TESSERA_TEST_ID_TOKEN = runnerToken({ ref: 'refs/heads/feature' });
        await assert.rejects(
          startAgent(agentConfig('gh3', '{ jwt: { token_env: TESSERA_TEST_ID_TOKEN } }'), { logger: quiet }),
          /jwt: issuer github: no allow rule matches the token: allow\[0\]: ref is "refs\/heads\/feature", not "refs\/heads\/main"/,
        );
        delete process.env.TESSERA_TEST_ID_TOKEN;
        await assert.rejects(
          startAgent(agentConfig('gh4', '{ jwt: { token_env: TESSERA_TEST_ID_TOKEN } }'), { logger: quiet }),
          /node_attestor\.jwt: token_env: the environment variable TESSERA_TEST_ID_TOKEN is not set or empty/,
        );
        await assert.rejects(
          startAgent(agentConfig('gh5', `{ jwt: { token_path: ${tmp.path}/runner.jwt, token_env: X } }`), {
            logger: quiet,
          }),
          /node_attestor\.jwt: set one of token_path \(a file holding the token\) and token_env/,
        );
      } finally {
        delete process.env.TESSERA_TEST_ID_TOKEN;
      }
    });

    it('a server whose jwt section is wrong does not start, naming the key', async () => {
      await assert.rejects(
        startTestServer(join(tmp.path, 'bad-server'), [
          'node_attestors:',
          '  jwt:',
          '    issuers:',
          '      github: { preset: github, allow: [{ ref: refs/heads/main }] }',
        ]),
        (e: unknown) => {
          assert.ok(isTesseraError(e, TesseraErrorCode.STARTUP));
          assert.match(
            e.message,
            /^server: node_attestors\.jwt: issuers\.github\.allow\[0\]: must name one of repository/,
          );
          return true;
        },
      );
    });
  });
});
