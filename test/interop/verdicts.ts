/**
 * Verdicts: ours (from the `spiffe` package) and the reference peers' (go-spiffe and py-spiffe,
 * run as child processes), in one shape so they can be compared vector by vector.
 */
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import {
  JwtBundleSet,
  parseAndValidateJwtSvid,
  parseJwtBundle,
  parseSpiffeBundle,
  parseSpiffeId,
  parseTrustDomain,
  parseX509BundlePem,
  parseX509Svid,
  verifyX509Svid,
  X509BundleSet,
} from '@tessera/spiffe';
import { suiteUnavailable } from '@tessera/testkit';
import { certificateDersFromPem, type Vector, type Verdict } from './vectors.js';

const run = promisify(execFile);

/** test/interop in the source tree (this file runs from test/dist/interop). */
export const INTEROP_DIR = fileURLToPath(new URL('../../interop/', import.meta.url));
export const GO_BINARY = join(INTEROP_DIR, 'go', 'bin', 'interop');
export const PYTHON = join(INTEROP_DIR, 'python', '.venv', 'bin', 'python');
export const PYTHON_SCRIPT = join(INTEROP_DIR, 'python', 'verdicts.py');

/**
 * The one rule of every interop suite: without the reference peers (test/interop/setup.sh) the suite
 * is skipped and says so loudly; with TESSERA_REQUIRE_INTEROP=1 a missing peer is a failing test.
 * `needs` are further files the suite runs (e.g. the Envoy binary). Returns true when the suite must skip.
 */
export function interopUnavailable(suite: string, needs: readonly string[] = []): boolean {
  const missing = [...missingPeers(), ...needs.filter((f) => !existsSync(f))];
  if (missing.length === 0) return false;
  return suiteUnavailable(
    suite,
    `reference peers not built (missing ${missing.join(', ')}); run test/interop/setup.sh`,
    'interop reference peers are built',
  );
}

/** What is missing for the peers to run; empty when both are set up. */
export function missingPeers(): string[] {
  const missing: string[] = [];
  if (!existsSync(GO_BINARY)) missing.push(GO_BINARY);
  if (!existsSync(PYTHON)) missing.push(PYTHON);
  return missing;
}

function judge(v: Vector): string {
  switch (v.kind) {
    case 'spiffeid':
      return parseSpiffeId(v.input).toString();
    case 'trustdomain':
      return parseTrustDomain(v.input).name;
    case 'x509bundle':
      return String(parseX509BundlePem(parseTrustDomain(v.trustDomain), v.data).authorities.length);
    case 'jwtbundle':
      return String(parseJwtBundle(parseTrustDomain(v.trustDomain), v.data).authorities.size);
    case 'spiffebundle': {
      const b = parseSpiffeBundle(parseTrustDomain(v.trustDomain), v.data);
      const seq = b.sequenceNumber === undefined ? 'none' : b.sequenceNumber.toString();
      const refresh = b.refreshHint === undefined ? 'none' : String(b.refreshHint);
      return `x509=${b.x509Bundle().authorities.length} jwt=${b.jwtBundle().authorities.size} seq=${seq} refresh=${refresh}`;
    }
    case 'x509svid-verify': {
      const set = new X509BundleSet(
        Object.entries(v.bundles).map(([td, pem]) => parseX509BundlePem(parseTrustDomain(td), pem)),
      );
      const options = v.now === undefined ? {} : { now: new Date(v.now) };
      return verifyX509Svid(certificateDersFromPem(v.chainPem), set, options).id.toString();
    }
    case 'x509svid-parse':
      return parseX509Svid(v.chainPem, v.keyPem).id.toString();
    case 'jwtsvid-validate':
      // Handled in ourVerdict (may be async).
      throw new Error('unreachable');
  }
}

/** Our verdict on one vector. */
export async function ourVerdict(v: Vector): Promise<Verdict> {
  try {
    if (v.kind === 'jwtsvid-validate') {
      const set = new JwtBundleSet(
        Object.entries(v.bundles).map(([td, jwks]) => parseJwtBundle(parseTrustDomain(td), jwks)),
      );
      const svid = await parseAndValidateJwtSvid(v.token, set, v.audience);
      return { id: v.id, ok: true, value: svid.id.toString() };
    }
    return { id: v.id, ok: true, value: judge(v) };
  } catch (err) {
    const e = err as { code?: unknown; message?: unknown };
    return { id: v.id, ok: false, error: `${String(e.code ?? 'no code')}: ${String(e.message ?? err)}` };
  }
}

async function runPeer(file: string, args: string[], vectorsPath: string): Promise<Map<string, Verdict>> {
  const { stdout } = await run(file, [...args, 'verdicts', vectorsPath], {
    maxBuffer: 64 << 20,
    timeout: 120_000,
  });
  const list = JSON.parse(stdout) as Verdict[];
  return new Map(list.map((x) => [x.id, x]));
}

/** Writes the vectors to `dir` and returns go-spiffe's and py-spiffe's verdicts, by vector id. */
export async function peerVerdicts(
  vectors: readonly Vector[],
  dir: string,
): Promise<{ go: Map<string, Verdict>; python: Map<string, Verdict> }> {
  const path = join(dir, 'vectors.json');
  await writeFile(path, JSON.stringify(vectors));
  const [go, python] = await Promise.all([
    runPeer(GO_BINARY, [], path),
    runPeer(PYTHON, [PYTHON_SCRIPT], path),
  ]);
  return { go, python };
}

export interface Disagreement {
  id: string;
  ours: string;
  theirs: string;
  note?: string;
}

function show(v: Verdict | undefined): string {
  if (v === undefined) return '(no verdict)';
  if (v.skipped) return 'skipped';
  return v.ok ? `ok ${v.value ?? ''}`.trim() : `refused: ${v.error ?? ''}`;
}

/**
 * Vectors where the peer's verdict differs from ours: ok vs refused, or a different value when both
 * accept. Vectors the peer skipped are not compared.
 */
export function disagreements(
  vectors: readonly Vector[],
  ours: ReadonlyMap<string, Verdict>,
  theirs: ReadonlyMap<string, Verdict>,
): Disagreement[] {
  const out: Disagreement[] = [];
  for (const v of vectors) {
    const o = ours.get(v.id);
    const t = theirs.get(v.id);
    if (t?.skipped) continue;
    const same = o !== undefined && t !== undefined && o.ok === t.ok && (!o.ok || o.value === t.value);
    if (!same)
      out.push({
        id: v.id,
        ours: show(o),
        theirs: show(t),
        ...(v.note === undefined ? {} : { note: v.note }),
      });
  }
  return out;
}

export function table(rows: readonly Disagreement[], peer: string): string {
  const clip = (s: string) => (s.length > 110 ? `${s.slice(0, 107)}...` : s);
  return rows
    .map(
      (r) =>
        `  ${r.id}${r.note ? `  (${r.note})` : ''}\n    ours: ${clip(r.ours)}\n    ${peer}: ${clip(r.theirs)}`,
    )
    .join('\n');
}
