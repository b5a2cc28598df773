import { chmodSync, closeSync, openSync } from 'node:fs';
import type { Logger } from '@tessera/spiffe';
import Database from 'better-sqlite3';
import { TesseraError, TesseraErrorCode } from '../../common/errors.js';
import { migrate, type Row, SqlDatastore, type SqlDriver } from './sql-datastore.js';

/**
 * SQLite through better-sqlite3: one connection, WAL journal, foreign keys on, the file created
 * 0600. better-sqlite3 is synchronous, so transactions are serialised through a queue: an async
 * transaction body cannot interleave with another caller's statements.
 */
class SqliteDriver implements SqlDriver {
  readonly dialect = 'sqlite' as const;
  readonly #db: Database.Database;
  #queue: Promise<unknown> = Promise.resolve();
  #inTransaction = false;

  constructor(db: Database.Database) {
    this.#db = db;
  }

  #serial<T>(fn: () => Promise<T>): Promise<T> {
    const next = this.#queue.then(fn, fn);
    this.#queue = next.catch(() => {});
    return next;
  }

  query(sql: string, params: readonly unknown[] = []): Promise<Row[]> {
    const run = async () => this.#db.prepare(sql).all(...params) as Row[];
    return this.#inTransaction ? run() : this.#serial(run);
  }

  execute(sql: string, params: readonly unknown[] = []): Promise<number> {
    const run = async () => this.#db.prepare(sql).run(...params).changes;
    return this.#inTransaction ? run() : this.#serial(run);
  }

  transaction<T>(fn: (tx: SqlDriver) => Promise<T>): Promise<T> {
    return this.#run('BEGIN IMMEDIATE', fn);
  }

  snapshot<T>(fn: (tx: SqlDriver) => Promise<T>): Promise<T> {
    // A deferred transaction reads one snapshot of the WAL database and takes no write lock.
    return this.#run('BEGIN', fn);
  }

  #run<T>(begin: string, fn: (tx: SqlDriver) => Promise<T>): Promise<T> {
    if (this.#inTransaction) return fn(this);
    return this.#serial(async () => {
      this.#db.exec(begin);
      this.#inTransaction = true;
      try {
        const result = await fn(this);
        this.#db.exec('COMMIT');
        return result;
      } catch (err) {
        if (this.#db.inTransaction) this.#db.exec('ROLLBACK');
        throw err;
      } finally {
        this.#inTransaction = false;
      }
    });
  }

  async close(): Promise<void> {
    await this.#queue;
    this.#db.close();
  }
}

/**
 * Opens (creating, mode 0600) and migrates the SQLite datastore at `path`. One server per file: its
 * change feed is woken by its own writes.
 */
export async function openSqliteDatastore(
  path: string,
  options: { logger?: Logger } = {},
): Promise<SqlDatastore> {
  let db: Database.Database;
  try {
    if (path !== ':memory:') {
      closeSync(openSync(path, 'a', 0o600));
      chmodSync(path, 0o600);
    }
    db = new Database(path);
    db.pragma('journal_mode = WAL');
    db.pragma('synchronous = NORMAL');
    db.pragma('foreign_keys = ON');
    db.pragma('busy_timeout = 5000');
  } catch (err) {
    throw new TesseraError(
      TesseraErrorCode.DATASTORE,
      `datastore: cannot open SQLite database ${path}: ${(err as Error).message}`,
      { cause: err },
    );
  }
  const driver = new SqliteDriver(db);
  try {
    await migrate(driver);
    return await SqlDatastore.create(driver, options);
  } catch (err) {
    await driver.close();
    throw err;
  }
}
