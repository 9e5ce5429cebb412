import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { cpuSecondsPerGb, evpOfCipher, parseOpensslSpeed, proxyRows, renderProxyTable, tlsBound, type DoorPull } from '../../../bench/lib/proxy.js';

const pull = (p: Partial<DoorPull>): DoorPull => ({ mbPerSec: 500, bytes: 2e9, cpuSeconds: 1, clientCpuSeconds: 4, blobGets: 0, errors: 0, ...p });

// The output of `openssl speed -seconds 2 -bytes 16384 -evp aes-128-gcm` (OpenSSL 3.0) on this machine.
const SPEED = `CPUINFO: OPENSSL_ia32cap=0xfffa3203078bffff:0x400684219c07ab
The 'numbers' are in 1000s of bytes per second processed.
type          16384 bytes
AES-128-GCM    3590225.92k
`;

describe('bench proxy-door rows', () => {
  it('CPU per pulled GB is CPU-seconds over 10^9 bytes', () => {
    assert.equal(cpuSecondsPerGb(0.5, 2e9), 0.25);
    assert.equal(cpuSecondsPerGb(3, 1.5e9), 2);
    assert.equal(cpuSecondsPerGb(1, 0), undefined);
    assert.equal(cpuSecondsPerGb(Number.NaN, 1e9), undefined);
  });

  it("reads openssl speed's rate (in 1000s of bytes/s) from the cipher's line, whatever its case", () => {
    assert.equal(parseOpensslSpeed(SPEED, 'aes-128-gcm'), 3590225.92 * 1000);
    assert.equal(parseOpensslSpeed(SPEED, 'aes-256-gcm'), undefined);
    assert.equal(parseOpensslSpeed('garbage\n', 'aes-128-gcm'), undefined);
  });

  it('maps a negotiated suite to the cipher openssl speed measures', () => {
    assert.equal(evpOfCipher('TLS_AES_256_GCM_SHA384'), 'aes-256-gcm');
    assert.equal(evpOfCipher('TLS_AES_128_GCM_SHA256'), 'aes-128-gcm');
    assert.equal(evpOfCipher('ECDHE-RSA-AES128-GCM-SHA256'), 'aes-128-gcm');
    assert.equal(evpOfCipher('TLS_CHACHA20_POLY1305_SHA256'), 'chacha20-poly1305');
    assert.equal(evpOfCipher('TLS_AES_128_CCM_SHA256'), undefined);
  });

  it('gives medians per door, the proxy/HTTP ratio, and judges the warm target at 0.5x', () => {
    const http = { cold: [pull({ mbPerSec: 600, blobGets: 28 })], warm: [pull({ mbPerSec: 800 }), pull({ mbPerSec: 900 }), pull({ mbPerSec: 700 })] };
    const proxy = { cold: [pull({ mbPerSec: 300, blobGets: 28, cpuSeconds: 4 })], warm: [pull({ mbPerSec: 350 }), pull({ mbPerSec: 450 }), pull({ mbPerSec: 400 })] };
    const rows = proxyRows(http, proxy, 28);
    const warm = rows.find((r) => r.id === 'proxy_warm_mbps');
    assert.equal(warm?.http, 800);
    assert.equal(warm?.proxy, 400);
    assert.equal(warm?.ratio, 0.5);
    assert.equal(warm?.verdict, 'PASS');
    assert.equal(warm?.streamed, null);
    assert.equal(rows.find((r) => r.id === 'proxy_cold_cpu_per_gb')?.proxy, 2);
    assert.equal(rows.find((r) => r.id === 'proxy_cold_upstream_gets')?.verdict, 'PASS');
    assert.equal(rows.find((r) => r.id === 'proxy_warm_upstream_gets')?.verdict, 'PASS');

    const slow = proxyRows(http, { ...proxy, warm: [pull({ mbPerSec: 399 })] }, 28);
    assert.equal(slow.find((r) => r.id === 'proxy_warm_mbps')?.verdict, 'FAIL');
  });

  it('fails the upstream rows when either door fetched a blob twice cold or at all warm', () => {
    const http = { cold: [pull({ blobGets: 28 })], warm: [pull({})] };
    const rows = proxyRows(http, { cold: [pull({ blobGets: 29 })], warm: [pull({ blobGets: 1 })] }, 28);
    assert.equal(rows.find((r) => r.id === 'proxy_cold_upstream_gets')?.verdict, 'FAIL');
    assert.equal(rows.find((r) => r.id === 'proxy_warm_upstream_gets')?.verdict, 'FAIL');
  });

  it('voids a door whose clients saw an error in any round, and fails its target', () => {
    const rows = proxyRows({ cold: [pull({})], warm: [pull({})] }, { cold: [pull({})], warm: [pull({}), pull({ errors: 2 })] }, 28);
    const warm = rows.find((r) => r.id === 'proxy_warm_mbps');
    assert.equal(warm?.proxy, null);
    assert.equal(warm?.notes.proxy, '2 client errors');
    assert.equal(warm?.verdict, 'FAIL');
    assert.match(renderProxyTable(rows), /\| warm pull \(MB\/s\) .*2 client errors.*FAIL \|/);
  });

  it('splits the extra CPU of the proxy door and bounds the ratio by CPU', () => {
    // HTTP: relais 0.2 s + clients 3.8 s for 2 GB on 2 cores; sendfile off: relais 1.0 s; TLS: relais 2.0 s, clients 4.8 s.
    const b = tlsBound({
      http: [pull({ cpuSeconds: 0.2, clientCpuSeconds: 3.8 })],
      streamed: [pull({ cpuSeconds: 1.0, clientCpuSeconds: 3.8 })],
      proxy: [pull({ cpuSeconds: 2.0, clientCpuSeconds: 4.8 })],
      cipherBytesPerSec: 4e9,
      cores: 2,
    });
    assert.ok(b);
    assert.ok(Math.abs(b.extraRelaisCpu - 1.8) < 1e-9);
    assert.ok(Math.abs(b.extraClientCpu - 1.0) < 1e-9);
    assert.ok(Math.abs((b.noSendfileRelaisCpu ?? 0) - 0.8) < 1e-9);
    assert.ok(Math.abs((b.tlsRelaisCpu ?? 0) - 1.0) < 1e-9);
    assert.equal(b.cipherCpuEachSide, 0.5);
    // Only the cipher on top of the HTTP door's 4.0 s: 4.0 / 5.0.
    assert.ok(Math.abs((b.cipherOnlyRatio ?? 0) - 0.8) < 1e-9);
    // As measured: 4.0 / 6.8.
    assert.ok(Math.abs((b.measuredCpuRatio ?? 0) - 4 / 6.8) < 1e-9);
    assert.equal(tlsBound({ http: [], proxy: [pull({})], cipherBytesPerSec: undefined, cores: 2 }), undefined);
  });
});
