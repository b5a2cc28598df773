// The jwt node attestor: a node that holds a JWT from an issuer the operator trusts — a CI runner's
// OIDC token (GitHub Actions, GitLab CI) or any OIDC provider's — presents it once. The server
// verifies it with the issuer's keys (OIDC discovery, a JWKS URL, or a JWKS file), checks iss, aud
// and time, then Teleport-style allow rules: a list of rules, each a map claim → value (`*` matches
// any run of characters); the token passes if one rule matches all of its claims. A token attests
// once (its digest is recorded until it expires). Several issuers can be configured, each by name:
//   node_attestors.jwt.issuers.<name>: { preset?, issuer, jwks_path | jwks_uri, audience, allow, … }
// Agent ID: …/tessera/agent/jwt/<name>/<agent_id_claim's value, or its SHA-256 when not a path
// segment>. Selectors: jwt:issuer:<name>, jwt:iss:<iss>, jwt:sub:<sub>, jwt:<claim>:<value> for each
// of selector_claims the token carries.
import { createHash } from 'node:crypto';
import type { Field } from '../../common/config-schema.js';
import { TesseraError, TesseraErrorCode } from '../../common/errors.js';
import type { Selector } from '../datastore/types.js';
import {
  httpsUrl,
  JWT_KEYS_FIELDS,
  type JwtKeys,
  type JwtKeysConfig,
  segmentName,
  startKeys,
} from './jwt-keys.js';
import { type JwtClaims, NodeJwtError, peekClaims, usableUntil, verifyNodeJwt } from './jwt-verify.js';
import type { NodeAttestorContext, NodeAttestorPlugin } from './registry.js';
import { type AttestationResult, agentId, type NodeAttestor } from './types.js';

/** A preset: the issuer's default URL, the claims its rules may name, and which of them pin a tenant. */
interface Preset {
  readonly issuer: string | undefined;
  /** Rule keys allowed (anything else is a typo, refused at start). */
  readonly claims: readonly string[];
  /**
   * Every rule must name one of these: the issuer is shared by everyone on the service, so a rule
   * without them would let any repository or project in.
   */
  readonly pin: readonly string[];
  readonly selectorClaims: readonly string[];
}

export const JWT_PRESETS: Readonly<Record<'github' | 'gitlab', Preset>> = {
  // https://docs.github.com/en/actions/security-for-github-actions/security-hardening-your-deployments/about-security-hardening-with-openid-connect
  github: {
    issuer: 'https://token.actions.githubusercontent.com',
    claims: [
      'sub',
      'repository',
      'repository_id',
      'repository_owner',
      'repository_owner_id',
      'repository_visibility',
      'ref',
      'ref_type',
      'ref_protected',
      'workflow',
      'workflow_ref',
      'job_workflow_ref',
      'environment',
      'event_name',
      'actor',
      'actor_id',
      'runner_environment',
    ],
    pin: ['repository', 'repository_id', 'repository_owner', 'repository_owner_id', 'sub'],
    selectorClaims: [
      'repository',
      'repository_owner',
      'ref',
      'ref_type',
      'workflow',
      'environment',
      'event_name',
      'runner_environment',
    ],
  },
  // https://docs.gitlab.com/ci/secrets/id_token_authentication/
  gitlab: {
    issuer: 'https://gitlab.com',
    claims: [
      'sub',
      'project_path',
      'project_id',
      'namespace_path',
      'namespace_id',
      'ref',
      'ref_type',
      'ref_protected',
      'pipeline_source',
      'environment',
      'environment_protected',
      'deployment_tier',
      'user_login',
      'ci_config_ref_uri',
      'runner_environment',
    ],
    pin: ['project_path', 'project_id', 'namespace_path', 'namespace_id', 'sub'],
    selectorClaims: ['project_path', 'namespace_path', 'ref', 'ref_type', 'pipeline_source', 'environment'],
  },
};

const claimName = (v: string) =>
  /^[A-Za-z0-9_.:-]+$/.test(v)
    ? undefined
    : `must be a claim name (letters, digits, _ . : -); got ${JSON.stringify(v)}`;

const ISSUER_FIELD = {
  kind: 'object',
  fields: {
    preset: { kind: 'enum', values: ['github', 'gitlab'] },
    // The exact iss of the tokens; the preset's by default (github: token.actions.githubusercontent.com,
    // gitlab: gitlab.com — set it for a self-managed GitLab or GitHub Enterprise Server).
    issuer: { kind: 'string', check: httpsUrl },
    ...JWT_KEYS_FIELDS,
    // The token's aud must name one of these; default: the trust domain's name.
    audience: { kind: 'list', single: true, of: { kind: 'string', required: true } },
    allow: { kind: 'list', required: true, minItems: 1, of: { kind: 'string_map' } },
    // Claims made into selectors jwt:<claim>:<value>; default: the preset's, none without one.
    selector_claims: { kind: 'list', of: { kind: 'string', required: true, check: claimName } },
    // The claim whose value names the agent (…/jwt/<name>/<value>); jti: one agent per token.
    agent_id_claim: { kind: 'string', default: 'jti', check: claimName },
  },
} as const satisfies Field;

export const JWT_CONFIG = {
  kind: 'object',
  fields: {
    issuers: { kind: 'map', of: ISSUER_FIELD, checkKey: segmentName },
  },
} as const satisfies Field & { kind: 'object' };

interface IssuerConfig extends JwtKeysConfig {
  readonly preset?: 'github' | 'gitlab';
  readonly issuer?: string;
  readonly audience: readonly string[];
  readonly allow: readonly Readonly<Record<string, string>>[];
  readonly selector_claims: readonly string[];
  readonly agent_id_claim: string;
}

interface JwtConfig {
  readonly issuers: Readonly<Record<string, IssuerConfig>>;
}

/** A rule value: `*` matches any run of characters (slashes included); everything else is literal. */
export function globMatches(pattern: string, value: string): boolean {
  if (!pattern.includes('*')) return pattern === value;
  const re = pattern
    .split('*')
    .map((p) => p.replace(/[.+?^${}()|[\]\\]/g, '\\$&'))
    .join('.*');
  return new RegExp(`^${re}$`, 's').test(value);
}

/** A claim as a string for rules and selectors: strings, numbers and booleans; undefined otherwise. */
function claimText(v: unknown): string | undefined {
  if (typeof v === 'string') return v;
  if (typeof v === 'number' || typeof v === 'boolean') return String(v);
  return undefined;
}

/** Why `rule` does not match `claims`, or undefined when it does. */
function ruleMismatch(rule: Readonly<Record<string, string>>, claims: JwtClaims): string | undefined {
  for (const [claim, want] of Object.entries(rule)) {
    const v = claims[claim];
    if (v === undefined) return `the token has no ${claim} claim`;
    const got = claimText(v);
    if (got === undefined) return `${claim} is not a string (${JSON.stringify(v)})`;
    if (!globMatches(want, got)) return `${claim} is ${JSON.stringify(got)}, not ${JSON.stringify(want)}`;
  }
  return undefined;
}

/** The agent ID's last segment: the value as is when it is a valid path segment, else its SHA-256. */
export function idSegment(value: string): string {
  return /^[A-Za-z0-9_-][A-Za-z0-9._-]*$/.test(value) && value.length <= 128
    ? value
    : createHash('sha256').update(value).digest('hex').slice(0, 32);
}

interface Issuer {
  readonly name: string;
  readonly iss: string;
  readonly audiences: readonly string[];
  readonly config: IssuerConfig;
  readonly keys: JwtKeys;
  readonly selectorClaims: readonly string[];
}

/** Problems between keys of one issuer that the schema cannot see; each names its key. */
function issuerProblems(name: string, c: IssuerConfig): string[] {
  const key = `issuers.${name}`;
  const out: string[] = [];
  const preset = c.preset === undefined ? undefined : JWT_PRESETS[c.preset];
  if (c.issuer === undefined && preset?.issuer === undefined)
    out.push(`${key}.issuer: is required without a preset (the exact iss of the tokens)`);
  if (c.jwks_path !== undefined && c.jwks_uri !== undefined)
    out.push(`${key}: set one of jwks_path and jwks_uri, not both (neither: OIDC discovery from issuer)`);
  if (c.selector_claims.includes('issuer'))
    out.push(
      `${key}.selector_claims: "issuer" is taken by the jwt:issuer:<name> selector; it cannot be a selector claim`,
    );
  c.allow.forEach((rule, i) => {
    const claims = Object.keys(rule);
    if (claims.length === 0) out.push(`${key}.allow[${i}]: is empty; a rule names at least one claim`);
    if (preset === undefined) return;
    for (const claim of claims)
      if (!preset.claims.includes(claim))
        out.push(
          `${key}.allow[${i}].${claim}: not a claim the ${c.preset} preset matches; use one of ${preset.claims.join(', ')}`,
        );
    for (const claim of claims) {
      const v = rule[claim] as string;
      const star = v.indexOf('*');
      // octo-* would match octo-evil/…, a name anyone can register: a * may only follow a '/'.
      if (preset.pin.includes(claim) && star >= 0 && !v.slice(0, star).includes('/'))
        out.push(
          `${key}.allow[${i}].${claim}: ${JSON.stringify(v)} would match names of other owners; a * may only come after the owner, e.g. "octo-org/*"`,
        );
    }
    if (claims.length > 0 && !claims.some((claim) => preset.pin.includes(claim)))
      out.push(
        `${key}.allow[${i}]: must name one of ${preset.pin.join(', ')} — every ${c.preset} user's tokens come from the same issuer, so a rule without them would admit any of them`,
      );
  });
  return out;
}

export class JwtAttestor implements NodeAttestor {
  readonly type = 'jwt';
  readonly #ctx: NodeAttestorContext;
  readonly #byIss: ReadonlyMap<string, Issuer>;

  constructor(ctx: NodeAttestorContext, issuers: readonly Issuer[]) {
    this.#ctx = ctx;
    this.#byIss = new Map(issuers.map((i) => [i.iss, i]));
  }

  async attest(payload: Uint8Array, _challenge: unknown, now: Date): Promise<AttestationResult> {
    const token = Buffer.from(payload).toString('utf8').trim();
    let peeked: JwtClaims;
    try {
      peeked = peekClaims(token);
    } catch (err) {
      throw failed(undefined, (err as Error).message, err);
    }
    const issuer = typeof peeked.iss === 'string' ? this.#byIss.get(peeked.iss) : undefined;
    if (issuer === undefined)
      throw failed(
        undefined,
        `wrong issuer: no issuer is configured for iss ${JSON.stringify(peeked.iss)} (configured: ${[...this.#byIss.values()].map((i) => `${i.name} = ${i.iss}`).join(', ')})`,
      );
    let claims: JwtClaims;
    try {
      claims = await verifyNodeJwt(token, {
        keys: issuer.keys,
        issuer: issuer.iss,
        audiences: issuer.audiences,
        clockSkewMs: issuer.config.clock_skew,
        now,
      });
    } catch (err) {
      if (err instanceof NodeJwtError) throw failed(issuer, err.message, err);
      throw err;
    }
    const rules = issuer.config.allow;
    const why: string[] = [];
    const matched = rules.findIndex((rule, i) => {
      const m = ruleMismatch(rule, claims);
      if (m !== undefined) why.push(`allow[${i}]: ${m}`);
      return m === undefined;
    });
    if (matched < 0) throw failed(issuer, `no allow rule matches the token: ${why.join('; ')}`);
    const idClaim = issuer.config.agent_id_claim;
    const idValue = claimText(claims[idClaim]);
    if (idValue === undefined || idValue === '')
      throw failed(
        issuer,
        `the token has no ${idClaim} claim to name the agent by (agent_id_claim); set agent_id_claim to a claim its tokens carry, e.g. sub`,
      );
    const digest = createHash('sha256').update(token).digest('hex');
    const first = await this.#ctx.datastore.useEvidence(
      'jwt',
      digest,
      usableUntil(claims, issuer.config.clock_skew),
      now,
    );
    if (!first)
      throw failed(
        issuer,
        `replay: this token was used to attest before (sha256 ${digest.slice(0, 16)}…); each token attests once — present a new one`,
      );
    return {
      spiffeId: agentId(this.#ctx.trustDomain, 'jwt', `${issuer.name}/${idSegment(idValue)}`),
      selectors: selectorsOf(issuer, claims),
    };
  }
}

function selectorsOf(issuer: Issuer, claims: JwtClaims): Selector[] {
  const out: Selector[] = [{ type: 'jwt', value: `issuer:${issuer.name}` }];
  const seen = new Set<string>();
  for (const claim of ['iss', 'sub', ...issuer.selectorClaims]) {
    if (seen.has(claim)) continue;
    seen.add(claim);
    const v = claims[claim];
    const values = Array.isArray(v) ? v.map(claimText) : [claimText(v)];
    for (const s of values) if (s !== undefined) out.push({ type: 'jwt', value: `${claim}:${s}` });
  }
  return out;
}

function failed(issuer: Issuer | undefined, message: string, cause?: unknown): TesseraError {
  return new TesseraError(
    TesseraErrorCode.ATTESTATION_FAILED,
    `jwt: ${issuer === undefined ? '' : `issuer ${issuer.name}: `}${message}`,
    cause === undefined ? undefined : { cause },
  );
}

export const jwtNodeAttestorPlugin: NodeAttestorPlugin = {
  name: 'jwt',
  config: JWT_CONFIG,
  async create(raw, ctx) {
    const config = raw as JwtConfig;
    const names = Object.keys(config.issuers);
    const problems: string[] = [];
    if (names.length === 0) problems.push('issuers: name at least one issuer (issuers: { <name>: { … } })');
    const seen = new Map<string, string>();
    for (const name of names) {
      const c = config.issuers[name] as IssuerConfig;
      problems.push(...issuerProblems(name, c));
      const iss = c.issuer ?? (c.preset === undefined ? undefined : JWT_PRESETS[c.preset].issuer);
      if (iss === undefined) continue;
      const other = seen.get(iss);
      if (other !== undefined)
        problems.push(
          `issuers.${name}.issuer: ${iss} is the issuer of ${other} already; merge their allow rules`,
        );
      seen.set(iss, name);
    }
    if (problems.length > 0) throw new Error(problems.join('; '));
    const issuers: Issuer[] = [];
    for (const name of names) {
      const c = config.issuers[name] as IssuerConfig;
      const preset = c.preset === undefined ? undefined : JWT_PRESETS[c.preset];
      const iss = (c.issuer ?? preset?.issuer) as string;
      issuers.push({
        name,
        iss,
        audiences: c.audience.length > 0 ? c.audience : [ctx.trustDomain.name],
        config: c,
        keys: await startKeys(c, iss, `issuers.${name}`, ctx),
        selectorClaims: c.selector_claims.length > 0 ? c.selector_claims : (preset?.selectorClaims ?? []),
      });
    }
    return new JwtAttestor(ctx, issuers);
  },
};
