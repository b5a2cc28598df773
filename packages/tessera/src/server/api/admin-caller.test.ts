import assert from 'node:assert/strict';
import { test } from 'node:test';
import { TestCa } from '@tessera/testkit';
import { adminCallerOf, callerFields, describeCaller } from './admin-caller.js';

const call = (peer: string, raw?: Buffer) => ({
  getPeer: () => peer,
  getAuthContext: () => (raw === undefined ? {} : { sslPeerCertificate: { raw } }),
});

test('an mTLS caller is named by the SPIFFE ID of its certificate', () => {
  const ca = TestCa.create({ trustDomain: 'example.org' });
  const svid = ca.issueX509Svid('spiffe://example.org/ops');
  const caller = adminCallerOf(call('127.0.0.1:40000', svid.certificates[0]?.raw));
  assert.deepEqual(caller, { kind: 'spiffe', id: 'spiffe://example.org/ops' });
  assert.equal(describeCaller(caller), 'spiffe://example.org/ops');
  assert.deepEqual(callerFields(caller), { caller_id: 'spiffe://example.org/ops' });
});

test('a caller that is neither a tagged Unix connection nor an SVID holder is refused', () => {
  assert.throws(() => adminCallerOf(call('127.0.0.1:40000')), {
    code: 'ERR_PERMISSION_DENIED',
    message: 'admin: cannot identify the caller; call over the admin Unix socket or with an admin X509-SVID',
  });
  // A peer string that merely looks like a tag is not one the admin socket handed out.
  assert.throws(() => adminCallerOf(call('tessera-admin-unix#00000000-0000-0000-0000-000000000000')), {
    code: 'ERR_PERMISSION_DENIED',
  });
  const ca = TestCa.create({ trustDomain: 'example.org' });
  const web = ca.issueCertificate({ uris: [], dnsNames: ['web.example.org'] }).certificates[0];
  assert.throws(() => adminCallerOf(call('127.0.0.1:1', web?.raw)), {
    code: 'ERR_PERMISSION_DENIED',
    message: /^admin: the client certificate is not an X509-SVID: /,
  });
});
