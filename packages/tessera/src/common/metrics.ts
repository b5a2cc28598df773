/**
 * A small Prometheus registry: counters, gauges and gauges computed at scrape time, rendered in
 * the text exposition format (version 0.0.4). Enough for the daemons' /metrics; no dependency.
 */
type Labels = Readonly<Record<string, string>>;

interface Family {
  name: string;
  help: string;
  type: 'counter' | 'gauge';
  values: Map<string, { labels: Labels; value: number }>;
  collect?: () => Promise<number> | number;
  /** Labelled values computed at each scrape. */
  collectAll?: () => readonly { labels: Labels; value: number }[];
}

const NAME = /^[a-zA-Z_:][a-zA-Z0-9_:]*$/;

function key(labels: Labels): string {
  return Object.keys(labels)
    .sort()
    .map((k) => `${k}=${labels[k]}`)
    .join(',');
}

function escapeLabel(v: string): string {
  return v.replace(/\\/g, '\\\\').replace(/\n/g, '\\n').replace(/"/g, '\\"');
}

export class Metrics {
  readonly #families = new Map<string, Family>();

  #family(name: string, help: string, type: Family['type']): Family {
    if (!NAME.test(name)) throw new TypeError(`metrics: invalid metric name ${JSON.stringify(name)}`);
    let f = this.#families.get(name);
    if (f === undefined) {
      f = { name, help, type, values: new Map() };
      this.#families.set(name, f);
    } else if (f.type !== type) {
      throw new TypeError(`metrics: ${name} is a ${f.type}, not a ${type}`);
    }
    return f;
  }

  /** Adds `by` (default 1) to a counter. */
  inc(name: string, help: string, labels: Labels = {}, by = 1): void {
    const f = this.#family(name, help, 'counter');
    const k = key(labels);
    const cur = f.values.get(k);
    f.values.set(k, { labels, value: (cur?.value ?? 0) + by });
  }

  /** A counter with fixed labels, for hot paths: the returned function adds `by` (default 1) without re-keying. */
  counter(name: string, help: string, labels: Labels = {}): (by?: number) => void {
    const f = this.#family(name, help, 'counter');
    const k = key(labels);
    let cell = f.values.get(k);
    if (cell === undefined) {
      cell = { labels, value: 0 };
      f.values.set(k, cell);
    }
    const c = cell;
    return (by = 1) => {
      c.value += by;
    };
  }

  set(name: string, help: string, value: number, labels: Labels = {}): void {
    this.#family(name, help, 'gauge').values.set(key(labels), { labels, value });
  }

  /** A gauge whose value is computed at each scrape (e.g. a datastore count). */
  gaugeFn(name: string, help: string, collect: () => Promise<number> | number): void {
    this.#family(name, help, 'gauge').collect = collect;
  }

  /** A gauge with one labelled value per item, computed at each scrape (e.g. one per trust domain). */
  gaugesFn(name: string, help: string, collect: () => readonly { labels: Labels; value: number }[]): void {
    this.#family(name, help, 'gauge').collectAll = collect;
  }

  async render(): Promise<string> {
    const out: string[] = [];
    for (const f of this.#families.values()) {
      out.push(`# HELP ${f.name} ${f.help}`, `# TYPE ${f.name} ${f.type}`);
      if (f.collect !== undefined) out.push(`${f.name} ${await f.collect()}`);
      for (const { labels, value } of [...f.values.values(), ...(f.collectAll?.() ?? [])]) {
        const l = Object.entries(labels)
          .map(([k, v]) => `${k}="${escapeLabel(v)}"`)
          .join(',');
        out.push(`${f.name}${l === '' ? '' : `{${l}}`} ${value}`);
      }
    }
    return `${out.join('\n')}\n`;
  }
}
