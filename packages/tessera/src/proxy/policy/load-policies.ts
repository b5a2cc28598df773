/**
 * Loads AuthorizationPolicies from files and directories. A directory is read non-recursively, its
 * *.yaml, *.yml and *.json files in name order, so operators can point at a directory of Istio
 * configuration. Every problem of every file is thrown together.
 */
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import type { AuthorizationPolicy } from './authorization-policy.js';
import { checkDuplicates, readPolicyDocuments } from './parse-policies.js';
import { PolicyInvalidError, type PolicyProblem } from './policy-error.js';
import type { PolicyWarning } from './types.js';

const EXTENSIONS = ['.yaml', '.yml', '.json'];

/**
 * Reads the policies in `paths` (files or directories), in order. Throws a TesseraError
 * ERR_POLICY_INVALID (a PolicyInvalidError with `problems`) listing every problem found.
 */
export function loadPolicies(paths: string[]): {
  policies: readonly AuthorizationPolicy[];
  warnings: PolicyWarning[];
} {
  if (!Array.isArray(paths))
    throw new TypeError('loadPolicies: paths must be an array of file or directory paths');
  const policies: AuthorizationPolicy[] = [];
  const warnings: PolicyWarning[] = [];
  const problems: PolicyProblem[] = [];
  const unreadable = (file: string, err: unknown, what: string) =>
    problems.push({
      file,
      line: undefined,
      path: '',
      message: `cannot read the ${what}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`,
    });

  for (const path of paths) {
    let files: string[];
    try {
      if (statSync(path).isDirectory()) {
        files = readdirSync(path)
          .filter((name) => EXTENSIONS.some((ext) => name.endsWith(ext)))
          .sort()
          .map((name) => join(path, name))
          .filter((file) => statSync(file).isFile());
        if (files.length === 0) {
          warnings.push({
            file: path,
            line: undefined,
            message: `the directory has no ${EXTENSIONS.map((e) => `*${e}`).join(', ')} files`,
          });
        }
      } else {
        files = [path];
      }
    } catch (err) {
      unreadable(path, err, 'file or directory');
      continue;
    }
    for (const file of files) {
      let text: string;
      try {
        text = readFileSync(file, 'utf8');
      } catch (err) {
        unreadable(file, err, 'file');
        continue;
      }
      const r = readPolicyDocuments(text, file);
      policies.push(...r.policies);
      warnings.push(...r.warnings);
      problems.push(...r.problems);
    }
  }
  checkDuplicates(policies, problems);
  if (problems.length > 0) throw new PolicyInvalidError(problems, warnings);
  return { policies: Object.freeze(policies), warnings };
}
