const UNITS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 };

/**
 * Parses a duration as operators write it (Go style, as SPIRE's config): `90s`, `5m`, `1h30m`,
 * `24h`, `500ms`, `7d`. Returns milliseconds, or undefined when the text is not a duration.
 */
export function parseDuration(text: string): number | undefined {
  const re = /(\d+)(ms|s|m|h|d)/gy;
  let total = 0;
  let matched = 0;
  for (const m of text.matchAll(re)) {
    total += Number(m[1]) * (UNITS[m[2] as string] as number);
    matched += m[0].length;
  }
  return matched === text.length && matched > 0 ? total : undefined;
}

/** The shortest exact form: 86400000 → "24h", 5400000 → "1h30m". */
export function formatDuration(ms: number): string {
  if (ms === 0) return '0s';
  let rest = ms;
  let out = '';
  for (const [unit, size] of [
    ['h', 3_600_000],
    ['m', 60_000],
    ['s', 1000],
    ['ms', 1],
  ] as const) {
    const n = Math.floor(rest / size);
    if (n > 0) out += `${n}${unit}`;
    rest -= n * size;
  }
  return out;
}
