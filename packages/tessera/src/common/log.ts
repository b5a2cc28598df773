import type { Logger } from '@tessera/spiffe';

export type LogLevel = 'debug' | 'info' | 'warn' | 'error';
export type LogFormat = 'json' | 'text';

const RANK: Record<LogLevel, number> = { debug: 10, info: 20, warn: 30, error: 40 };

export interface DaemonLogger extends Required<Logger> {
  /** A logger whose lines all carry `fields` (e.g. `{ subsystem: 'ca' }`). */
  with(fields: Record<string, unknown>): DaemonLogger;
}

/**
 * Structured logs, one line per event: JSON (`{"time","level","msg",...fields}`) or text
 * (`time level msg key=value ...`). Fields must never carry key material or tokens: pass IDs,
 * serials and fingerprints instead.
 */
export function createLogger(opts: {
  level?: LogLevel;
  format?: LogFormat;
  write?: (line: string) => void;
  now?: () => Date;
  fields?: Record<string, unknown>;
}): DaemonLogger {
  const min = RANK[opts.level ?? 'info'];
  const format = opts.format ?? 'text';
  const write = opts.write ?? ((line: string) => process.stderr.write(`${line}\n`));
  const now = opts.now ?? (() => new Date());
  const base = opts.fields ?? {};
  const emit = (level: LogLevel) => (msg: string, fields?: Record<string, unknown>) => {
    if (RANK[level] < min) return;
    const all = { ...base, ...fields };
    const time = now().toISOString();
    if (format === 'json') {
      write(JSON.stringify({ time, level, msg, ...all }));
    } else {
      const kv = Object.entries(all)
        .map(([k, v]) => `${k}=${typeof v === 'string' && !/[\s"=]/.test(v) ? v : JSON.stringify(v)}`)
        .join(' ');
      write(`${time} ${level.toUpperCase().padEnd(5)} ${msg}${kv === '' ? '' : ` ${kv}`}`);
    }
  };
  return {
    debug: emit('debug'),
    info: emit('info'),
    warn: emit('warn'),
    error: emit('error'),
    with: (fields) => createLogger({ ...opts, fields: { ...base, ...fields } }),
  };
}
