// relais's certificate authority for the proxy door (docs/proxy.md): generated at first start into
// <dataDir>/ca/ (key mode 0600, never served) or given by the operator, and the per-host leaf certificates
// it signs for the intercepted registry hosts. A generated CA carries X.509 name constraints: it can only
// vouch for the host names configured when it was made, and for no IP address.
import 'reflect-metadata';
import { createPrivateKey, randomBytes, webcrypto, X509Certificate } from 'node:crypto';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { createSecureContext, type SecureContext } from 'node:tls';
import { AsnConvert } from '@peculiar/asn1-schema';
import { GeneralName, GeneralSubtree, GeneralSubtrees, NameConstraints, id_ce_nameConstraints } from '@peculiar/asn1-x509';
import * as x509 from '@peculiar/x509';
import { errors, type RelaisError } from '../../errors.js';

x509.cryptoProvider.set(webcrypto);

const EC = { name: 'ECDSA', namedCurve: 'P-256', hash: 'SHA-256' } as const;
const DAY = 24 * 3600_000;
/** A generated CA is valid this long; an operator replaces it by moving <dataDir>/ca away. */
const CA_VALIDITY = 10 * 365 * DAY;
/** Leaf certificates: short, and re-issued in memory before they end. */
const LEAF_VALIDITY = 30 * DAY;
const LEAF_RENEW = 20 * DAY;

export interface CaFiles {
  readonly cert: string;
  readonly key: string;
}

export interface ProxyCa {
  /** The CA certificate (PEM), what clients trust. */
  readonly certPem: string;
  /** The dNSName subtrees the CA is limited to, or undefined when it has no name constraints. */
  readonly permitted: readonly string[] | undefined;
  /** A TLS context with a leaf certificate for this host name, signed by the CA (cached). */
  contextFor(host: string): Promise<SecureContext>;
}

/** Where a generated CA lives. */
export function defaultCaFiles(dataDir: string): CaFiles {
  return { cert: join(dataDir, 'ca', 'ca.crt'), key: join(dataDir, 'ca', 'ca.key') };
}

function caError(message: string, hint: string, cause?: unknown): RelaisError {
  return errors.caUnusable.with({ cause }, message, hint);
}

function nameConstraints(hosts: readonly string[]): x509.Extension {
  const permitted = new GeneralSubtrees(hosts.map((h) => new GeneralSubtree({ base: new GeneralName({ dNSName: h }) })));
  // No IP address at all: 0.0.0.0/0 and ::/0 excluded (an empty iPAddress permitted list is not understood everywhere).
  const excluded = new GeneralSubtrees([
    new GeneralSubtree({ base: new GeneralName({ iPAddress: '0.0.0.0/0' }) }),
    new GeneralSubtree({ base: new GeneralName({ iPAddress: '::/0' }) }),
  ]);
  return new x509.Extension(id_ce_nameConstraints, true, AsnConvert.serialize(new NameConstraints({ permittedSubtrees: permitted, excludedSubtrees: excluded })));
}

/** The permitted dNSName subtrees of a certificate's name constraints, or undefined without them. */
export function permittedNames(cert: x509.X509Certificate): string[] | undefined {
  const ext = cert.getExtension(id_ce_nameConstraints);
  if (!ext) return undefined;
  const nc = AsnConvert.parse(ext.value, NameConstraints);
  const subtrees = nc.permittedSubtrees;
  if (subtrees === undefined) return [];
  return Array.from(subtrees, (s) => s.base.dNSName).filter((n): n is string => n !== undefined);
}

/** Whether a dNSName constraint (RFC 5280 4.2.1.10) permits a host name. */
export function constraintPermits(constraint: string, host: string): boolean {
  const c = constraint.toLowerCase().replace(/^\./, '');
  const h = host.toLowerCase();
  return h === c || h.endsWith(`.${c}`);
}

function serial(): string {
  const b = randomBytes(16);
  b[0] = (b[0] ?? 0) & 0x7f;
  return b.toString('hex');
}

/** Makes a new CA limited to these host names (no port). */
export async function generateCa(hosts: readonly string[], now = new Date()): Promise<{ certPem: string; keyPem: string }> {
  const keys = await webcrypto.subtle.generateKey(EC, true, ['sign', 'verify']);
  const cert = await x509.X509CertificateGenerator.createSelfSigned({
    serialNumber: serial(),
    name: `CN=relais proxy CA ${now.toISOString().slice(0, 10)}, O=relais`,
    notBefore: new Date(now.getTime() - 3600_000),
    notAfter: new Date(now.getTime() + CA_VALIDITY),
    keys: keys,
    signingAlgorithm: EC,
    extensions: [
      new x509.BasicConstraintsExtension(true, 0, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true),
      await x509.SubjectKeyIdentifierExtension.create(keys.publicKey),
      nameConstraints(hosts),
    ],
  });
  const pkcs8 = Buffer.from(await webcrypto.subtle.exportKey('pkcs8', keys.privateKey));
  const keyPem = `-----BEGIN PRIVATE KEY-----\n${pkcs8.toString('base64').replace(/.{64}/g, '$&\n').replace(/\n?$/, '\n')}-----END PRIVATE KEY-----\n`;
  return { certPem: cert.toString('pem') + '\n', keyPem };
}

/** Imports a PEM private key (PKCS#8, SEC1 EC or PKCS#1 RSA) for signing with WebCrypto. */
async function importSigningKey(pem: string): Promise<{ key: webcrypto.CryptoKey; algorithm: { name: string; hash: string; namedCurve?: string } }> {
  const k = createPrivateKey(pem);
  const der = k.export({ format: 'der', type: 'pkcs8' });
  if (k.asymmetricKeyType === 'ec') {
    const curve = k.asymmetricKeyDetails?.namedCurve;
    const namedCurve = curve === 'prime256v1' ? 'P-256' : curve === 'secp384r1' ? 'P-384' : curve === 'secp521r1' ? 'P-521' : undefined;
    if (namedCurve === undefined) throw caError(`the CA key uses the curve ${curve ?? '?'}`, 'use a P-256, P-384 or P-521 EC key, or an RSA key');
    const algorithm = { name: 'ECDSA', namedCurve, hash: namedCurve === 'P-256' ? 'SHA-256' : 'SHA-384' };
    return { key: (await webcrypto.subtle.importKey('pkcs8', der, algorithm, false, ['sign'])), algorithm };
  }
  if (k.asymmetricKeyType === 'rsa') {
    const algorithm = { name: 'RSASSA-PKCS1-v1_5', hash: 'SHA-256' };
    return { key: (await webcrypto.subtle.importKey('pkcs8', der, algorithm, false, ['sign'])), algorithm };
  }
  throw caError(`the CA key is of type ${k.asymmetricKeyType ?? '?'}`, 'use an EC (P-256) or RSA key');
}

/**
 * Loads the CA: the operator's (proxy.ca) or the generated one in <dataDir>/ca/, made now if there is none.
 * `hosts` are the intercepted host names (no port): a generated CA is limited to them; a CA whose name
 * constraints do not cover one of them is refused with what to do.
 */
export async function loadCa(opts: { readonly files?: CaFiles | undefined; readonly dataDir: string; readonly hosts: readonly string[] }): Promise<ProxyCa> {
  const given = opts.files;
  const files = given ?? defaultCaFiles(opts.dataDir);
  let certPem: string;
  let keyPem: string;
  try {
    [certPem, keyPem] = await Promise.all([readFile(files.cert, 'utf8'), readFile(files.key, 'utf8')]);
  } catch (e) {
    if (given !== undefined || (e as NodeJS.ErrnoException).code !== 'ENOENT') {
      throw caError(`cannot read the proxy CA (${files.cert}, ${files.key}): ${(e as NodeJS.ErrnoException).code ?? String(e)}`, 'check proxy.ca.cert and proxy.ca.key, or remove proxy.ca to let relais generate one', e);
    }
    const made = await generateCa(opts.hosts);
    await mkdir(join(opts.dataDir, 'ca'), { recursive: true, mode: 0o700 });
    // The key first, exclusively and private: two relais starting at once cannot both write a CA.
    try {
      await writeFile(files.key, made.keyPem, { mode: 0o600, flag: 'wx' });
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'EEXIST') return loadCa(opts);
      throw err;
    }
    await writeFile(files.cert, made.certPem, { mode: 0o644 });
    certPem = made.certPem;
    keyPem = made.keyPem;
  }
  return openCa(certPem, keyPem, opts.hosts, given === undefined ? files : undefined);
}

async function openCa(certPem: string, keyPem: string, hosts: readonly string[], generatedAt: CaFiles | undefined): Promise<ProxyCa> {
  let caCert: x509.X509Certificate;
  try {
    caCert = new x509.X509Certificate(certPem);
    if (!new X509Certificate(certPem).checkPrivateKey(createPrivateKey(keyPem))) throw new Error('the key does not belong to the certificate');
  } catch (e) {
    throw caError(`the proxy CA is not usable: ${e instanceof Error ? e.message : String(e)}`, 'give a PEM certificate and its PEM private key in proxy.ca', e);
  }
  const permitted = permittedNames(caCert);
  if (permitted !== undefined) {
    const outside = hosts.filter((h) => !permitted.some((c) => constraintPermits(c, h)));
    if (outside.length > 0) {
      const where = generatedAt ? `move ${join(generatedAt.cert, '..')} away (relais makes a new CA for every configured host at the next start) and give clients the new certificate (relais ca)` : 'use a CA whose name constraints include them';
      throw caError(`the proxy CA may only vouch for ${permitted.join(', ')}; not for ${outside.join(', ')} (upstreams.*.hosts)`, where);
    }
  }
  const signer = await importSigningKey(keyPem);
  const leafKeys = await webcrypto.subtle.generateKey(EC, true, ['sign', 'verify']);
  const leafKeyDer = Buffer.from(await webcrypto.subtle.exportKey('pkcs8', leafKeys.privateKey));
  const leafKeyPem = createPrivateKey({ key: leafKeyDer, format: 'der', type: 'pkcs8' }).export({ format: 'pem', type: 'pkcs8' }).toString();
  const authorityKeyId = await x509.AuthorityKeyIdentifierExtension.create(caCert, false);
  const cache = new Map<string, { ctx: Promise<SecureContext>; renewAt: number }>();

  const issue = async (host: string): Promise<SecureContext> => {
    const now = Date.now();
    const leaf = await x509.X509CertificateGenerator.create({
      serialNumber: serial(),
      subject: `CN=${host}`,
      issuer: caCert.subject,
      notBefore: new Date(now - 3600_000),
      notAfter: new Date(Math.min(now + LEAF_VALIDITY, caCert.notAfter.getTime())),
      publicKey: leafKeys.publicKey,
      signingKey: signer.key,
      signingAlgorithm: signer.algorithm,
      extensions: [
        new x509.BasicConstraintsExtension(false, undefined, true),
        new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature, true),
        new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.serverAuth]),
        new x509.SubjectAlternativeNameExtension([{ type: 'dns', value: host }]),
        authorityKeyId,
      ],
    });
    return createSecureContext({ key: leafKeyPem, cert: leaf.toString('pem'), minVersion: 'TLSv1.2' });
  };

  return {
    certPem: certPem.endsWith('\n') ? certPem : `${certPem}\n`,
    permitted,
    contextFor(host) {
      const now = Date.now();
      const hit = cache.get(host);
      if (hit && hit.renewAt > now) return hit.ctx;
      const ctx = issue(host);
      cache.set(host, { ctx, renewAt: now + LEAF_RENEW });
      ctx.catch(() => cache.delete(host));
      return ctx;
    },
  };
}
