// A node:test reporter that writes one JSON document: how long each test FILE took (its subprocess,
// start to end), whether it passed, and when it started and ended relative to the run's start (to see how
// well the runner's slots were used). scripts/run-tests.mjs adds it beside the spec reporter when
// RELAIS_TEST_TIMINGS names a file; the spec output is unchanged.
// Node 20 reports each file as a top-level test named after the file's absolute path: `test:dequeue` when
// its process starts, `test:complete` (with the duration) when it ends, both as they happen.
import { relative } from 'node:path';

const t0 = Date.now();

export default async function* timingReporter(source) {
  const files = new Map();
  const entry = (file) => {
    const name = relative(process.cwd(), file);
    let e = files.get(name);
    if (!e) {
      e = { file: name, ms: 0, startMs: undefined, endMs: undefined, ok: true, tests: 0, failed: 0 };
      files.set(name, e);
    }
    return e;
  };
  for await (const event of source) {
    const d = event.data ?? {};
    if (typeof d.file !== 'string') continue;
    const isFile = d.nesting === 0 && d.name === d.file;
    if (isFile) {
      const e = entry(d.file);
      if (event.type === 'test:dequeue') e.startMs ??= Date.now() - t0;
      if (event.type === 'test:complete') {
        e.ms = Math.round(d.details?.duration_ms ?? 0);
        e.endMs = Date.now() - t0;
        if (d.details?.passed === false) e.ok = false;
      }
    } else if ((event.type === 'test:pass' || event.type === 'test:fail') && d.details?.type !== 'suite') {
      const e = entry(d.file);
      e.tests++;
      if (event.type === 'test:fail') {
        e.failed++;
        e.ok = false;
      }
    }
  }
  const list = [...files.values()].sort((a, b) => b.ms - a.ms || a.file.localeCompare(b.file));
  const sumMs = list.reduce((s, e) => s + e.ms, 0);
  yield `${JSON.stringify({ wallMs: Date.now() - t0, sumMs, files: list }, null, 1)}\n`;
}
