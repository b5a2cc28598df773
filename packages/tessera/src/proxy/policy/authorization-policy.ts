/**
 * An Istio AuthorizationPolicy as Tessera holds it once loaded: Istio's field names and shape
 * (`metadata`, `spec.rules[].from[].source.principals`…), checked, with defaults applied (namespace
 * `default`, action `ALLOW`, ports as strings), frozen, and with where each field came from.
 */
import type { PolicyAction } from './types.js';

/** The API versions accepted; Istio serves the same schema under both. */
export const POLICY_API_VERSIONS = ['security.istio.io/v1', 'security.istio.io/v1beta1'] as const;

export interface AuthorizationPolicy {
  readonly apiVersion: (typeof POLICY_API_VERSIONS)[number];
  readonly kind: 'AuthorizationPolicy';
  readonly metadata: {
    readonly name: string;
    /** `default` when the document has none, as kubectl would apply it. */
    readonly namespace: string;
  };
  readonly spec: AuthorizationPolicySpec;
  /** Where the policy was read from, for messages. Not part of Istio's resource. */
  readonly origin: PolicyOrigin;
}

export interface AuthorizationPolicySpec {
  /** Absent: every workload of the namespace (of the mesh, in the root namespace). */
  readonly selector?: { readonly matchLabels: Readonly<Record<string, string>> };
  /** `ALLOW` when the document has none. CUSTOM is refused at load. */
  readonly action: PolicyAction;
  /** Empty: the policy never matches (an ALLOW policy with no rules allows nothing). */
  readonly rules: readonly Rule[];
}

/** A rule matches when one `from`, one `to` and every `when` match; an absent list matches anything. */
export interface Rule {
  readonly from?: readonly { readonly source: Source }[];
  readonly to?: readonly { readonly operation: Operation }[];
  readonly when?: readonly Condition[];
}

/** Every field given must match; within a field any value; `not*` fields must match none. */
export interface Source {
  readonly principals?: readonly string[];
  readonly notPrincipals?: readonly string[];
  readonly requestPrincipals?: readonly string[];
  readonly notRequestPrincipals?: readonly string[];
  readonly namespaces?: readonly string[];
  readonly notNamespaces?: readonly string[];
  readonly serviceAccounts?: readonly string[];
  readonly notServiceAccounts?: readonly string[];
  readonly trustDomains?: readonly string[];
  readonly notTrustDomains?: readonly string[];
  readonly ipBlocks?: readonly string[];
  readonly notIpBlocks?: readonly string[];
  readonly remoteIpBlocks?: readonly string[];
  readonly notRemoteIpBlocks?: readonly string[];
}

export interface Operation {
  readonly hosts?: readonly string[];
  readonly notHosts?: readonly string[];
  /** Decimal strings, whether the file had `8080` or `"8080"`. */
  readonly ports?: readonly string[];
  readonly notPorts?: readonly string[];
  readonly methods?: readonly string[];
  readonly notMethods?: readonly string[];
  readonly paths?: readonly string[];
  readonly notPaths?: readonly string[];
}

export interface Condition {
  readonly key: string;
  readonly values?: readonly string[];
  readonly notValues?: readonly string[];
}

export interface PolicyOrigin {
  readonly file: string;
  /** The line of the document (or list item) the policy starts on. */
  readonly line: number;
  /**
   * The line of each field, keyed by its path from the resource, e.g.
   * `spec.rules[0].to[0].operation.methods` or `spec.rules[1].when[0]`.
   */
  readonly lines: Readonly<Record<string, number>>;
}

/** `<namespace>/<name>`, the name decisions and messages use. */
export function policyName(p: AuthorizationPolicy): string {
  return `${p.metadata.namespace}/${p.metadata.name}`;
}
