// Dependency outages, recognised at the boundary where relais talks to the dependency (the index, the
// storage driver) rather than by matching messages in handlers: every async method of the wrapped object
// that fails with an error the classifier recognises rejects with the table row the caller gives (a 503
// with Retry-After) instead, its cause kept. Everything else passes through untouched.
import type { RelaisError } from './errors.js';

/** The errno-style code of an error, its cause or an AggregateError's first error (a refused connection to every address). */
export function errorCodes(e: unknown, depth = 0): string[] {
  if (e === null || typeof e !== 'object' || depth > 3) return [];
  const c = e as { code?: unknown; cause?: unknown; errors?: unknown };
  const own = typeof c.code === 'string' ? [c.code] : [];
  const inner = Array.isArray(c.errors) ? c.errors.flatMap((x) => errorCodes(x, depth + 1)) : [];
  return [...own, ...inner, ...errorCodes(c.cause, depth + 1)];
}

/** Network failures that mean "the service is not there (now)". */
export const NETWORK_DOWN_CODES: ReadonlySet<string> = new Set([
  'ECONNREFUSED',
  'ECONNRESET',
  'ETIMEDOUT',
  'EHOSTUNREACH',
  'ENETUNREACH',
  'EADDRNOTAVAIL',
  'ENOTFOUND',
  'EAI_AGAIN',
  'EPIPE',
]);

/**
 * Wraps `target` so that its promise-returning methods reject with `toError(e)` when `isDown(e)`.
 * `wrapResult` names methods whose resolved value is an object to guard the same way (a writer).
 */
export function guardOutages<T extends object>(target: T, isDown: (e: unknown) => boolean, toError: (e: unknown) => RelaisError, wrapResult: ReadonlySet<string> = new Set()): T {
  const translate = (e: unknown): never => {
    throw isDown(e) ? toError(e) : e;
  };
  return new Proxy(target, {
    get(obj, prop, receiver) {
      const value: unknown = Reflect.get(obj, prop, receiver);
      if (typeof value !== 'function') return value;
      const fn = value as (...args: unknown[]) => unknown;
      return (...args: unknown[]): unknown => {
        let out: unknown;
        try {
          out = fn.apply(obj, args);
        } catch (e) {
          return translate(e);
        }
        if (!(out instanceof Promise)) return out;
        return (out as Promise<unknown>).then(
          (v) => (typeof prop === 'string' && wrapResult.has(prop) && v !== null && typeof v === 'object' ? guardOutages(v, isDown, toError) : v),
          translate,
        );
      };
    },
  });
}
