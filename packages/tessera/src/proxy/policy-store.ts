// The policies in force in a proxy: loaded at start (a bad file stops the start), then reloaded
// whenever a policy file or directory changes. A reload that fails keeps the last good policies and
// says why; the proxy never runs with half a policy set.
import { EventEmitter } from 'node:events';
import { type FSWatcher, statSync, watch } from 'node:fs';
import { basename, dirname, resolve } from 'node:path';
import type { DaemonLogger } from '../common/log.js';
import { createPolicyEngine, loadPolicies, type PolicyEngine } from './policy/index.js';
import type { PolicyDecision, PolicyRequest, PolicyWorkload } from './policy/types.js';

export interface PolicyStoreEvents {
  /** A reload took effect: `policies` is how many apply to this workload's listeners. */
  reloaded: [{ policies: number; warnings: number }];
  /** A reload failed; the previous policies stay in force. */
  reloadFailed: [Error];
}

interface Engines {
  http?: PolicyEngine;
  tcp?: PolicyEngine;
  count: number;
  warnings: number;
}

export class PolicyStore extends EventEmitter<PolicyStoreEvents> {
  readonly #paths: readonly string[];
  readonly #workload: PolicyWorkload;
  readonly #log: DaemonLogger;
  #engines: Engines;
  #watchers: FSWatcher[] = [];
  #timer: NodeJS.Timeout | undefined;
  readonly #debounceMs: number;

  readonly #protocols: readonly ('http' | 'tcp')[];

  /**
   * Loads the policies now, compiled for the protocols of this proxy's inbound listeners (warnings
   * about HTTP-only fields concern TCP listeners only); throws ERR_POLICY_INVALID naming every
   * problem if they do not load.
   */
  constructor(o: {
    paths: readonly string[];
    workload: PolicyWorkload;
    protocols: readonly ('http' | 'tcp')[];
    logger: DaemonLogger;
    debounceMs?: number;
  }) {
    super();
    this.#protocols = [...new Set(o.protocols)];
    this.#paths = o.paths.map((p) => resolve(p));
    this.#workload = o.workload;
    this.#log = o.logger.with({ subsystem: 'policy' });
    this.#debounceMs = o.debounceMs ?? 100;
    this.#engines = this.#load();
  }

  #load(): Engines {
    const { policies, warnings } = loadPolicies([...this.#paths]);
    const engines: Engines = { count: policies.length, warnings: 0 };
    const all = [...warnings];
    for (const protocol of this.#protocols) {
      const engine = createPolicyEngine(policies, this.#workload, { protocol });
      engines[protocol] = engine;
      all.push(...engine.warnings);
    }
    for (const w of all) this.#log.warn(w.message, { file: w.file, line: w.line, policy: w.policy });
    engines.warnings = all.length;
    return engines;
  }

  /**
   * Decides with the policies in force now. Fails closed: a request the engine cannot evaluate is
   * denied, and the error logged, rather than let through or let crash the proxy.
   */
  decide(protocol: 'http' | 'tcp', request: PolicyRequest): PolicyDecision {
    const engine = this.#engines[protocol];
    if (engine === undefined) throw new TypeError(`policy: no ${protocol} listener was configured`);
    try {
      return engine.evaluate(request);
    } catch (err) {
      const reason = `denied: the policy engine failed on this request: ${(err as Error).message}`;
      this.#log.error('policy evaluation failed; the request is denied', {
        principal: request.sourcePrincipal,
        error: (err as Error).message,
      });
      return { allowed: false, reason, audited: [] };
    }
  }

  /** How many policies are loaded (all namespaces). */
  get size(): number {
    return this.#engines.count;
  }

  /** Reloads now: on success the new policies replace the old at once; on failure nothing changes. */
  reload(): boolean {
    try {
      this.#engines = this.#load();
      this.#log.info('policies reloaded', { policies: this.#engines.count });
      this.emit('reloaded', { policies: this.#engines.count, warnings: this.#engines.warnings });
      return true;
    } catch (err) {
      this.#log.error('policy reload failed; the previous policies stay in force', {
        error: (err as Error).message,
      });
      this.emit('reloadFailed', err as Error);
      return false;
    }
  }

  /**
   * Watches the policy paths. A file is watched through its directory, so an editor that replaces
   * it (write to a temporary file, rename over) is seen too.
   */
  watch(): void {
    const dirs = new Map<string, Set<string> | 'all'>();
    for (const p of this.#paths) {
      let isDir = false;
      try {
        isDir = statSync(p).isDirectory();
      } catch {
        // a missing path failed the first load already
      }
      if (isDir) dirs.set(p, 'all');
      else {
        const d = dirname(p);
        const cur = dirs.get(d);
        if (cur !== 'all') dirs.set(d, new Set([...(cur ?? []), basename(p)]));
      }
    }
    for (const [dir, names] of dirs) {
      const w = watch(dir, (_event, file) => {
        if (names !== 'all' && (file === null || !names.has(file))) return;
        clearTimeout(this.#timer);
        this.#timer = setTimeout(() => this.reload(), this.#debounceMs);
      });
      w.on('error', (err) =>
        this.#log.error('cannot watch the policy directory', { dir, error: err.message }),
      );
      this.#watchers.push(w);
    }
  }

  close(): void {
    clearTimeout(this.#timer);
    for (const w of this.#watchers) w.close();
    this.#watchers = [];
  }
}
