// x-forwarded-client-cert as Envoy writes it (forward_client_cert_details with the subject and URI
// of the client certificate), so apps behind Tessera read the caller exactly as behind Envoy/Istio:
//   By=<our SPIFFE ID>;Hash=<hex SHA-256 of the client's DER certificate>;Subject="<RFC 2253>";URI=<client SPIFFE ID>
import { createHash, type X509Certificate } from 'node:crypto';

export const XFCC_HEADER = 'x-forwarded-client-cert';

/** Envoy quotes a value holding a separator (`,` `;` `=`) or a quote, escaping quotes inside. */
function value(v: string, alwaysQuote = false): string {
  return alwaysQuote || /[,;="]/.test(v) ? `"${v.replace(/\\/g, '\\\\').replace(/"/g, '\\"')}"` : v;
}

/** The subject in RFC 2253 order (most specific first, comma-separated), as OpenSSL prints it for Envoy. */
export function rfc2253Subject(cert: X509Certificate): string {
  if (cert.subject.trim() === '') return '';
  return cert.subject
    .split('\n')
    .filter((line) => line !== '')
    .reverse()
    .map((rdn) => {
      const i = rdn.indexOf('=');
      return `${rdn.slice(0, i)}=${rdn.slice(i + 1).replace(/([,+"\\<>;])/g, '\\$1')}`;
    })
    .join(',');
}

/** One XFCC element for a verified client. */
export function xfccElement(o: { by: string; client: X509Certificate; clientId: string }): string {
  const hash = createHash('sha256').update(o.client.raw).digest('hex');
  return [
    `By=${value(o.by)}`,
    `Hash=${hash}`,
    `Subject=${value(rfc2253Subject(o.client), true)}`,
    `URI=${value(o.clientId)}`,
  ].join(';');
}

/**
 * The header to send upstream. sanitize_set (the default) replaces whatever the client sent, so
 * an app can trust the one element it gets; append_forward keeps the client's elements and adds
 * ours last (the app must then read the last element, as with Envoy).
 */
export function forwardedClientCert(
  mode: 'sanitize_set' | 'append_forward',
  incoming: string | readonly string[] | undefined,
  element: string,
): string {
  if (mode === 'sanitize_set' || incoming === undefined) return element;
  const prior = (typeof incoming === 'string' ? [incoming] : [...incoming]).filter((s) => s !== '');
  return [...prior, element].join(',');
}
