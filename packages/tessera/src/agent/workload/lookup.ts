import { TesseraError, TesseraErrorCode } from '../../common/errors.js';

/**
 * A workload attestor's refusal of a caller: its lookup failed, so it has no selectors it can
 * vouch for, and the connection is refused (ERR_WORKLOAD_ATTESTATION in docs/errors.md).
 */
export function refusal(message: string, options?: { cause?: unknown }): TesseraError {
  return new TesseraError(TesseraErrorCode.WORKLOAD_ATTESTATION, message, options);
}

/**
 * Runs one workload attestor's lookup with a deadline: `run` gets a signal that aborts after
 * `ms`, and the result rejects then with refusal(message) even if `run` has not noticed. A lookup
 * that outlives its deadline is never used: selectors come in time or not at all.
 */
export async function lookupTimeout<T>(
  ms: number,
  message: string,
  run: (signal: AbortSignal) => Promise<T>,
): Promise<T> {
  const controller = new AbortController();
  const expired = refusal(message);
  let timer: NodeJS.Timeout | undefined;
  const deadline = new Promise<never>((_, reject) => {
    timer = setTimeout(() => {
      controller.abort(expired);
      reject(expired);
    }, ms);
  });
  try {
    return await Promise.race([run(controller.signal), deadline]);
  } finally {
    clearTimeout(timer);
  }
}
