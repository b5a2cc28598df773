// Where the server puts its admin socket when admin_socket is not set, shared by the server and
// the CLI (which must not load the server's configuration code to know it).
//
// The server and the agent each own a directory, so neither decides who may enter the other's:
// the agent serves every local user on /run/tessera/agent.sock (the library's
// DEFAULT_WORKLOAD_API_SOCKET; 0777, in /run/tessera, 0755), the
// server's admin socket is for root and the server's user only (0700, in /run/tessera/server,
// 0700). Whichever starts first creates /run/tessera 0755. As SPIRE's public and private
// directories (/tmp/spire-agent/public/api.sock, /tmp/spire-server/private/api.sock).
export const DEFAULT_ADMIN_SOCKET = '/run/tessera/server/server.sock';
