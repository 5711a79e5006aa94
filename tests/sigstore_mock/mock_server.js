#!/usr/bin/env node
// A local Fulcio + Rekor on 127.0.0.1 built from @sigstore/mock's handlers, with the fixes real
// verifiers need (see README.md in this directory for why each exists).
//
//   NODE_PATH=<install>/node_modules node mock_server.js --out DIR [--port N] [--skip-fix pem,dsse,proof,etag,bearer]
//
// @sigstore/mock only ships nock interceptors (in-process); this wraps the same handler functions
// in a real HTTP server so @sigstore/cli and cosign can talk to it over the loopback.
//
// Endpoints (one port, paths as the real services):
//   POST /api/v2/signingCert    Fulcio: certificate for the key in the request, SAN = the token's sub
//   POST /api/v1/log/entries    Rekor v1: entry + SET + one-leaf inclusion proof and checkpoint
//   GET  /api/v1/log/publicKey  Rekor's key (PEM)
//   GET  /healthz
// Writes to DIR: trusted_root.json (protobuf-specs TrustedRoot pointing at this server),
// fulcio_root.pem, rekor.pub, ctlog.pub, and prints one JSON line {"url", "trusted_root", ...}
// on stdout once listening. Every request/response pair is appended to DIR/requests.log.
'use strict';

const crypto = require('crypto');
const fs = require('fs');
const http = require('http');
const path = require('path');
const mock = require('@sigstore/mock');
const canonicalize = require('canonicalize');

function parseArgs(argv) {
  const args = { port: 0, out: null, skip: new Set() };
  for (let i = 2; i < argv.length; i++) {
    const a = argv[i];
    if (a === '--port') args.port = Number(argv[++i]);
    else if (a === '--out') args.out = argv[++i];
    else if (a === '--skip-fix') for (const f of argv[++i].split(',')) if (f) args.skip.add(f);
    else throw new Error(`unknown argument ${a}`);
  }
  if (!args.out) throw new Error('--out DIR is required');
  for (const f of args.skip) {
    if (!['pem', 'dsse', 'proof', 'etag', 'bearer'].includes(f)) throw new Error(`unknown fix ${f}`);
  }
  return args;
}

// ---- fix 1: PEM at 64 columns (RFC 7468 §2 "strict" form, what Go's pem.Encode and Python write)
function rewrapPEM(pem) {
  const m = /-----BEGIN ([A-Z ]+)-----([\s\S]*?)-----END \1-----/.exec(pem);
  if (!m) return pem;
  const b64 = m[2].replace(/\s+/g, '');
  const lines = b64.match(/.{1,64}/g) || [];
  return `-----BEGIN ${m[1]}-----\n${lines.join('\n')}\n-----END ${m[1]}-----\n`;
}

function sha256hex(buf) {
  return crypto.createHash('sha256').update(buf).digest('hex');
}

// ---- fix 2: the body Rekor v1 really stores for a DSSE envelope (dsse 0.0.1 canonical form,
// rekor pkg/types/dsse/v0.0.1 Canonicalize): envelopeHash, payloadHash, signatures[{signature,
// verifier}] -- not the proposed entry as the client sent it. @sigstore/cli proposes the older
// "intoto" 0.0.2 kind, which Rekor v1 stores as intoto; sigstore-python and sigstore-go accept only
// dsse 0.0.1 (or Rekor v2 hashedrekord) for DSSE bundles, and cosign v3 logs dsse, so the mock
// logs the envelope as the dsse entry cosign v3 would have produced.
function dsseBodyFromProposal(entry) {
  let envelope; // {payloadType, payload: Buffer, signatures: [{sig: Buffer, verifierB64}]}
  if (entry.kind === 'intoto' && entry.apiVersion === '0.0.2') {
    const env = entry.spec.content.envelope;
    // intoto 0.0.2 double-base64-encodes payload and sig ("that's what Rekor expects").
    const payload = Buffer.from(Buffer.from(env.payload, 'base64').toString('utf8'), 'base64');
    const sigs = env.signatures.map((s) => ({
      sig: Buffer.from(Buffer.from(s.sig, 'base64').toString('utf8'), 'base64'),
      verifierB64: s.publicKey,
      keyid: s.keyid,
    }));
    envelope = { payloadType: env.payloadType, payload, signatures: sigs };
  } else if (entry.kind === 'dsse' && entry.apiVersion === '0.0.1' && entry.spec.proposedContent) {
    const env = JSON.parse(entry.spec.proposedContent.envelope);
    const verifiers = entry.spec.proposedContent.verifiers;
    envelope = {
      payloadType: env.payloadType,
      payload: Buffer.from(env.payload, 'base64'),
      signatures: env.signatures.map((s, i) => ({
        sig: Buffer.from(s.sig, 'base64'),
        verifierB64: verifiers[Math.min(i, verifiers.length - 1)],
        keyid: s.keyid,
      })),
    };
  } else {
    return null;
  }
  const envelopeJSON = canonicalize({
    payloadType: envelope.payloadType,
    payload: envelope.payload.toString('base64'),
    signatures: envelope.signatures.map((s) => (s.keyid ? { keyid: s.keyid, sig: s.sig.toString('base64') }
      : { sig: s.sig.toString('base64') })),
  });
  return {
    apiVersion: '0.0.1',
    kind: 'dsse',
    spec: {
      envelopeHash: { algorithm: 'sha256', value: sha256hex(Buffer.from(envelopeJSON)) },
      payloadHash: { algorithm: 'sha256', value: sha256hex(envelope.payload) },
      signatures: envelope.signatures.map((s) => ({
        signature: s.sig.toString('base64'),
        verifier: s.verifierB64,
      })),
    },
  };
}

function pemOfSpki(der, label = 'PUBLIC KEY') {
  return rewrapPEM(`-----BEGIN ${label}-----${Buffer.from(der).toString('base64')}-----END ${label}-----`);
}

// RFC 6962 §2.1 Merkle tree over the log's entries, with inclusion proofs and a C2SP signed-note
// checkpoint in the same form as the mock's (origin "<host> - <treeID>", key hint = logID[0:4]).
const leafHash = (data) => crypto.createHash('sha256').update(Buffer.from([0])).update(data).digest();
const nodeHash = (l, r) => crypto.createHash('sha256').update(Buffer.from([1])).update(l).update(r).digest();
function largestPow2Below(n) {
  let k = 1;
  while (k * 2 < n) k *= 2;
  return k;
}
function mth(leaves) {
  if (leaves.length === 1) return leaves[0];
  const k = largestPow2Below(leaves.length);
  return nodeHash(mth(leaves.slice(0, k)), mth(leaves.slice(k)));
}
function auditPath(m, leaves) {
  if (leaves.length === 1) return [];
  const k = largestPow2Below(leaves.length);
  if (m < k) return [...auditPath(m, leaves.slice(0, k)), mth(leaves.slice(k))];
  return [...auditPath(m - k, leaves.slice(k)), mth(leaves.slice(0, k))];
}
class Tree {
  constructor(host, privateKey, logId) {
    this.host = host;
    this.privateKey = privateKey;
    this.logId = logId;
    this.treeId = crypto.randomInt(2 ** 48 - 1);
    this.leaves = [leafHash(Buffer.from('sigaudit mock rekor: filler leaf 0'))];
  }
  add(body, integratedTime) {
    const index = this.leaves.length;
    this.leaves.push(leafHash(body));
    const size = this.leaves.length;
    const root = mth(this.leaves);
    const note = [`${this.host} - ${this.treeId}`, `${size}`, root.toString('base64'),
      `Timestamp: ${integratedTime * 1_000_000_000}`, ''].join('\n');
    const sig = crypto.sign('sha256', Buffer.from(note), this.privateKey);
    const sigLine = `\u2014 ${this.host} ${Buffer.concat([this.logId.subarray(0, 4), sig]).toString('base64')}`;
    return {
      logIndex: index,
      treeSize: size,
      rootHash: root.toString('hex'),
      hashes: auditPath(index, this.leaves).map((h) => h.toString('hex')),
      checkpoint: [note, sigLine, ''].join('\n'),
    };
  }
}

async function main() {
  const args = parseArgs(process.argv);
  fs.mkdirSync(args.out, { recursive: true });
  const logFile = path.join(args.out, 'requests.log');
  const caKey = crypto.generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const ctKey = crypto.generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const rekorKey = crypto.generateKeyPairSync('ec', { namedCurve: 'P-256' });

  const server = http.createServer();
  await new Promise((resolve) => server.listen(args.port, '127.0.0.1', resolve));
  const port = server.address().port;
  const url = `http://127.0.0.1:${port}`;

  const ctlog = await mock.initializeCTLog(ctKey);
  const ca = await mock.initializeCA(caKey, ctlog);
  const fulcio = mock.fulcioHandler(ca);
  const tlog = await mock.initializeTLog(url, rekorKey);
  const rekorPubDer = rekorKey.publicKey.export({ format: 'der', type: 'spki' });
  const rekorLogId = crypto.createHash('sha256').update(rekorPubDer).digest();
  const tree = new Tree(new URL(url).host, rekorKey.privateKey, rekorLogId);

  const handleFulcio = async (body, authorization) => {
    // fix 5: sigstore-go (cosign v3) sends the OIDC token as `Authorization: Bearer <jwt>`, as real
    // Fulcio accepts it, and no `credentials` in the body; the mock's handler reads only the body. It
    // also wants the 200 real Fulcio's gateway answers (the nock handler says 201).
    const bearer = !args.skip.has('bearer') && /^Bearer /i.test(authorization || '');
    if (bearer) {
      try {
        const doc = JSON.parse(body);
        if (doc && !doc.credentials) {
          doc.credentials = { oidcIdentityToken: authorization.replace(/^Bearer /i, '') };
          body = JSON.stringify(doc);
        }
      } catch (e) { /* the handler reports the bad body */ }
    }
    const res = await fulcio.fn(body);
    if (res.statusCode !== 201) return res;
    const status = bearer ? { statusCode: 200 } : {};
    if (args.skip.has('pem')) return { ...res, ...status };
    const doc = JSON.parse(res.response);
    const chain = doc.signedCertificateEmbeddedSct.chain;
    chain.certificates = chain.certificates.map(rewrapPEM);
    return { ...res, ...status, response: JSON.stringify(doc) };
  };

  const handleRekor = async (body) => {
    let proposed;
    try {
      proposed = JSON.parse(body);
    } catch (e) {
      return { statusCode: 400, response: `bad JSON: ${e.message}` };
    }
    let entry = proposed;
    if (!args.skip.has('dsse')) entry = dsseBodyFromProposal(proposed) || proposed;
    // TLogImpl.log canonicalises what it is given (RFC 8785) and signs the SET over it.
    const logged = await tlog.log(entry);
    const uuid = Object.keys(logged)[0];
    const e = logged[uuid];
    if (!args.skip.has('proof')) {
      // fix 3: the mock proves every entry as the only leaf of a one-leaf tree: the proof's
      // logIndex is 0 and hashes is []. Protobuf JSON drops default values, so @sigstore/bundle
      // writes an inclusionProof without logIndex and hashes, and sigstore-python's bundle model
      // rejects it ("Field required"). Keep a real RFC 6962 tree instead (a filler leaf at index 0,
      // then every entry), so each proof has a non-zero index and a non-empty audit path, and sign
      // a checkpoint for the new tree head.
      e.verification.inclusionProof = tree.add(Buffer.from(e.body, 'base64'), e.integratedTime);
    }
    // fix 4: real Rekor answers 201 with `ETag: <uuid>` and `Location: /api/v1/log/entries/<uuid>`;
    // the mock's handler (made for nock) has no headers. sigstore-go (cosign v3) reads the entry as
    // resp.Payload[resp.ETag] and dereferences nil without the ETag.
    const headers = args.skip.has('etag') ? {} : { ETag: uuid, Location: `/api/v1/log/entries/${uuid}` };
    return { statusCode: 201, response: JSON.stringify(logged), contentType: 'application/json', headers };
  };

  server.on('request', (req, res) => {
    const chunks = [];
    req.on('data', (c) => chunks.push(c));
    req.on('end', async () => {
      const body = Buffer.concat(chunks).toString('utf8');
      let out;
      try {
        const p = req.url.split('?')[0];
        if (req.method === 'POST' && p === '/api/v2/signingCert') out = await handleFulcio(body, req.headers.authorization);
        else if (req.method === 'POST' && p === '/api/v1/log/entries') out = await handleRekor(body);
        else if (req.method === 'GET' && p === '/api/v1/log/publicKey') {
          out = { statusCode: 200, response: pemOfSpki(rekorPubDer), contentType: 'application/x-pem-file' };
        } else if (req.method === 'GET' && p === '/healthz') out = { statusCode: 200, response: 'ok' };
        else out = { statusCode: 404, response: `no route for ${req.method} ${p}` };
      } catch (e) {
        out = { statusCode: 500, response: String(e && e.stack ? e.stack : e) };
      }
      fs.appendFileSync(logFile, JSON.stringify({ method: req.method, url: req.url, status: out.statusCode,
        request: body.slice(0, 20000), response: String(out.response).slice(0, 20000) }) + '\n');
      res.writeHead(out.statusCode, { 'Content-Type': out.contentType || 'text/plain', ...(out.headers || {}) });
      res.end(out.response);
    });
  });

  // trusted_root.json (protobuf-specs TrustedRoot, JSON form) pointing at this server. validFor
  // starts an hour back: the mock CA's own notBefore is "now", and clocks are compared in seconds.
  const start = new Date(Date.now() - 3600 * 1000).toISOString().replace(/\.\d+Z$/, 'Z');
  const ctPubDer = ctKey.publicKey.export({ format: 'der', type: 'spki' });
  const trustedRoot = {
    mediaType: 'application/vnd.dev.sigstore.trustedroot+json;version=0.1',
    tlogs: [{
      baseUrl: url,
      hashAlgorithm: 'SHA2_256',
      publicKey: { rawBytes: rekorPubDer.toString('base64'), keyDetails: 'PKIX_ECDSA_P256_SHA_256',
        validFor: { start } },
      logId: { keyId: rekorLogId.toString('base64') },
    }],
    certificateAuthorities: [{
      subject: { organization: 'sigstore.mock', commonName: 'sigstore' },
      uri: url,
      certChain: { certificates: [{ rawBytes: ca.rootCertificate.toString('base64') }] },
      validFor: { start },
    }],
    ctlogs: [{
      baseUrl: url,
      hashAlgorithm: 'SHA2_256',
      publicKey: { rawBytes: ctPubDer.toString('base64'), keyDetails: 'PKIX_ECDSA_P256_SHA_256',
        validFor: { start } },
      logId: { keyId: Buffer.from(ctlog.logID).toString('base64') },
    }],
    timestampAuthorities: [],
  };
  const files = {
    trusted_root: path.join(args.out, 'trusted_root.json'),
    fulcio_root: path.join(args.out, 'fulcio_root.pem'),
    rekor_pub: path.join(args.out, 'rekor.pub'),
    ctlog_pub: path.join(args.out, 'ctlog.pub'),
  };
  fs.writeFileSync(files.trusted_root, JSON.stringify(trustedRoot, null, 2));
  fs.writeFileSync(files.fulcio_root, pemOfSpki(ca.rootCertificate, 'CERTIFICATE'));
  fs.writeFileSync(files.rekor_pub, pemOfSpki(rekorPubDer));
  fs.writeFileSync(files.ctlog_pub, pemOfSpki(ctPubDer));
  process.stdout.write(JSON.stringify({ url, port, rekor_log_id: rekorLogId.toString('hex'),
    skipped_fixes: [...args.skip], ...files }) + '\n');

  const stop = () => server.close(() => process.exit(0));
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
}

main().catch((e) => {
  process.stderr.write(`mock_server: ${e && e.stack ? e.stack : e}\n`);
  process.exit(1);
});
