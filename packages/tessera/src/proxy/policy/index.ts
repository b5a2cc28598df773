// The policy engine's public API: Istio AuthorizationPolicies loaded from files, compiled for one
// workload, evaluated per request. Every export is named here; the other modules are internal.
export type {
  AuthorizationPolicy,
  AuthorizationPolicySpec,
  Condition,
  Operation,
  PolicyOrigin,
  Rule,
  Source,
} from './authorization-policy.js';
export { POLICY_API_VERSIONS, policyName } from './authorization-policy.js';
export { loadPolicies } from './load-policies.js';
export { normalizePath } from './normalize-path.js';
export { parsePolicies } from './parse-policies.js';
export type { PolicyEngine, PolicyEngineOptions } from './policy-engine.js';
export { createPolicyEngine, DEFAULT_ROOT_NAMESPACE } from './policy-engine.js';
export type { PolicyProblem } from './policy-error.js';
export { formatPolicyProblem, PolicyInvalidError } from './policy-error.js';
export type {
  PolicyAction,
  PolicyDecision,
  PolicyRef,
  PolicyRequest,
  PolicyWarning,
  PolicyWorkload,
} from './types.js';
