const DNS_NAME =
  /^(?=.{1,253}$)(\*\.)?([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)*[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?$/;

/** A host name allowed in an SVID's DNS SANs: labels of letters, digits and inner hyphens, an optional leading `*.`. */
export function isDnsName(name: string): boolean {
  return DNS_NAME.test(name);
}
