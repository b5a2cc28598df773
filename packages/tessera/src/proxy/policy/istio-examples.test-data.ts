// The AuthorizationPolicy examples of Istio's documentation, each with the requests the page walks
// through and the decision it shows (a 200 or "connection succeeded" is allowed; a 403, "RBAC: access
// denied" or "connection rejected" is denied). Requests the pages only imply (e.g. "any other
// request is denied") are marked so. Used by istio-examples.test.ts.
import type { PolicyRequest, PolicyWorkload } from './types.js';

const REF = 'https://istio.io/latest/docs/reference/config/security/authorization-policy/';
const CONCEPTS = 'https://istio.io/latest/docs/concepts/security/#authorization';
const HTTP_TASK = 'https://istio.io/latest/docs/tasks/security/authorization/authz-http/';
const TCP_TASK = 'https://istio.io/latest/docs/tasks/security/authorization/authz-tcp/';
const DENY_TASK = 'https://istio.io/latest/docs/tasks/security/authorization/authz-deny/';
const INGRESS_TASK = 'https://istio.io/latest/docs/tasks/security/authorization/authz-ingress/';
const JWT_TASK = 'https://istio.io/latest/docs/tasks/security/authorization/authz-jwt/';

export interface ExampleRequest {
  /** What the page does, e.g. "GET /get with x-token: guest". */
  readonly what: string;
  readonly request: PolicyRequest;
  /** When the request goes to another workload than the example's. */
  readonly workload?: PolicyWorkload;
  readonly allowed: boolean;
  /** `<namespace>/<name>` of the policy that decides; absent when none does. */
  readonly decidedBy?: string;
  /** AUDIT policies that mark the request. */
  readonly audited?: readonly string[];
}

export interface IstioExample {
  readonly name: string;
  /** The page (and section) the policies and the outcomes come from. */
  readonly source: string;
  /** The policies as the page applies them (several documents when it applies several). */
  readonly policies: string;
  readonly workload: PolicyWorkload;
  readonly requests: readonly ExampleRequest[];
  /** Warnings expected from an engine serving TCP (HTTP-only fields); checked when given. */
  readonly tcpWarnings?: readonly RegExp[];
  /** Warnings expected from loading. */
  readonly loadWarnings?: readonly RegExp[];
}

const spiffe = (ns: string, sa: string) => `spiffe://cluster.local/ns/${ns}/sa/${sa}`;
const SLEEP_FOO = spiffe('foo', 'sleep');

interface HttpOptions {
  from?: string;
  headers?: Record<string, string>;
  host?: string;
  port?: number;
  jwt?: { principal: string; claims?: Record<string, unknown> };
  sourceIp?: string;
  remoteIp?: string;
}

function http(method: string, path: string, o: HttpOptions = {}): PolicyRequest {
  return {
    protocol: 'http',
    ...(o.from === undefined ? {} : { sourcePrincipal: o.from }),
    ...(o.sourceIp === undefined ? {} : { sourceIp: o.sourceIp }),
    ...(o.remoteIp === undefined ? {} : { remoteIp: o.remoteIp }),
    destinationPort: o.port ?? 8000,
    http: { method, path, host: o.host ?? 'httpbin.foo:8000', headers: o.headers ?? {} },
    ...(o.jwt === undefined
      ? {}
      : { auth: { principal: o.jwt.principal, audiences: [], claims: o.jwt.claims ?? {} } }),
  };
}

function tcp(port: number, from = SLEEP_FOO): PolicyRequest {
  return { protocol: 'tcp', sourcePrincipal: from, destinationPort: port };
}

const policy = (name: string, namespace: string, spec: string) =>
  `apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: ${name}
  namespace: ${namespace}
spec:
${spec
  .trim()
  .split('\n')
  .map((l) => `  ${l}`)
  .join('\n')}
`;

const HTTPBIN_FOO: PolicyWorkload = { namespace: 'foo', labels: { app: 'httpbin', version: 'v1' } };
const TCP_ECHO: PolicyWorkload = { namespace: 'foo', labels: { app: 'tcp-echo' } };
const INGRESS: PolicyWorkload = { namespace: 'istio-system', labels: { app: 'istio-ingressgateway' } };
const bookinfo = (app: string): PolicyWorkload => ({ namespace: 'default', labels: { app } });

const GOOGLE_JWT = {
  principal: 'https://accounts.google.com/113',
  claims: { iss: 'https://accounts.google.com' },
};
const TESTING = 'testing@secure.istio.io';
const TOKEN = { principal: `${TESTING}/${TESTING}`, claims: { iss: TESTING, sub: TESTING, foo: 'bar' } };
const TOKEN_GROUP = {
  principal: `${TESTING}/${TESTING}`,
  claims: { iss: TESTING, sub: TESTING, groups: ['group1', 'group2'], scope: ['scope1', 'scope2'] },
};
const CLIENT_IP = '192.168.10.15';

const TCP_ALLOW_9000_9001 = policy(
  'tcp-policy',
  'foo',
  `
selector:
  matchLabels:
    app: tcp-echo
action: ALLOW
rules:
- to:
  - operation:
      ports: ["9000", "9001"]
`,
);

const DENY_METHOD_GET = policy(
  'deny-method-get',
  'foo',
  `
selector:
  matchLabels:
    app: httpbin
action: DENY
rules:
- to:
  - operation:
      methods: ["GET"]
`,
);

const DENY_METHOD_GET_UNLESS_ADMIN = policy(
  'deny-method-get',
  'foo',
  `
selector:
  matchLabels:
    app: httpbin
action: DENY
rules:
- to:
  - operation:
      methods: ["GET"]
  when:
  - key: request.headers[x-token]
    notValues: ["admin"]
`,
);

const ingressPolicy = (action: 'ALLOW' | 'DENY', field: 'ipBlocks' | 'remoteIpBlocks', blocks: string[]) =>
  policy(
    'ingress-policy',
    'istio-system',
    `
selector:
  matchLabels:
    app: istio-ingressgateway
action: ${action}
rules:
- from:
  - source:
      ${field}: ${JSON.stringify(blocks)}
`,
  );

const REQUIRE_JWT = policy(
  'require-jwt',
  'foo',
  `
selector:
  matchLabels:
    app: httpbin
action: ALLOW
rules:
- from:
  - source:
      requestPrincipals: ["testing@secure.istio.io/testing@secure.istio.io"]
`,
);

export const ISTIO_EXAMPLES: readonly IstioExample[] = [
  {
    name: 'reference: ALLOW from a service account or a namespace, GET /info* or POST /data, with a Google JWT',
    source: `${REF} (the first example)`,
    workload: HTTPBIN_FOO,
    policies: policy(
      'httpbin',
      'foo',
      `
action: ALLOW
rules:
- from:
  - source:
      principals: ["cluster.local/ns/default/sa/sleep"]
  - source:
      namespaces: ["test"]
  to:
  - operation:
      methods: ["GET"]
      paths: ["/info*"]
  - operation:
      methods: ["POST"]
      paths: ["/data"]
  when:
  - key: request.auth.claims[iss]
    values: ["https://accounts.google.com"]
`,
    ),
    requests: [
      {
        what: 'GET /info/1 from sleep in default, Google JWT',
        request: http('GET', '/info/1', { from: spiffe('default', 'sleep'), jwt: GOOGLE_JWT }),
        allowed: true,
        decidedBy: 'foo/httpbin',
      },
      {
        what: 'POST /data from namespace test, Google JWT',
        request: http('POST', '/data', { from: spiffe('test', 'any'), jwt: GOOGLE_JWT }),
        allowed: true,
        decidedBy: 'foo/httpbin',
      },
      {
        what: '(any other request) GET /info without a JWT',
        request: http('GET', '/info', { from: spiffe('default', 'sleep') }),
        allowed: false,
      },
      {
        what: '(any other request) POST /info from sleep',
        request: http('POST', '/info', { from: spiffe('default', 'sleep'), jwt: GOOGLE_JWT }),
        allowed: false,
      },
      {
        what: '(any other request) GET /info from namespace prod',
        request: http('GET', '/info', { from: spiffe('prod', 'sleep'), jwt: GOOGLE_JWT }),
        allowed: false,
      },
    ],
  },
  {
    name: 'reference: DENY POST from namespace dev',
    source: `${REF} (the second example)`,
    workload: HTTPBIN_FOO,
    policies: policy(
      'httpbin',
      'foo',
      `
action: DENY
rules:
- from:
  - source:
      namespaces: ["dev"]
  to:
  - operation:
      methods: ["POST"]
`,
    ),
    requests: [
      {
        what: 'POST from dev',
        request: http('POST', '/post', { from: spiffe('dev', 'sleep') }),
        allowed: false,
        decidedBy: 'foo/httpbin',
      },
      { what: 'GET from dev', request: http('GET', '/get', { from: spiffe('dev', 'sleep') }), allowed: true },
      { what: 'POST from foo', request: http('POST', '/post', { from: SLEEP_FOO }), allowed: true },
    ],
  },
  {
    name: 'reference: DENY POST on port 8080, and on TCP every connection to 8080',
    source: `${REF} (the third example and the TCP note after it)`,
    workload: HTTPBIN_FOO,
    policies: policy(
      'httpbin',
      'foo',
      `
action: DENY
rules:
- to:
  - operation:
      methods: ["POST"]
      ports: ["8080"]
`,
    ),
    requests: [
      {
        what: 'POST on 8080',
        request: http('POST', '/', { from: SLEEP_FOO, port: 8080 }),
        allowed: false,
        decidedBy: 'foo/httpbin',
      },
      { what: 'GET on 8080', request: http('GET', '/', { from: SLEEP_FOO, port: 8080 }), allowed: true },
      { what: 'POST on 9090', request: http('POST', '/', { from: SLEEP_FOO, port: 9090 }), allowed: true },
      { what: 'TCP on 8080', request: tcp(8080), allowed: false, decidedBy: 'foo/httpbin' },
      { what: 'TCP on 9090', request: tcp(9090), allowed: true },
    ],
    tcpWarnings: [
      /spec\.rules\[0\]\.to\[0\]\.operation\.methods is HTTP-only: .*ignored.*DENY rule 0 matches more/,
    ],
  },
  {
    name: 'reference: AUDIT GET /user/profile/* on app myapi',
    source: `${REF} (the AUDIT example)`,
    workload: { namespace: 'ns1', labels: { app: 'myapi' } },
    policies: policy(
      'anyname',
      'ns1',
      `
selector:
  matchLabels:
    app: myapi
action: AUDIT
rules:
- to:
  - operation:
      methods: ["GET"]
      paths: ["/user/profile/*"]
`,
    ),
    requests: [
      {
        what: 'GET /user/profile/42 is audited, and allowed (AUDIT does not decide)',
        request: http('GET', '/user/profile/42'),
        allowed: true,
        audited: ['ns1/anyname'],
      },
      {
        what: 'POST /user/profile/42 is not audited',
        request: http('POST', '/user/profile/42'),
        allowed: true,
      },
    ],
  },
  {
    name: 'reference and concepts: allow-nothing (spec: {}) denies every request to the namespace',
    source: `${REF} (allow-nothing in foo); ${CONCEPTS} (allow-nothing)`,
    workload: HTTPBIN_FOO,
    policies: policy('allow-nothing', 'foo', '{}'),
    requests: [
      { what: 'GET / to httpbin in foo', request: http('GET', '/', { from: SLEEP_FOO }), allowed: false },
      { what: 'TCP to httpbin in foo', request: tcp(8000), allowed: false },
      {
        what: 'GET / to a workload in bar (the policy is in foo)',
        request: http('GET', '/', { from: SLEEP_FOO }),
        workload: { namespace: 'bar', labels: { app: 'httpbin' } },
        allowed: true,
      },
    ],
  },
  {
    name: 'reference and concepts: allow-all (rules: [{}]) allows every request',
    source: `${REF} (allow-all); ${CONCEPTS} (allow-all)`,
    workload: HTTPBIN_FOO,
    policies: `${policy('allow-nothing', 'foo', '{}')}---\n${policy('allow-all', 'foo', 'rules:\n- {}')}`,
    requests: [
      {
        what: 'DELETE /anything',
        request: http('DELETE', '/anything'),
        allowed: true,
        decidedBy: 'foo/allow-all',
      },
      { what: 'TCP', request: tcp(5432), allowed: true, decidedBy: 'foo/allow-all' },
    ],
  },
  {
    name: 'concepts: deny-all (DENY with rules: [{}]) wins over allow-all',
    source: `${CONCEPTS} (deny-all)`,
    workload: HTTPBIN_FOO,
    policies: `${policy('allow-all', 'foo', 'action: ALLOW\nrules:\n- {}')}---\n${policy('deny-all', 'foo', 'action: DENY\nrules:\n- {}')}`,
    requests: [
      {
        what: 'GET /',
        request: http('GET', '/', { from: SLEEP_FOO }),
        allowed: false,
        decidedBy: 'foo/deny-all',
      },
      { what: 'TCP', request: tcp(9000), allowed: false, decidedBy: 'foo/deny-all' },
    ],
  },
  {
    name: 'reference: allow-nothing selecting app: httpbin in bar',
    source: `${REF} (allow-nothing with a selector)`,
    workload: { namespace: 'bar', labels: { app: 'httpbin' } },
    policies: policy('allow-nothing', 'bar', 'selector:\n  matchLabels:\n    app: httpbin'),
    requests: [
      { what: 'GET / to httpbin in bar', request: http('GET', '/'), allowed: false },
      {
        what: 'GET / to productpage in bar (not selected)',
        request: http('GET', '/'),
        workload: { namespace: 'bar', labels: { app: 'productpage' } },
        allowed: true,
      },
    ],
  },
  {
    name: 'reference: allow-nothing in the root namespace selecting version: v1 in every namespace',
    source: `${REF} (allow-nothing in istio-system)`,
    workload: { namespace: 'foo', labels: { app: 'httpbin', version: 'v1' } },
    policies: policy('allow-nothing', 'istio-system', 'selector:\n  matchLabels:\n    version: v1'),
    requests: [
      { what: 'GET / to a v1 workload in foo', request: http('GET', '/'), allowed: false },
      {
        what: 'GET / to a v1 workload in bar',
        request: http('GET', '/'),
        workload: { namespace: 'bar', labels: { version: 'v1' } },
        allowed: false,
      },
      {
        what: 'GET / to a v2 workload in foo',
        request: http('GET', '/'),
        workload: { namespace: 'foo', labels: { app: 'httpbin', version: 'v2' } },
        allowed: true,
      },
    ],
  },
  {
    name: 'reference: a dry-run DENY policy is not enforced',
    source: `${REF} (the istio.io/dry-run example)`,
    workload: HTTPBIN_FOO,
    policies: `apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: dry-run-example
  namespace: foo
  annotations:
    "istio.io/dry-run": "true"
spec:
  selector:
    matchLabels:
      app: httpbin
  action: DENY
  rules:
  - to:
    - operation:
        paths: ["/headers"]
`,
    requests: [{ what: 'GET /headers', request: http('GET', '/headers'), allowed: true }],
    loadWarnings: [/dry-run/],
  },
  {
    name: 'HTTP task: allow-nothing, then productpage-viewer, details-viewer, reviews-viewer, ratings-viewer',
    source: HTTP_TASK,
    workload: bookinfo('productpage'),
    policies: [
      policy('allow-nothing', 'default', '{}'),
      policy(
        'productpage-viewer',
        'default',
        'selector:\n  matchLabels:\n    app: productpage\naction: ALLOW\nrules:\n- to:\n  - operation:\n      methods: ["GET"]',
      ),
      ...(
        [
          ['details-viewer', 'details', 'bookinfo-productpage'],
          ['reviews-viewer', 'reviews', 'bookinfo-productpage'],
          ['ratings-viewer', 'ratings', 'bookinfo-reviews'],
        ] as const
      ).map(([name, app, sa]) =>
        policy(
          name,
          'default',
          `selector:\n  matchLabels:\n    app: ${app}\naction: ALLOW\nrules:\n- from:\n  - source:\n      principals: ["cluster.local/ns/default/sa/${sa}"]\n  to:\n  - operation:\n      methods: ["GET"]`,
        ),
      ),
    ].join('---\n'),
    requests: [
      {
        what: 'the browser GETs the product page (through the ingress gateway)',
        request: http('GET', '/productpage', {
          from: spiffe('istio-system', 'istio-ingressgateway-service-account'),
        }),
        allowed: true,
        decidedBy: 'default/productpage-viewer',
      },
      {
        what: 'productpage GETs details',
        request: http('GET', '/details/0', { from: spiffe('default', 'bookinfo-productpage') }),
        workload: bookinfo('details'),
        allowed: true,
        decidedBy: 'default/details-viewer',
      },
      {
        what: 'productpage GETs reviews',
        request: http('GET', '/reviews/0', { from: spiffe('default', 'bookinfo-productpage') }),
        workload: bookinfo('reviews'),
        allowed: true,
        decidedBy: 'default/reviews-viewer',
      },
      {
        what: 'reviews GETs ratings',
        request: http('GET', '/ratings/0', { from: spiffe('default', 'bookinfo-reviews') }),
        workload: bookinfo('ratings'),
        allowed: true,
        decidedBy: 'default/ratings-viewer',
      },
      {
        what: 'productpage GETs ratings (not granted: the page shows "Ratings service currently unavailable" until ratings-viewer)',
        request: http('GET', '/ratings/0', { from: spiffe('default', 'bookinfo-productpage') }),
        workload: bookinfo('ratings'),
        allowed: false,
      },
      {
        what: '(only GET is granted) POST to the product page',
        request: http('POST', '/productpage'),
        allowed: false,
      },
    ],
  },
  {
    name: 'TCP task: ALLOW ports 9000 and 9001',
    source: `${TCP_TASK} (Configure ALLOW authorization policy for a TCP workload)`,
    workload: TCP_ECHO,
    policies: TCP_ALLOW_9000_9001,
    requests: [
      { what: 'port 9000 succeeds', request: tcp(9000), allowed: true, decidedBy: 'foo/tcp-policy' },
      { what: 'port 9001 succeeds', request: tcp(9001), allowed: true, decidedBy: 'foo/tcp-policy' },
      { what: 'port 9002 is rejected', request: tcp(9002), allowed: false },
    ],
    tcpWarnings: [],
  },
  {
    name: 'TCP task: an HTTP-only field (methods) makes the ALLOW rule match nothing on TCP',
    source: `${TCP_TASK} (the policy updated with methods: ["GET"] for port 9000)`,
    workload: TCP_ECHO,
    policies: TCP_ALLOW_9000_9001.replace(
      'ports: ["9000", "9001"]',
      'methods: ["GET"]\n        ports: ["9000"]',
    ),
    requests: [
      { what: 'port 9000 is rejected', request: tcp(9000), allowed: false },
      { what: 'port 9001 is rejected', request: tcp(9001), allowed: false },
    ],
    tcpWarnings: [
      /spec\.rules\[0\]\.to\[0\]\.operation\.methods is HTTP-only: .*ALLOW rule 0 matches nothing/,
    ],
  },
  {
    name: 'TCP task: a DENY rule with only HTTP-only fields denies every TCP connection',
    source: `${TCP_TASK} (Configure DENY authorization policy for a TCP workload, first policy)`,
    workload: TCP_ECHO,
    policies: policy(
      'tcp-policy',
      'foo',
      'selector:\n  matchLabels:\n    app: tcp-echo\naction: DENY\nrules:\n- to:\n  - operation:\n      methods: ["GET"]',
    ),
    requests: [
      { what: 'port 9000 is rejected', request: tcp(9000), allowed: false, decidedBy: 'foo/tcp-policy' },
      { what: 'port 9001 is rejected', request: tcp(9001), allowed: false, decidedBy: 'foo/tcp-policy' },
    ],
    tcpWarnings: [/methods is HTTP-only: on TCP connections it is ignored/],
  },
  {
    name: 'TCP task: a DENY rule with methods and ports denies only that port on TCP',
    source: `${TCP_TASK} (Configure DENY authorization policy for a TCP workload, second policy)`,
    workload: TCP_ECHO,
    policies: policy(
      'tcp-policy',
      'foo',
      'selector:\n  matchLabels:\n    app: tcp-echo\naction: DENY\nrules:\n- to:\n  - operation:\n      methods: ["GET"]\n      ports: ["9000"]',
    ),
    requests: [
      { what: 'port 9000 is rejected', request: tcp(9000), allowed: false, decidedBy: 'foo/tcp-policy' },
      { what: 'port 9001 succeeds', request: tcp(9001), allowed: true },
    ],
    tcpWarnings: [/methods is HTTP-only/],
  },
  {
    name: 'concepts: mongodb-policy, one service account on port 27017 (TCP)',
    source: `${CONCEPTS} (Using Istio authorization on plain TCP protocols)`,
    workload: bookinfo('mongodb'),
    policies: policy(
      'mongodb-policy',
      'default',
      `
selector:
  matchLabels:
    app: mongodb
action: ALLOW
rules:
- from:
  - source:
      principals: ["cluster.local/ns/default/sa/bookinfo-ratings-v2"]
  to:
  - operation:
      ports: ["27017"]
`,
    ),
    requests: [
      {
        what: 'ratings-v2 connects to 27017',
        request: tcp(27017, spiffe('default', 'bookinfo-ratings-v2')),
        allowed: true,
        decidedBy: 'default/mongodb-policy',
      },
      {
        what: '(only ratings-v2) ratings-v1 connects',
        request: tcp(27017, spiffe('default', 'bookinfo-ratings-v1')),
        allowed: false,
      },
      {
        what: '(only 27017) ratings-v2 on 27018',
        request: tcp(27018, spiffe('default', 'bookinfo-ratings-v2')),
        allowed: false,
      },
    ],
    tcpWarnings: [],
  },
  {
    name: 'deny task: DENY GET',
    source: `${DENY_TASK} (deny-method-get)`,
    workload: HTTPBIN_FOO,
    policies: DENY_METHOD_GET,
    requests: [
      {
        what: 'GET /get is 403',
        request: http('GET', '/get', { from: SLEEP_FOO }),
        allowed: false,
        decidedBy: 'foo/deny-method-get',
      },
      { what: 'POST /post is 200', request: http('POST', '/post', { from: SLEEP_FOO }), allowed: true },
    ],
  },
  {
    name: 'deny task: DENY GET unless x-token is admin, and allow-path-ip',
    source: `${DENY_TASK} (deny-method-get with notValues, then allow-path-ip)`,
    workload: HTTPBIN_FOO,
    policies: DENY_METHOD_GET_UNLESS_ADMIN,
    requests: [
      {
        what: 'GET /get with x-token: admin is 200',
        request: http('GET', '/get', { headers: { 'x-token': 'admin' } }),
        allowed: true,
      },
      {
        what: 'GET /get with x-token: guest is 403',
        request: http('GET', '/get', { headers: { 'x-token': 'guest' } }),
        allowed: false,
        decidedBy: 'foo/deny-method-get',
      },
    ],
  },
  {
    name: 'deny task: DENY takes precedence over allow-path-ip',
    source: `${DENY_TASK} (allow-path-ip added)`,
    workload: HTTPBIN_FOO,
    policies: `${DENY_METHOD_GET_UNLESS_ADMIN}---\n${policy(
      'allow-path-ip',
      'foo',
      'selector:\n  matchLabels:\n    app: httpbin\naction: ALLOW\nrules:\n- to:\n  - operation:\n      paths: ["/ip"]',
    )}`,
    requests: [
      {
        what: 'GET /ip with x-token: guest is 403 (the DENY policy)',
        request: http('GET', '/ip', { headers: { 'x-token': 'guest' } }),
        allowed: false,
        decidedBy: 'foo/deny-method-get',
      },
      {
        what: 'GET /ip with x-token: admin is 200 (allow-path-ip)',
        request: http('GET', '/ip', { headers: { 'x-token': 'admin' } }),
        allowed: true,
        decidedBy: 'foo/allow-path-ip',
      },
      {
        what: 'GET /get with x-token: admin is 403 (no ALLOW policy matches)',
        request: http('GET', '/get', { headers: { 'x-token': 'admin' } }),
        allowed: false,
      },
    ],
  },
  {
    name: 'ingress task: ALLOW ipBlocks without, then with, the client IP',
    source: `${INGRESS_TASK} (IP-based allow list, ipBlocks)`,
    workload: INGRESS,
    policies: ingressPolicy('ALLOW', 'ipBlocks', ['1.2.3.4', '5.6.7.0/24']),
    requests: [
      {
        what: 'the client is 403',
        request: http('GET', '/headers', { sourceIp: CLIENT_IP }),
        allowed: false,
      },
      {
        what: '(in the list) 5.6.7.8 is allowed',
        request: http('GET', '/headers', { sourceIp: '5.6.7.8' }),
        allowed: true,
        decidedBy: 'istio-system/ingress-policy',
      },
    ],
  },
  {
    name: 'ingress task: ALLOW ipBlocks with the client IP added',
    source: `${INGRESS_TASK} (ingress-policy updated with $CLIENT_IP)`,
    workload: INGRESS,
    policies: ingressPolicy('ALLOW', 'ipBlocks', ['1.2.3.4', '5.6.7.0/24', CLIENT_IP]),
    requests: [
      {
        what: 'the client is 200',
        request: http('GET', '/headers', { sourceIp: CLIENT_IP }),
        allowed: true,
        decidedBy: 'istio-system/ingress-policy',
      },
      {
        what: 'the client on a dual-stack listener (::ffff:192.168.10.15) is 200',
        request: http('GET', '/headers', { sourceIp: `::ffff:${CLIENT_IP}` }),
        allowed: true,
        decidedBy: 'istio-system/ingress-policy',
      },
    ],
  },
  {
    name: 'ingress task: ALLOW remoteIpBlocks (the client behind a load balancer, from X-Forwarded-For)',
    source: `${INGRESS_TASK} (IP-based allow list, remoteIpBlocks)`,
    workload: INGRESS,
    policies: ingressPolicy('ALLOW', 'remoteIpBlocks', ['1.2.3.4', '5.6.7.0/24', CLIENT_IP]),
    requests: [
      {
        what: 'the client, seen through the load balancer 10.0.0.7, is 200',
        request: http('GET', '/headers', { sourceIp: '10.0.0.7', remoteIp: CLIENT_IP }),
        allowed: true,
        decidedBy: 'istio-system/ingress-policy',
      },
      {
        what: 'another client through the same load balancer is 403',
        request: http('GET', '/headers', { sourceIp: '10.0.0.7', remoteIp: '203.0.113.9' }),
        allowed: false,
      },
    ],
  },
  {
    name: 'ingress task: DENY the client IP',
    source: `${INGRESS_TASK} (action DENY)`,
    workload: INGRESS,
    policies: ingressPolicy('DENY', 'ipBlocks', [CLIENT_IP]),
    requests: [
      {
        what: 'the client is 403',
        request: http('GET', '/headers', { sourceIp: CLIENT_IP }),
        allowed: false,
        decidedBy: 'istio-system/ingress-policy',
      },
      {
        what: 'another client (through an online proxy) is allowed',
        request: http('GET', '/headers', { sourceIp: '198.51.100.20' }),
        allowed: true,
      },
    ],
  },
  {
    name: 'JWT task: require-jwt (requestPrincipals)',
    source: `${JWT_TASK} (require-jwt)`,
    workload: HTTPBIN_FOO,
    policies: REQUIRE_JWT,
    requests: [
      {
        what: 'a request with the valid JWT is 200',
        request: http('GET', '/headers', { jwt: TOKEN }),
        allowed: true,
        decidedBy: 'foo/require-jwt',
      },
      { what: 'a request without a JWT is 403', request: http('GET', '/headers'), allowed: false },
    ],
  },
  {
    name: 'JWT task: require-jwt with the list claim groups containing group1',
    source: `${JWT_TASK} (require-jwt with request.auth.claims[groups])`,
    workload: HTTPBIN_FOO,
    policies: REQUIRE_JWT.replace(
      'requestPrincipals: ["testing@secure.istio.io/testing@secure.istio.io"]',
      'requestPrincipals: ["testing@secure.istio.io/testing@secure.istio.io"]\n    when:\n    - key: request.auth.claims[groups]\n      values: ["group1"]',
    ),
    requests: [
      {
        what: 'the JWT with groups [group1, group2] is 200',
        request: http('GET', '/headers', { jwt: TOKEN_GROUP }),
        allowed: true,
        decidedBy: 'foo/require-jwt',
      },
      {
        what: 'the JWT without groups is 403',
        request: http('GET', '/headers', { jwt: TOKEN }),
        allowed: false,
      },
    ],
  },
  {
    name: 'concepts: httpbin-deny, DENY sources not in namespace foo',
    source: `${CONCEPTS} (httpbin-deny)`,
    workload: HTTPBIN_FOO,
    policies: policy(
      'httpbin-deny',
      'foo',
      'selector:\n  matchLabels:\n    app: httpbin\n    version: v1\naction: DENY\nrules:\n- from:\n  - source:\n      notNamespaces: ["foo"]',
    ),
    requests: [
      { what: 'from foo', request: http('GET', '/', { from: SLEEP_FOO }), allowed: true },
      {
        what: 'from bar',
        request: http('GET', '/', { from: spiffe('bar', 'sleep') }),
        allowed: false,
        decidedBy: 'foo/httpbin-deny',
      },
      {
        what: 'plain text (no peer identity, so no namespace)',
        request: http('GET', '/'),
        allowed: false,
        decidedBy: 'foo/httpbin-deny',
      },
    ],
  },
  {
    name: 'concepts: tester, paths with the /test/* prefix or the */info suffix',
    source: `${CONCEPTS} (Value matching)`,
    workload: { namespace: 'default', labels: { app: 'products' } },
    policies: policy(
      'tester',
      'default',
      'selector:\n  matchLabels:\n    app: products\naction: ALLOW\nrules:\n- to:\n  - operation:\n      paths: ["/test/*", "*/info"]',
    ),
    requests: [
      {
        what: 'GET /test/a/b',
        request: http('GET', '/test/a/b'),
        allowed: true,
        decidedBy: 'default/tester',
      },
      {
        what: 'GET /books/info',
        request: http('GET', '/books/info'),
        allowed: true,
        decidedBy: 'default/tester',
      },
      {
        what: 'GET /books/info?x=1 (the query is not part of the path)',
        request: http('GET', '/books/info?x=1'),
        allowed: true,
        decidedBy: 'default/tester',
      },
      { what: 'GET /books', request: http('GET', '/books'), allowed: false },
    ],
  },
  {
    name: 'concepts: disable-jwt-for-healthz, a JWT required except on /healthz',
    source: `${CONCEPTS} (Exclusion matching, ALLOW)`,
    workload: { namespace: 'default', labels: { app: 'products' } },
    policies: policy(
      'disable-jwt-for-healthz',
      'default',
      'selector:\n  matchLabels:\n    app: products\naction: ALLOW\nrules:\n- to:\n  - operation:\n      notPaths: ["/healthz"]\n  from:\n  - source:\n      requestPrincipals: ["*"]',
    ),
    requests: [
      {
        what: 'GET /books with a JWT',
        request: http('GET', '/books', { jwt: TOKEN }),
        allowed: true,
        decidedBy: 'default/disable-jwt-for-healthz',
      },
      { what: 'GET /books without a JWT', request: http('GET', '/books'), allowed: false },
    ],
  },
  {
    name: 'concepts: enable-jwt-for-admin, DENY /admin without a request principal',
    source: `${CONCEPTS} (Exclusion matching, DENY)`,
    workload: { namespace: 'default', labels: { app: 'products' } },
    policies: policy(
      'enable-jwt-for-admin',
      'default',
      'selector:\n  matchLabels:\n    app: products\naction: DENY\nrules:\n- to:\n  - operation:\n      paths: ["/admin"]\n  from:\n  - source:\n      notRequestPrincipals: ["*"]',
    ),
    requests: [
      {
        what: 'GET /admin without a JWT',
        request: http('GET', '/admin'),
        allowed: false,
        decidedBy: 'default/enable-jwt-for-admin',
      },
      { what: 'GET /admin with a JWT', request: http('GET', '/admin', { jwt: TOKEN }), allowed: true },
      { what: 'GET /books without a JWT', request: http('GET', '/books'), allowed: true },
    ],
  },
  {
    name: 'concepts: custom condition on request.headers[version]',
    source: `${CONCEPTS} (Custom conditions)`,
    workload: HTTPBIN_FOO,
    policies: policy(
      'httpbin',
      'foo',
      `
selector:
  matchLabels:
    app: httpbin
    version: v1
action: ALLOW
rules:
- from:
  - source:
      principals: ["cluster.local/ns/default/sa/sleep"]
  to:
  - operation:
      methods: ["GET"]
  when:
  - key: request.headers[version]
    values: ["v1", "v2"]
`,
    ),
    requests: [
      {
        what: 'GET with version: v2 from sleep',
        request: http('GET', '/', { from: spiffe('default', 'sleep'), headers: { version: 'v2' } }),
        allowed: true,
        decidedBy: 'foo/httpbin',
      },
      {
        what: 'GET with version: v3 from sleep',
        request: http('GET', '/', { from: spiffe('default', 'sleep'), headers: { version: 'v3' } }),
        allowed: false,
      },
      {
        what: 'GET without the header',
        request: http('GET', '/', { from: spiffe('default', 'sleep') }),
        allowed: false,
      },
    ],
  },
  {
    name: 'concepts: authenticated callers only (principals: ["*"])',
    source: `${CONCEPTS} (Authenticated and unauthenticated identity)`,
    workload: HTTPBIN_FOO,
    policies: policy(
      'httpbin',
      'foo',
      'selector:\n  matchLabels:\n    app: httpbin\n    version: v1\naction: ALLOW\nrules:\n- from:\n  - source:\n      principals: ["*"]\n  to:\n  - operation:\n      methods: ["GET", "POST"]',
    ),
    requests: [
      {
        what: 'GET from any mTLS peer',
        request: http('GET', '/', { from: spiffe('bar', 'x') }),
        allowed: true,
        decidedBy: 'foo/httpbin',
      },
      { what: 'GET in plain text (no peer identity)', request: http('GET', '/'), allowed: false },
    ],
  },
];
