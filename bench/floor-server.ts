// The manifest-rate ceiling for any Node server on this machine: `node dist/bench/floor-server.js PORT BODY_FILE
// CONTENT_TYPE`. A bare node:http server that answers every request with one constant manifest and the headers a
// registry sends, doing nothing else (no routing, no lookup, no log, no metrics). The bench runs the same wrk against
// it as against the targets: relais's manifest rate cannot exceed this figure, whatever its own code costs.
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { createServer } from 'node:http';

const [portText, bodyFile, contentType] = process.argv.slice(2);
if (portText === undefined || bodyFile === undefined || contentType === undefined) {
  process.stderr.write('usage: node dist/bench/floor-server.js PORT BODY_FILE CONTENT_TYPE\n');
  process.exit(2);
}
const body = readFileSync(bodyFile);
const digest = `sha256:${createHash('sha256').update(body).digest('hex')}`;
const server = createServer({ keepAliveTimeout: 5000 }, (_req, res) => {
  res.statusCode = 200;
  res.setHeader('content-type', contentType);
  res.setHeader('content-length', body.byteLength);
  res.setHeader('docker-content-digest', digest);
  res.setHeader('etag', `"${digest}"`);
  res.setHeader('docker-distribution-api-version', 'registry/2.0');
  res.end(body);
});
server.listen(Number(portText), '127.0.0.1', () => process.stdout.write(`listening on 127.0.0.1:${portText}\n`));
process.on('SIGTERM', () => server.close(() => process.exit(0)));
