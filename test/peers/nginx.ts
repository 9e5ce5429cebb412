// nginx as "a plain web server" (an upstream URL pointing at the wrong thing): serves a static site from
// a temp dir on a free port, in one process (master_process off: no user switch, no workers).
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { freePort } from './ports.js';
import { removeDir, startProcess, tempDir, waitForHttp, type ManagedProcess } from './proc.js';

export interface NginxPeer {
  /** http://127.0.0.1:PORT */
  readonly url: string;
  readonly proc: ManagedProcess;
  /** Lines of nginx's access log: "METHOD PATH STATUS". */
  accessLog(): Promise<string[]>;
  close(): Promise<void>;
}

export async function startNginx(): Promise<NginxPeer> {
  const dir = await tempDir('nginx');
  await mkdir(join(dir, 'www'), { recursive: true });
  await mkdir(join(dir, 'tmp'), { recursive: true });
  await writeFile(join(dir, 'www', 'index.html'), '<!doctype html><html><body><h1>Welcome to nginx!</h1></body></html>\n');
  const port = await freePort();
  const t = (n: string): string => join(dir, 'tmp', n);
  const conf = `daemon off;
master_process off;
pid ${join(dir, 'nginx.pid')};
error_log stderr;
events { worker_connections 64; }
http {
  log_format short '$request_method $uri $status';
  access_log ${join(dir, 'access.log')} short;
  client_body_temp_path ${t('body')}; proxy_temp_path ${t('proxy')}; fastcgi_temp_path ${t('fastcgi')};
  uwsgi_temp_path ${t('uwsgi')}; scgi_temp_path ${t('scgi')};
  server { listen 127.0.0.1:${port}; root ${join(dir, 'www')}; }
}
`;
  await writeFile(join(dir, 'nginx.conf'), conf);
  const proc = await startProcess('nginx', ['-e', 'stderr', '-p', dir, '-c', join(dir, 'nginx.conf')], { name: 'nginx' });
  const url = `http://127.0.0.1:${port}`;
  await waitForHttp(`${url}/`, 15_000, { process: proc });
  return {
    url,
    proc,
    accessLog: async () => {
      const text = await readFile(join(dir, 'access.log'), 'utf8').catch(() => '');
      return text.split('\n').filter((l) => l !== '');
    },
    close: async () => {
      await proc.stop();
      await removeDir(dir);
    },
  };
}
