// A clock tests move forward instead of sleeping: real time plus what the test has advanced it by, so
// everything that reads it (circuit breakers, readiness caches) sees time pass at once, and timers that
// use the real clock still run.
export interface TestClock {
  now(): number;
  /** Moves the clock forward by `ms` at once. */
  advance(ms: number): void;
}

export function testClock(): TestClock {
  let offset = 0;
  return {
    now: () => Date.now() + offset,
    advance: (ms) => {
      offset += ms;
    },
  };
}
