#!/usr/bin/env node
// Builds relais's optional native addon (native/sendfile: zero-copy blob responses with sendfile(2)).
// Runs on `npm ci` / `npm install` (package.json "install"). It needs a C compiler, make and python3
// (Debian: build-essential python3) and Node's headers; node-gyp comes with npm. If the build fails,
// relais still works and streams blobs instead (it says so at start): this script then warns and exits 0,
// unless RELAIS_REQUIRE_NATIVE=1 (CI sets it, so that the zero-copy path is always what CI tests).
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const dir = join(root, 'native', 'sendfile');
const required = process.env.RELAIS_REQUIRE_NATIVE === '1';

function fail(msg) {
  const line = `relais: the sendfile addon was not built (${msg}); relais will stream blobs instead of using sendfile(2).`;
  if (required) {
    console.error(`${line}\nRELAIS_REQUIRE_NATIVE=1: failing.`);
    process.exit(1);
  }
  console.warn(`${line}\n  hint: install a C toolchain (apt-get install build-essential python3) and run: node scripts/build-native.mjs`);
  process.exit(0);
}

if (process.platform !== 'linux') fail(`sendfile(2) is used on Linux only, this is ${process.platform}`);

// node-gyp: the one npm runs scripts with, else the one bundled with npm.
function findNodeGyp() {
  if (process.env.npm_config_node_gyp && existsSync(process.env.npm_config_node_gyp)) return process.env.npm_config_node_gyp;
  const npmDir = join(dirname(process.execPath), '..', 'lib', 'node_modules', 'npm');
  const candidates = [join(npmDir, 'node_modules', 'node-gyp', 'bin', 'node-gyp.js')];
  try {
    candidates.push(createRequire(import.meta.url).resolve('node-gyp/bin/node-gyp.js'));
  } catch {
    // not installed locally
  }
  return candidates.find((c) => existsSync(c));
}

const gyp = findNodeGyp();
if (!gyp) fail('node-gyp not found');
const args = [gyp, 'rebuild', '--directory', dir];
// No internet: use the installed headers of this Node when they are there, instead of downloading them.
const prefix = join(dirname(process.execPath), '..');
if (!process.env.npm_config_nodedir && existsSync(join(prefix, 'include', 'node', 'node_api.h'))) args.push(`--nodedir=${prefix}`);
const r = spawnSync(process.execPath, args, { stdio: ['ignore', 'pipe', 'pipe'], encoding: 'utf8' });
if (r.status !== 0) {
  process.stderr.write(r.stdout.slice(-4000) + r.stderr.slice(-4000));
  fail(`node-gyp exited with ${r.status ?? r.signal}`);
}
console.log('relais: sendfile addon built (native/sendfile/build/Release/relais_sendfile.node)');
