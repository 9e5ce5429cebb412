// A real PostgreSQL as a test peer: initdb in a temp dir, the server in the foreground on a free loopback
// port (a managed process: stopped with the test, killed if the test process dies). initdb refuses to run
// as root, so as root the server runs as the 'postgres' user (Debian's package creates it) via setpriv.
import { chownSync, existsSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import pg from 'pg';
import { freePort } from './ports.js';
import { removeDir, runOk, startProcess, tempDir, type ManagedProcess } from './proc.js';

export interface PostgresPeer {
  readonly port: number;
  /** postgres://relais@127.0.0.1:PORT/postgres */
  readonly adminUrl: string;
  /** Creates a fresh database and returns its URL. */
  createDatabase(name: string): Promise<string>;
  /** Runs one SQL statement as the superuser in a database (for checks). */
  query<R extends pg.QueryResultRow>(database: string, sql: string, params?: unknown[]): Promise<R[]>;
  readonly process: ManagedProcess;
  /** Stops the server, data kept (PostgreSQL down: outage tests). */
  stop(): Promise<void>;
  /** Starts it again on the same port and data; resolves once it answers. */
  start(): Promise<void>;
  close(): Promise<void>;
}

/** The newest /usr/lib/postgresql/N/bin holding initdb and postgres. */
export function postgresBinDir(): string {
  const root = '/usr/lib/postgresql';
  const versions = existsSync(root)
    ? readdirSync(root)
        .filter((v) => /^\d+$/.test(v) && existsSync(join(root, v, 'bin', 'initdb')))
        .sort((a, b) => Number(b) - Number(a))
    : [];
  const v = versions[0];
  if (v === undefined) {
    throw new Error(`PostgreSQL is not installed (no ${root}/*/bin/initdb): run 'sudo bash scripts/setup-peers.sh' (installs postgresql)`);
  }
  return join(root, v, 'bin');
}

/** uid/gid of a user from /etc/passwd. */
function userIds(name: string): { uid: number; gid: number } | undefined {
  for (const line of readFileSync('/etc/passwd', 'utf8').split('\n')) {
    const f = line.split(':');
    if (f[0] === name && f[2] !== undefined && f[3] !== undefined) return { uid: Number(f[2]), gid: Number(f[3]) };
  }
  return undefined;
}

export async function startPostgres(): Promise<PostgresPeer> {
  const bin = postgresBinDir();
  const dir = await tempDir('postgres');
  const data = join(dir, 'data');
  let asUser: string[] = [];
  if (process.getuid?.() === 0) {
    const ids = userIds('postgres') ?? userIds('nobody');
    if (!ids) throw new Error('running as root, PostgreSQL needs an unprivileged user: no "postgres" nor "nobody" in /etc/passwd');
    chownSync(dir, ids.uid, ids.gid);
    asUser = ['setpriv', `--reuid=${ids.uid}`, `--regid=${ids.gid}`, '--clear-groups', '--'];
  }
  const cmd = (program: string, args: string[]): [string, string[]] => {
    const full = [...asUser, join(bin, program), ...args];
    return [full[0] ?? program, full.slice(1)];
  };
  try {
    await runOk(...cmd('initdb', ['-D', data, '-U', 'relais', '--auth=trust', '-E', 'UTF8', '--locale=C', '--no-sync']), { timeoutMs: 60_000 });
    const port = await freePort();
    const launch = async (): Promise<ManagedProcess> => {
      const p = await startProcess(
        ...cmd('postgres', [
          '-D', data, '-p', String(port), '-k', dir,
          '-c', 'listen_addresses=127.0.0.1',
          // A throwaway database: durability is not what the tests check.
          '-c', 'fsync=off', '-c', 'synchronous_commit=off', '-c', 'full_page_writes=off',
          '-c', 'max_connections=300', '-c', 'log_min_messages=warning',
        ]),
        { name: 'postgres' },
      );
      const deadline = Date.now() + 30_000;
      for (;;) {
        const c = new pg.Client({ connectionString: adminUrl });
        try {
          await c.connect();
          await c.query('SELECT 1');
          await c.end();
          return p;
        } catch (e) {
          await c.end().catch(() => undefined);
          if (p.exitInfo() !== null || Date.now() > deadline) {
            await p.stop();
            throw new Error(`PostgreSQL did not start (${String(e)}):\n${p.output()}`);
          }
          await sleep(100);
        }
      }
    };
    const adminUrl = `postgres://relais@127.0.0.1:${port}/postgres`;
    let proc = await launch();
    /** SIGINT: PostgreSQL's fast shutdown (SIGTERM would wait for clients to leave). */
    const shutdown = async (): Promise<void> => {
      if (proc.exitInfo() === null) {
        try {
          process.kill(proc.pid, 'SIGINT');
        } catch {
          /* gone */
        }
        await Promise.race([proc.exited, sleep(10_000)]);
      }
      await proc.stop();
    };
    const query = async <R extends pg.QueryResultRow>(database: string, sql: string, params: unknown[] = []): Promise<R[]> => {
      const c = new pg.Client({ connectionString: `postgres://relais@127.0.0.1:${port}/${database}` });
      await c.connect();
      try {
        return (await c.query<R>(sql, params)).rows;
      } finally {
        await c.end();
      }
    };
    let closed: Promise<void> | undefined;
    return {
      port,
      adminUrl,
      get process() {
        return proc;
      },
      stop: shutdown,
      start: async () => {
        if (proc.exitInfo() === null) return;
        proc = await launch();
      },
      createDatabase: async (name) => {
        if (!/^[a-z_][a-z0-9_]*$/.test(name)) throw new Error(`bad database name ${name}`);
        await query('postgres', `CREATE DATABASE ${name}`);
        return `postgres://relais@127.0.0.1:${port}/${name}`;
      },
      query,
      close: () => {
        closed ??= (async () => {
          await shutdown();
          await removeDir(dir);
        })();
        return closed;
      },
    };
  } catch (e) {
    await removeDir(dir);
    throw e;
  }
}
