// S3 down: which failures of the S3 driver mean "the object store is not there (now)". Classified here, at
// the storage boundary, so that a blob or manifest request answers 503 with Retry-After
// (errors.storageUnavailable) instead of 500 INTERNAL. A missing object (StorageNotFound), refused
// credentials or a missing bucket are not outages and pass through as they are.
import { describeCause, errors, type RelaisError } from '../errors.js';
import { errorCodes, guardOutages, NETWORK_DOWN_CODES } from '../outage.js';
import type { StorageDriver } from './driver.js';

/** The SDK's names for a service that is overloaded, failing or not answering in time. */
const S3_DOWN_NAMES = new Set(['TimeoutError', 'RequestTimeout', 'RequestTimeoutException', 'ServiceUnavailable', 'SlowDown', 'InternalError', 'ServerError']);

export function isS3Down(e: unknown): boolean {
  if (errorCodes(e).some((c) => NETWORK_DOWN_CODES.has(c))) return true;
  const err = e as { name?: unknown; $metadata?: { httpStatusCode?: unknown } } | null;
  if (err === null || typeof err !== 'object') return false;
  if (typeof err.name === 'string' && S3_DOWN_NAMES.has(err.name)) return true;
  const status = err.$metadata?.httpStatusCode;
  return typeof status === 'number' && status >= 500;
}

export function storageOutageError(e: unknown): RelaisError {
  return errors.storageUnavailable(describeCause(e) || 'no answer', e);
}

/** The S3 driver, its outages answered as 503 with Retry-After (a writer's too). */
export function guardS3Outages<T extends StorageDriver>(driver: T): T {
  return guardOutages(driver, isS3Down, storageOutageError, new Set(['writer']));
}
