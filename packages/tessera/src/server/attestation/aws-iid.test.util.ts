// For aws_iid tests, with no AWS: a stand-in for a region's signing certificate (RSA-2048, issued by
// a test CA), identity documents as AWS prints them, their PKCS#7 signatures made by openssl as AWS
// makes them (`openssl cms -sign -stream`: BER, the document enveloped, signed attributes, no
// certificates; base64 in 64-column lines without PEM armour), and an instance metadata service on
// 127.0.0.1 that speaks IMDSv2 (token by PUT, then GETs that must carry it).
import { execFileSync } from 'node:child_process';
import type { X509Certificate } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { TestCa } from '@tessera/testkit';

export interface AwsRegionSigner {
  readonly region: string;
  readonly certificate: X509Certificate;
  readonly certificatePath: string;
  readonly keyPath: string;
}

/** A region's signing certificate and key, written to `dir`; `ca` lets two regions share a CA. */
export function createAwsRegionSigner(
  dir: string,
  region: string,
  name = region,
  ca?: TestCa,
): AwsRegionSigner {
  const issuer = ca ?? TestCa.create({ trustDomain: `${name}.aws.test`, keyType: 'rsa-2048' });
  const issued = issuer.issueCertificate({
    keyType: 'rsa-2048',
    subject: `C=US,O=Amazon Web Services LLC,CN=${region}`,
    uris: [],
    keyUsage: ['digitalSignature'],
    extKeyUsage: [],
  });
  const certificatePath = join(dir, `${name}.pem`);
  const keyPath = join(dir, `${name}.key`);
  writeFileSync(certificatePath, issued.certificates[0]?.toString() ?? '');
  writeFileSync(keyPath, issued.privateKeyPem, { mode: 0o600 });
  return { region, certificate: issued.certificates[0] as X509Certificate, certificatePath, keyPath };
}

export interface DocumentFields {
  accountId?: string;
  region?: string;
  instanceId?: string;
  availabilityZone?: string;
  imageId?: string;
  instanceType?: string;
  pendingTime?: string;
}

/** An instance identity document in AWS's layout (`"key" : value`, two-space indent). */
export function identityDocument(f: DocumentFields = {}): string {
  const region = f.region ?? 'us-west-2';
  const fields: [string, string | null][] = [
    ['accountId', f.accountId ?? '123456789012'],
    ['architecture', 'x86_64'],
    ['availabilityZone', f.availabilityZone ?? `${region}b`],
    ['billingProducts', null],
    ['devpayProductCodes', null],
    ['marketplaceProductCodes', null],
    ['imageId', f.imageId ?? 'ami-0abcdef1234567890'],
    ['instanceId', f.instanceId ?? 'i-1234567890abcdef0'],
    ['instanceType', f.instanceType ?? 't3.micro'],
    ['kernelId', null],
    ['pendingTime', f.pendingTime ?? '2026-11-19T16:32:11Z'],
    ['privateIp', '10.158.112.84'],
    ['ramdiskId', null],
    ['region', region],
    ['version', '2017-09-30'],
  ];
  return `{\n${fields.map(([k, v]) => `  ${JSON.stringify(k)} : ${v === null ? 'null' : JSON.stringify(v)}`).join(',\n')}\n}`;
}

export interface SignOptions {
  /** Signed attributes (contentType, signingTime, messageDigest, …); default true, as AWS. */
  attributes?: boolean;
  /** A detached signature (the document not enveloped); default false. AWS envelops it. */
  detached?: boolean;
  /** The digest; default sha256 (the rsa2048 signature). */
  digest?: 'sha256' | 'sha1';
}

/** The document's PKCS#7 signature by `signer`, made by openssl, as the metadata service serves it. */
export function signIdentityDocument(
  dir: string,
  signer: AwsRegionSigner,
  document: string,
  options: SignOptions = {},
): string {
  const docPath = join(dir, `doc-${process.hrtime.bigint()}.json`);
  writeFileSync(docPath, document);
  const args = ['cms', '-sign', '-binary', '-outform', 'DER', '-nocerts', '-md', options.digest ?? 'sha256'];
  if (options.detached !== true) args.push('-nodetach', '-stream');
  if (options.attributes === false) args.push('-noattr');
  args.push('-signer', signer.certificatePath, '-inkey', signer.keyPath, '-in', docPath);
  const der = execFileSync('openssl', args);
  return (der.toString('base64').match(/.{1,64}/g) ?? []).join('\n');
}

export interface FakeImds {
  readonly url: string;
  /** Every request, in order: method, path, and the token it carried. */
  readonly requests: { method: string; path: string; token: string | undefined }[];
  /** What the metadata service serves from now on. */
  serve(identity: { document: string; rsa2048: string }): void;
  close(): Promise<void>;
}

/** An IMDSv2 instance metadata service on 127.0.0.1: 401 without the token it handed out. */
export async function startFakeImds(identity: { document: string; rsa2048: string }): Promise<FakeImds> {
  let current = identity;
  const tokens = new Set<string>();
  const requests: FakeImds['requests'] = [];
  let next = 0;
  const server = createServer((req, res) => {
    const token = req.headers['x-aws-ec2-metadata-token'] as string | undefined;
    requests.push({ method: req.method ?? '', path: req.url ?? '', token });
    if (req.method === 'PUT' && req.url === '/latest/api/token') {
      const ttl = Number(req.headers['x-aws-ec2-metadata-token-ttl-seconds']);
      if (!(ttl >= 1 && ttl <= 21600)) {
        res.writeHead(400).end();
        return;
      }
      const t = `token-${++next}`;
      tokens.add(t);
      res.writeHead(200, { 'content-type': 'text/plain' }).end(t);
      return;
    }
    if (req.method !== 'GET') {
      res.writeHead(405).end();
      return;
    }
    if (token === undefined || !tokens.has(token)) {
      res.writeHead(401).end();
      return;
    }
    const body =
      req.url === '/latest/dynamic/instance-identity/document'
        ? current.document
        : req.url === '/latest/dynamic/instance-identity/rsa2048'
          ? current.rsa2048
          : undefined;
    if (body === undefined) res.writeHead(404).end();
    else res.writeHead(200, { 'content-type': 'text/plain' }).end(body);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    requests,
    serve(identity) {
      current = identity;
    },
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}
