import pg from 'pg';
import { TesseraError, TesseraErrorCode } from '../../common/errors.js';
import { migrate, type Row, SqlDatastore, type SqlDriver } from './sql-datastore.js';

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

  async transaction<T>(fn: (tx: SqlDriver) => Promise<T>): Promise<T> {
    if (this.#pool === undefined) return fn(this);
    const client = await this.#pool.connect();
    try {
      await client.query('BEGIN');
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

/** Connects to PostgreSQL and migrates the schema (the migration runs under an advisory lock). */
export async function openPostgresDatastore(connectionString: string): Promise<SqlDatastore> {
  const pool = new pg.Pool({ connectionString, max: 10 });
  pool.on('error', () => {}); // an idle client's error surfaces on its next query
  const driver = new PgDriver(pool, pool);
  try {
    await driver.transaction(async (tx) => {
      await tx.execute('SELECT pg_advisory_xact_lock(7205181)');
      await migrate(tx);
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
  return new SqlDatastore(driver);
}
