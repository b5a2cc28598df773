export { JwtBundle, parseJwtBundle } from './jwt-bundle.js';
export type { JwtBundleSource, X509BundleSource } from './source.js';
export { parseX509Bundle, parseX509BundleDer, parseX509BundlePem, X509Bundle } from './x509-bundle.js';
