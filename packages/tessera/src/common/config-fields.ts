// Configuration fields the server and the agent share, defined once so they validate alike.
import { isAbsolute } from 'node:path';
import { parseTrustDomain } from '@tessera/spiffe';
import type { Field } from './config-schema.js';

export const absolutePath = (v: string): string | undefined =>
  isAbsolute(v) ? undefined : `must be an absolute path; got ${JSON.stringify(v)}`;

export const TRUST_DOMAIN_FIELD = {
  kind: 'string',
  required: true,
  check: (v: string) => {
    try {
      parseTrustDomain(v);
      return v.includes(':') ? 'must be a trust domain name (example.org), not a SPIFFE ID' : undefined;
    } catch (err) {
      return (err as Error).message;
    }
  },
} as const satisfies Field;

export const LOG_FIELD = {
  kind: 'object',
  fields: {
    level: { kind: 'enum', values: ['debug', 'info', 'warn', 'error'], default: 'info' },
    format: { kind: 'enum', values: ['json', 'text'], default: 'text' },
  },
} as const satisfies Field;

/** `/live`, `/ready`, `/metrics` on 127.0.0.1 by default; each role has its own default port. */
export function healthField(defaultPort: number) {
  return {
    kind: 'object',
    fields: {
      address: { kind: 'string', default: '127.0.0.1' },
      port: { kind: 'int', default: defaultPort, min: 0, max: 65535 },
    },
  } as const satisfies Field;
}

export interface LogConfig {
  readonly level: 'debug' | 'info' | 'warn' | 'error';
  readonly format: 'json' | 'text';
}

export interface HealthConfig {
  readonly address: string;
  readonly port: number;
}
