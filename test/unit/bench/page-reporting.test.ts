import assert from 'node:assert/strict';
import { chmod, mkdtemp, readFile, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { orderAboveMax, pausePageReporting, touchMemory } from '../../../bench/lib/page-reporting.js';

// /proc/buddyinfo of the bench's machine: orders 0..10.
const BUDDYINFO = `Node 0, zone      DMA      0      0      0      0      0      0      0      0      1      1      3
Node 0, zone    DMA32      0      4      2      2      1      2      0      3      3      1    753
Node 0, zone   Normal   6928   6609   6292   8440   4852   2319   1613    605    376    197    433
`;

describe('bench: free page reporting', () => {
  let dir: string;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'relais-pr-'));
    await writeFile(join(dir, 'buddyinfo'), BUDDYINFO);
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('finds the order above the largest block the buddy allocator has', () => {
    assert.equal(orderAboveMax(BUDDYINFO), 11);
    assert.equal(orderAboveMax('Node 0, zone   Normal   1 2 3\n'), 3);
    assert.equal(orderAboveMax(''), undefined);
  });

  it('pauses reporting for the run and restores the old order once', async () => {
    const params = await mkdtemp(join(dir, 'params-'));
    const file = join(params, 'page_reporting_order');
    await writeFile(file, '9\n');
    const p = await pausePageReporting({ dir: params, buddyinfo: join(dir, 'buddyinfo') });
    assert.equal(p.state, 'paused');
    assert.match(p.detail, /9 -> 11/);
    assert.equal((await readFile(file, 'utf8')).trim(), '11');
    await p.restore();
    assert.equal((await readFile(file, 'utf8')).trim(), '9');
    // A second restore does not undo a change made since (e.g. by the operator).
    await writeFile(file, '10\n');
    await p.restore();
    assert.equal((await readFile(file, 'utf8')).trim(), '10');
  });

  it('changes nothing where the kernel has no reporting, or it is already paused', async () => {
    const none = await pausePageReporting({ dir: join(dir, 'missing'), buddyinfo: join(dir, 'buddyinfo') });
    assert.equal(none.state, 'absent');
    const params = await mkdtemp(join(dir, 'params-'));
    await writeFile(join(params, 'page_reporting_order'), '11\n');
    const already = await pausePageReporting({ dir: params, buddyinfo: join(dir, 'buddyinfo') });
    assert.equal(already.state, 'kept');
    await already.restore();
    assert.equal((await readFile(join(params, 'page_reporting_order'), 'utf8')).trim(), '11');
  });

  it('says so when it cannot pause (unknown block orders, a write the kernel refuses)', async () => {
    const params = await mkdtemp(join(dir, 'params-'));
    await writeFile(join(params, 'page_reporting_order'), '9\n');
    const unknown = await pausePageReporting({ dir: params, buddyinfo: join(dir, 'no-buddyinfo') });
    assert.equal(unknown.state, 'failed');
    assert.match(unknown.detail, /largest block order is unknown/);
    const refused = await mkdtemp(join(dir, 'params-'));
    if (process.getuid?.() === 0) {
      // root writes any plain file: a read-only procfs file stands in for a value the kernel refuses.
      await symlink('/proc/version', join(refused, 'page_reporting_order'));
      const r = await pausePageReporting({ dir: refused, buddyinfo: join(dir, 'buddyinfo') });
      assert.equal(r.state, 'failed');
      assert.match(r.detail, /could not pause/);
    } else {
      await writeFile(join(refused, 'page_reporting_order'), '9\n');
      await chmod(join(refused, 'page_reporting_order'), 0o444);
      const r = await pausePageReporting({ dir: refused, buddyinfo: join(dir, 'buddyinfo') });
      assert.equal(r.state, 'kept');
      assert.match(r.detail, /not writable/);
    }
  });

  it('touches memory in a child process and reports a failure', async () => {
    await touchMemory(8 * 1024 * 1024);
    await assert.rejects(touchMemory(1024, AbortSignal.abort()), /abort/i);
  });
});
