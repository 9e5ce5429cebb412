import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { cpuBoundCeiling, linkBoundCeiling, reach, renderCeilings, type Ceiling } from '../../../bench/lib/ceilings.js';

describe('bench ceilings', () => {
  it('a CPU-bound pull cannot beat (client + upstream CPU) / cores of wall time', () => {
    // 1796 MB, clients 4.7 s, upstream 0.5 s, 2 cores: at best 2.6 s of wall time.
    const c = cpuBoundCeiling({ bytes: 1796e6, clientCpuSeconds: 4.7, upstreamCpuSeconds: 0.5 }, 2);
    assert.ok(c !== undefined);
    assert.equal(Math.round(c / 1e6), Math.round(1796 / 2.6));
    // More cores, higher ceiling.
    assert.ok((cpuBoundCeiling({ bytes: 1796e6, clientCpuSeconds: 4.7, upstreamCpuSeconds: 0.5 }, 4) ?? 0) > c);
  });

  it('a cache that must hash every byte it fetches adds that CPU to the bound', () => {
    // clients 4.2 + upstream 0.2 + sha256 0.3 = 4.7 CPU-seconds on 2 cores: at best 2.35 s of wall time.
    const free = cpuBoundCeiling({ bytes: 1796e6, clientCpuSeconds: 4.2, upstreamCpuSeconds: 0.2 }, 2) ?? 0;
    const verifying = cpuBoundCeiling({ bytes: 1796e6, clientCpuSeconds: 4.2, upstreamCpuSeconds: 0.2, cacheCpuSeconds: 0.3 }, 2) ?? 0;
    assert.equal(Math.round(verifying / 1e6), Math.round(1796 / 2.35));
    assert.ok(verifying < free);
  });

  it('has no CPU ceiling without a measured cost', () => {
    assert.equal(cpuBoundCeiling({ bytes: 1e6, clientCpuSeconds: 0, upstreamCpuSeconds: 0 }, 2), undefined);
    assert.equal(cpuBoundCeiling({ bytes: 0, clientCpuSeconds: 1, upstreamCpuSeconds: 0 }, 2), undefined);
  });

  it('a link-bound pull delivers at most clients x the link payload rate', () => {
    assert.equal(linkBoundCeiling(8, 23.9e6), 8 * 23.9e6);
    assert.equal(linkBoundCeiling(8, 0), undefined);
  });

  it('tells met, reachable and out-of-reach targets apart', () => {
    const base: Ceiling = { id: 'a', label: 'a', ratio: 0.8, ceiling: 1.06, target: 1.2, boundBy: 'cpu' };
    assert.equal(reach(base), 'out of reach here');
    assert.equal(reach({ ...base, ceiling: 1.5 }), 'not met, within reach');
    assert.equal(reach({ ...base, ratio: 1.25 }), 'met');
    assert.equal(reach({ ...base, ratio: undefined }), 'n/a');
    assert.equal(reach({ ...base, ceiling: undefined }), 'n/a');
  });

  it('says when only a cache cheaper than nginx at moving bytes could meet the target', () => {
    // clients 3.8 + upstream 0.2 on 2 cores; nginx's cold pull used 0.4 s, the sha256 0.13 s; nginx took 2.5 s.
    const bytes = 1796e6;
    const nginx = bytes / 2.5;
    const best = cpuBoundCeiling({ bytes, clientCpuSeconds: 3.8, upstreamCpuSeconds: 0.2, cacheCpuSeconds: 0.13 }, 2) ?? 0;
    const frugal = cpuBoundCeiling({ bytes, clientCpuSeconds: 3.8, upstreamCpuSeconds: 0.2, cacheCpuSeconds: 0.13 + 0.4 }, 2) ?? 0;
    const c: Ceiling = { id: 'cold', label: 'cold', ratio: 0.96, ceiling: best / nginx, atNginxCpu: frugal / nginx, target: 1.2, boundBy: 'cpu' };
    // 4.13 s of CPU: 2.07 s of wall at best (1.21x); with nginx's 0.4 s on top, 2.27 s (1.10x).
    assert.equal(c.ceiling?.toFixed(2), '1.21');
    assert.equal(c.atNginxCpu?.toFixed(2), '1.10');
    assert.equal(reach(c), 'needs less CPU than nginx');
    assert.equal(reach({ ...c, atNginxCpu: 1.25 }), 'not met, within reach');
    assert.equal(reach({ ...c, ratio: 1.2 }), 'met');
    assert.equal(reach({ ...c, ceiling: 1.1 }), 'out of reach here');
  });

  it('renders one row per target with both ratios', () => {
    const out = renderCeilings([{ id: 'cold', label: 'cold pull', ratio: 0.8, ceiling: 1.06, target: 1.2, boundBy: 'CPU' }]);
    const lines = out.split('\n');
    assert.equal(lines.length, 3);
    assert.match(lines[2] ?? '', /\| cold pull .*0\.80x .*1\.06x .*>= 1\.2x .*out of reach here .*CPU/);
    const two = renderCeilings([{ id: 'cold', label: 'cold pull', ratio: 0.96, ceiling: 1.21, atNginxCpu: 1.1, target: 1.2, boundBy: 'CPU' }]).split('\n');
    assert.match(two[0] ?? '', /best possible here \| at nginx's CPU \|/);
    assert.match(two[2] ?? '', /0\.96x \| +1\.21x \| +1\.10x \| .*needs less CPU than nginx/);
  });
});
