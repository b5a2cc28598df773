/**
 * The policy engine's public shapes: what a request looks like to a policy, and what a decision
 * says. Pure data — no node:net / node:tls here; the proxy fills a PolicyRequest from a connection.
 */

/** Who the proxy is: Istio selects policies by the workload's namespace and labels. */
export interface PolicyWorkload {
  /** The namespace the workload is in (policies in other namespaces do not apply, except the root's). */
  namespace: string;
  /** The labels `selector.matchLabels` is compared with. */
  labels: Readonly<Record<string, string>>;
  /** The namespace whose policies apply to every workload; Istio's default is `istio-system`. */
  rootNamespace?: string;
}

/** The attributes of one request (HTTP) or connection (TCP) that rules are matched against. */
export interface PolicyRequest {
  /** 'http' for an HTTP request, 'tcp' for a raw connection: HTTP-only fields follow Istio's TCP rules. */
  protocol: 'http' | 'tcp';
  /** The peer's verified SPIFFE ID (`spiffe://td/path`), absent without a client certificate. */
  sourcePrincipal?: string;
  /** The direct peer's address (ipBlocks, source.ip). */
  sourceIp?: string;
  /** The original client's address (remoteIpBlocks, remote.ip); defaults to sourceIp. */
  remoteIp?: string;
  /** The address and port the connection was accepted on (destination.ip, destination.port, ports). */
  destinationIp?: string;
  destinationPort?: number;
  /** The TLS server name the client asked for (connection.sni). */
  sni?: string;
  /** HTTP attributes; absent for TCP. */
  http?: {
    method: string;
    /** The request target's path with the query string (matching uses the part before `?`). */
    path: string;
    /** The Host / :authority header. */
    host: string;
    /** Header names in lower case. */
    headers: Readonly<Record<string, string | readonly string[] | undefined>>;
  };
  /** The verified JWT-SVID of the request, if any (requestPrincipals, request.auth.*). */
  auth?: {
    /** Istio's request principal: `<iss>/<sub>`, or `<sub>` when the token has no issuer. */
    principal: string;
    audiences: readonly string[];
    /** `azp` if present. */
    presenter?: string;
    claims: Readonly<Record<string, unknown>>;
  };
}

export type PolicyAction = 'ALLOW' | 'DENY' | 'AUDIT';

/** Which policy and rule a decision came from. */
export interface PolicyRef {
  /** `<namespace>/<name>`. */
  policy: string;
  action: PolicyAction;
  /** The index of the matching rule in `spec.rules`. */
  rule: number;
}

export interface PolicyDecision {
  allowed: boolean;
  /** The DENY or ALLOW policy that decided; absent when no policy decided (no ALLOW applies, or none matched). */
  decidedBy?: PolicyRef;
  /** One sentence for logs and `tessera policy check`, e.g. `denied by DENY policy sock-shop/deny-post rule 0`. */
  reason: string;
  /** AUDIT policies whose rule matched (they never change the decision). */
  audited: readonly PolicyRef[];
}

/** A problem found while loading that does not stop the load (e.g. HTTP-only fields on a TCP listener). */
export interface PolicyWarning {
  file: string;
  line: number | undefined;
  /** `<namespace>/<name>` when known. */
  policy?: string;
  message: string;
}
