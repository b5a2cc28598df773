// The daemons (server, agent, proxy) and the CLI are built by later issues; this package
// exists now so the workspace layout matches docs/ARCHITECTURE and every later piece has a home.
export const TESSERA_VERSION = '0.1.0';
