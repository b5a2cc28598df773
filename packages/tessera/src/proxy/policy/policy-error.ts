/**
 * The error policy loading throws: every problem found, each with its file, line, policy and field,
 * in one TesseraError (code ERR_POLICY_INVALID) so an operator fixes them all in one pass.
 */
import { TesseraError, TesseraErrorCode } from '../../common/errors.js';
import type { PolicyWarning } from './types.js';

export interface PolicyProblem {
  file: string;
  line: number | undefined;
  /** `<namespace>/<name>` when known. */
  policy?: string;
  /** The field, e.g. `spec.rules[0].from[0].source.principals[1]`; empty for the whole file. */
  path: string;
  message: string;
}

/** One problem as a line: `file:line: ns/name: path: message`. */
export function formatPolicyProblem(p: PolicyProblem): string {
  return [
    `${p.file}${p.line === undefined ? '' : `:${p.line}`}`,
    p.policy,
    p.path === '' ? undefined : p.path,
    p.message,
  ]
    .filter((x) => x !== undefined)
    .join(': ');
}

/**
 * ERR_POLICY_INVALID with the problems as data (and the warnings found on the way, for linters);
 * the message lists the problems one per line.
 */
export class PolicyInvalidError extends TesseraError {
  readonly problems: readonly PolicyProblem[];
  readonly warnings: readonly PolicyWarning[];

  constructor(problems: readonly PolicyProblem[], warnings: readonly PolicyWarning[] = []) {
    const n = problems.length;
    super(
      TesseraErrorCode.POLICY_INVALID,
      `policy: ${n} problem${n === 1 ? '' : 's'} in the authorization policies:\n${problems
        .map((p) => `  ${formatPolicyProblem(p)}`)
        .join('\n')}`,
    );
    this.problems = Object.freeze([...problems]);
    this.warnings = Object.freeze([...warnings]);
  }
}
