import type { Logger } from '@tessera/spiffe';
import pg from 'pg';
import { TesseraError, TesseraErrorCode } from '../../common/errors.js';
import { type ChangeFeed, NOTIFY_CHANNEL } from './change-feed.js';
import { type FeedFollower, migrate, type Row, SqlDatastore, type SqlDriver } from './sql-datastore.js';

/** `?` placeholders (the datastore's SQL) to PostgreSQL's `$n`. The SQL has no `?` inside literals. */
function numbered(sql: string): string {
  let n = 0;
  return sql.replace(/\?/g, () => `$${++n}`);
}

class PgDriver implements SqlDriver {
  readonly dialect = 'postgres' as const;
  readonly #db: pg.Pool | pg.PoolClient;
  readonly #pool: pg.Pool | undefined;

  constructor(db: pg.Pool | pg.PoolClient, pool?: pg.Pool) {
    this.#db = db;
    this.#pool = pool;
  }

  async query(sql: string, params: readonly unknown[] = []): Promise<Row[]> {
    return (await this.#db.query(numbered(sql), params as unknown[])).rows as Row[];
  }

  async execute(sql: string, params: readonly unknown[] = []): Promise<number> {
    return (await this.#db.query(numbered(sql), params as unknown[])).rowCount ?? 0;
  }

  transaction<T>(fn: (tx: SqlDriver) => Promise<T>): Promise<T> {
    return this.#run('BEGIN', fn);
  }

  snapshot<T>(fn: (tx: SqlDriver) => Promise<T>): Promise<T> {
    return this.#run('BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY', fn);
  }

  async #run<T>(begin: string, fn: (tx: SqlDriver) => Promise<T>): Promise<T> {
    if (this.#pool === undefined) return fn(this);
    const client = await this.#pool.connect();
    try {
      await client.query(begin);
      const result = await fn(new PgDriver(client));
      await client.query('COMMIT');
      return result;
    } catch (err) {
      await client.query('ROLLBACK').catch(() => {});
      throw err;
    } finally {
      client.release();
    }
  }

  async close(): Promise<void> {
    await this.#pool?.end();
  }
}

/** The application_name of the change-feed connection, as pg_stat_activity shows it. */
export const FEED_APPLICATION_NAME = 'tessera-change-feed';

/**
 * Wakes the feed for other servers' writes: LISTEN on a connection of its own, re-established after
 * any loss with a catch-up read; every `pollIntervalMs` a safety check of the head revision on that
 * connection (one small query), which also finds a connection that died without telling. While it
 * is not listening, the check reads the feed through the pool instead.
 */
class PgFollower implements FeedFollower {
  readonly #connectionString: string;
  readonly #feed: ChangeFeed;
  readonly #logger: Logger;
  readonly #timer: NodeJS.Timeout;
  #client: pg.Client | undefined;
  #retry: NodeJS.Timeout | undefined;
  #delayMs = 100;
  #closed = false;
  connected = false;
  reconnects = 0;

  constructor(connectionString: string, feed: ChangeFeed, pollIntervalMs: number, logger: Logger) {
    this.#connectionString = connectionString;
    this.#feed = feed;
    this.#logger = logger;
    void this.#connect();
    this.#timer = setInterval(() => void this.#check(), pollIntervalMs);
    this.#timer.unref();
  }

  async #connect(): Promise<void> {
    this.#retry = undefined;
    const client = new pg.Client({
      connectionString: this.#connectionString,
      application_name: FEED_APPLICATION_NAME,
      keepAlive: true,
      keepAliveInitialDelayMillis: 10_000,
      query_timeout: 10_000,
      connectionTimeoutMillis: 10_000,
    });
    this.#client = client;
    client.on('notification', (m) => {
      if (m.channel !== NOTIFY_CHANNEL) return;
      const announced = Number(m.payload);
      this.#feed.wake(Number.isSafeInteger(announced) ? announced : undefined);
    });
    client.on('error', (err) => this.#lost(client, err));
    client.on('end', () => this.#lost(client, new Error('the connection closed')));
    try {
      await client.connect();
      await client.query(`LISTEN ${NOTIFY_CHANNEL}`);
    } catch (err) {
      this.#lost(client, err as Error);
      return;
    }
    if (this.#client !== client) return;
    this.connected = true;
    this.#delayMs = 100;
    if (this.reconnects > 0) this.#logger.info?.('datastore: listening for changes again; catching up');
    // Whatever was committed while nobody listened is read now.
    this.#feed.wake();
  }

  #lost(client: pg.Client, err: Error): void {
    if (client !== this.#client) return;
    this.#client = undefined;
    this.connected = false;
    client.removeAllListeners('notification');
    client.on('error', () => {});
    client.end().catch(() => {});
    if (this.#closed) return;
    this.reconnects++;
    // Up to 5 s between attempts, with full jitter so servers do not reconnect in step.
    const delay = Math.floor(Math.random() * this.#delayMs);
    this.#delayMs = Math.min(5000, this.#delayMs * 2);
    this.#logger.warn?.('datastore: lost the change-feed connection; reconnecting', {
      error: err.message,
      retry_in_ms: delay,
    });
    this.#feed.wake();
    this.#retry = setTimeout(() => void this.#connect(), delay);
    this.#retry.unref();
  }

  async #check(): Promise<void> {
    const client = this.#client;
    if (client === undefined || !this.connected) {
      this.#feed.wake();
      return;
    }
    try {
      const r = await client.query('SELECT revision FROM change_revision WHERE id = 1');
      this.#feed.wake(Number(r.rows[0]?.revision));
    } catch (err) {
      this.#lost(client, err as Error);
    }
  }

  async close(): Promise<void> {
    this.#closed = true;
    clearInterval(this.#timer);
    if (this.#retry !== undefined) clearTimeout(this.#retry);
    const client = this.#client;
    this.#client = undefined;
    this.connected = false;
    if (client !== undefined) {
      client.on('error', () => {});
      await client.end().catch(() => {});
    }
  }
}

export interface PostgresDatastoreOptions {
  /** The safety check of the change feed; default 5 s. */
  pollIntervalMs?: number;
  /** How long change events are kept for a server that was away; default 1 h. */
  retentionMs?: number;
  logger?: Logger;
}

/**
 * Connects to PostgreSQL, migrates the schema (under an advisory lock, so servers starting together
 * migrate once) and follows the change feed: writes made by every server sharing the database are
 * told to this one's listeners.
 */
export async function openPostgresDatastore(
  connectionString: string,
  options: PostgresDatastoreOptions = {},
): Promise<SqlDatastore> {
  const pool = new pg.Pool({ connectionString, max: 10 });
  pool.on('error', () => {}); // an idle client's error surfaces on its next query
  const driver = new PgDriver(pool, pool);
  try {
    await driver.transaction(async (tx) => {
      await tx.execute('SELECT pg_advisory_xact_lock(7205181)');
      await migrate(tx);
    });
    const logger = options.logger ?? {};
    return await SqlDatastore.create(driver, {
      logger,
      ...(options.retentionMs === undefined ? {} : { retentionMs: options.retentionMs }),
      follow: (feed) => new PgFollower(connectionString, feed, options.pollIntervalMs ?? 5000, logger),
    });
  } catch (err) {
    await pool.end().catch(() => {});
    if (err instanceof TesseraError) throw err;
    throw new TesseraError(
      TesseraErrorCode.DATASTORE,
      `datastore: cannot open PostgreSQL datastore: ${(err as Error).message}`,
      { cause: err },
    );
  }
}
