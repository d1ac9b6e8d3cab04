#!/usr/bin/env node
// An offline stand-in for Prisma's native query engine (engines commit 393aa359, Prisma 5.17.0).
//
// Why: prisma-client-py (LiteLLM's database client) downloads the native engine from a Prisma host
// that these machines cannot reach. npm does ship the same engine build compiled to WebAssembly, plus
// Prisma's node-postgres driver adapter. This program wraps them in the native engine's command line
// and HTTP interface, so prisma-client-py can use it as PRISMA_QUERY_ENGINE_BINARY:
//
//   query-engine --version        -> "query-engine 393aa359..." (prisma-client-py checks this)
//   query-engine -p PORT [...]    -> HTTP on 127.0.0.1:PORT (other flags are accepted and ignored)
//     GET  /status                                  readiness
//     POST /                                        one GraphQL-protocol query, or {"batch": [...]}
//     POST /transaction/start, /transaction/ID/commit, /transaction/ID/rollback
//     GET  /metrics[?format=prometheus]             counters kept here (the WASM engine has none)
//
// The datamodel comes from PRISMA_DML (base64) or PRISMA_DML_PATH; the database URL from the
// datamodel's datasource (usually env("DATABASE_URL")) or OVERWRITE_DATASOURCES.

import fs from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';

import { SchemaIndex, ProtocolError, shapeResult, transactionError, translateQuery } from './protocol.mjs';

const ENGINE_COMMIT = '393aa359c9ad4a4bb28630fb5613f9c281cde053';
const require = createRequire(import.meta.url);

function fail(message) {
  process.stderr.write(`inferbook prisma engine: ${message}\n`);
  process.exit(1);
}

// ---------------------------------------------------------------------------------------------
// Command line

function parseArgs(argv) {
  if (argv.includes('--version') || argv.includes('-V')) return { version: true };
  const at = argv.findIndex((a) => a === '-p' || a === '--port');
  const port = at >= 0 ? Number(argv[at + 1]) : NaN;
  if (!Number.isInteger(port) || port <= 0 || port > 65535) {
    fail('usage: query-engine --version | query-engine -p PORT (datamodel in PRISMA_DML or PRISMA_DML_PATH)');
  }
  return { port };
}

// ---------------------------------------------------------------------------------------------
// Configuration: datamodel and database URL

function readDatamodel(env) {
  if (env.PRISMA_DML) return Buffer.from(env.PRISMA_DML, 'base64').toString('utf8');
  if (env.PRISMA_DML_PATH) return fs.readFileSync(env.PRISMA_DML_PATH, 'utf8');
  return fail('no datamodel: set PRISMA_DML (base64) or PRISMA_DML_PATH');
}

function databaseUrl(schemaWasm, datamodel, env) {
  const config = JSON.parse(
    schemaWasm.get_config(JSON.stringify({ prismaSchema: datamodel, datasourceOverrides: {}, ignoreEnvVarErrors: true, env: {} })),
  );
  const source = config.config?.datasources?.[0];
  if (!source) fail('the datamodel has no datasource block');
  if (source.provider !== 'postgresql' && source.provider !== 'postgres') {
    fail(`only PostgreSQL is supported, the datasource provider is ${source.provider}`);
  }
  if (env.OVERWRITE_DATASOURCES) {
    const overrides = JSON.parse(env.OVERWRITE_DATASOURCES);
    const chosen = overrides.find((o) => o.name === source.name) ?? overrides[0];
    if (chosen?.url) return chosen.url;
  }
  const url = source.url.value ?? env[source.url.fromEnvVar];
  if (!url) fail(`no database URL: set ${source.url.fromEnvVar} (named by the datamodel's datasource)`);
  return url;
}

// Prisma-only URL parameters. node-postgres would reject some of them or silently send them to the
// server as startup options, so they are removed; the few with a node-postgres meaning are mapped.
const PRISMA_ONLY_PARAMS = [
  'schema', 'connection_limit', 'pool_timeout', 'connect_timeout', 'socket_timeout', 'pgbouncer',
  'statement_cache_size', 'sslaccept', 'sslidentity', 'sslpassword', 'max_connection_lifetime',
  'max_idle_connection_lifetime',
];

function poolSettings(rawUrl) {
  const url = new URL(rawUrl);
  const param = (name) => url.searchParams.get(name);
  const settings = {
    schema: param('schema') ?? undefined,
    // The native engine's default pool size is 2 * CPUs + 1.
    max: Number(param('connection_limit') ?? os.availableParallelism() * 2 + 1),
    connectionTimeoutMillis: Number(param('connect_timeout') ?? 5) * 1000,
  };
  for (const name of PRISMA_ONLY_PARAMS) url.searchParams.delete(name);
  settings.connectionString = url.toString();
  return settings;
}

// ---------------------------------------------------------------------------------------------
// Engine: WASM query engine + pg driver adapter

async function loadEngineModule() {
  // The package's own entry point imports the .wasm file as an ES module, which Node 20 cannot do
  // without a flag; instantiate it by hand with the generated JS glue as its import object.
  const glue = await import('@prisma/query-engine-wasm/postgresql/query_engine_bg.js');
  const wasmFile = require.resolve('@prisma/query-engine-wasm/postgresql/query_engine_bg.wasm');
  const { instance } = await WebAssembly.instantiate(fs.readFileSync(wasmFile), { './query_engine_bg.js': glue });
  glue.__wbg_set_wasm(instance.exports);
  return glue;
}

function makePool(pg, settings) {
  // adapter-pg 5.17 refuses result columns of Postgres catalog types the native engine reads as
  // text: `name` and `"char"` (pg_views, pg_class... LiteLLM reads them at startup) and arrays of
  // them (ARRAY_AGG(viewname)). Parse and label such columns as their text equivalents.
  const AS_TEXT = { 18: 25, 19: 25, 1002: 1009, 1003: 1009 }; // "char", name, "char"[], name[] -> text, text[]
  const relabel = (result) => {
    for (const one of [].concat(result ?? [])) {
      for (const field of one?.fields ?? []) field.dataTypeID = AS_TEXT[field.dataTypeID] ?? field.dataTypeID;
    }
    return result;
  };
  class CatalogTypesAsTextClient extends pg.Client {
    query(config, values, callback) {
      if (typeof values === 'function') [values, callback] = [undefined, values];
      const parsers = config?.types?.getTypeParser;
      if (parsers) {
        config = { ...config, types: { getTypeParser: (oid, format) => parsers(AS_TEXT[oid] ?? oid, format) } };
      }
      if (typeof callback === 'function') return super.query(config, values, (err, res) => callback(err, err ? res : relabel(res)));
      const pending = super.query(config, values);
      return typeof pending?.then === 'function' ? pending.then(relabel) : pending;
    }
  }
  return new pg.Pool({
    Client: CatalogTypesAsTextClient,
    connectionString: settings.connectionString,
    max: settings.max,
    connectionTimeoutMillis: settings.connectionTimeoutMillis,
    // Like the native engine, resolve unqualified names (raw queries) in the URL's `schema`.
    options: settings.schema ? `-c search_path=${settings.schema}` : undefined,
  });
}

// ---------------------------------------------------------------------------------------------
// Metrics (the WASM engine answers "Metrics is not enabled in Wasm")

class Metrics {
  constructor(pool) {
    this.pool = pool;
    this.total = 0;
    this.active = 0;
    this.bucketsMs = [1, 5, 10, 50, 100, 500, 1000, 5000, 50000];
    this.counts = new Array(this.bucketsMs.length + 1).fill(0);
    this.sumMs = 0;
  }

  async time(work) {
    this.total += 1;
    this.active += 1;
    const start = performance.now();
    try {
      return await work();
    } finally {
      const ms = performance.now() - start;
      this.active -= 1;
      this.sumMs += ms;
      const at = this.bucketsMs.findIndex((limit) => ms <= limit);
      this.counts[at < 0 ? this.bucketsMs.length : at] += 1;
    }
  }

  // Same shape as Prisma's JSON metrics (prisma-client-py parses it into prisma.Metrics).
  json(labels) {
    const metric = (key, value, description) => ({ key, value, labels, description });
    const count = this.counts.reduce((a, b) => a + b, 0);
    const buckets = [...this.bucketsMs, Number.MAX_VALUE].map((limit, i) => [limit, this.counts[i]]);
    return {
      counters: [metric('prisma_client_queries_total', this.total, 'Total number of Prisma Client queries executed')],
      gauges: [
        metric('prisma_client_queries_active', this.active, 'Number of currently active Prisma Client queries'),
        metric('prisma_client_queries_wait', this.pool.waitingCount, 'Number of queries waiting for a connection'),
        metric('prisma_pool_connections_open', this.pool.totalCount, 'Number of currently open pool connections'),
        metric('prisma_pool_connections_idle', this.pool.idleCount, 'Number of pool connections that are not busy'),
        metric('prisma_pool_connections_busy', this.pool.totalCount - this.pool.idleCount, 'Number of busy pool connections'),
      ],
      histograms: [
        metric('prisma_client_queries_duration_histogram_ms', { sum: this.sumMs, count, buckets },
          'Histogram of the duration of all executed Prisma Client queries in ms'),
      ],
    };
  }

  prometheus(labels) {
    const data = this.json(labels);
    const render = (extra = {}) => {
      const all = { ...labels, ...extra };
      const text = Object.entries(all).map(([k, v]) => `${k}=${JSON.stringify(String(v))}`).join(',');
      return text ? `{${text}}` : '';
    };
    const lines = [];
    for (const [kind, list] of [['counter', data.counters], ['gauge', data.gauges]]) {
      for (const m of list) lines.push(`# HELP ${m.key} ${m.description}`, `# TYPE ${m.key} ${kind}`, `${m.key}${render()} ${m.value}`);
    }
    for (const m of data.histograms) {
      lines.push(`# HELP ${m.key} ${m.description}`, `# TYPE ${m.key} histogram`);
      let cumulative = 0;
      m.value.buckets.forEach(([limit, n], i) => {
        cumulative += n;
        const le = i === m.value.buckets.length - 1 ? '+Inf' : String(limit);
        lines.push(`${m.key}_bucket${render({ le })} ${cumulative}`);
      });
      lines.push(`${m.key}_sum${render()} ${m.value.sum}`, `${m.key}_count${render()} ${m.value.count}`);
    }
    return lines.join('\n') + '\n';
  }
}

// ---------------------------------------------------------------------------------------------
// HTTP

function send(res, status, body, type = 'application/json') {
  const text = typeof body === 'string' ? body : JSON.stringify(body);
  res.writeHead(status, { 'content-type': type, 'content-length': Buffer.byteLength(text) });
  res.end(text);
}

function errorAnswer(message) {
  // No error_code: prisma-client-py turns this into prisma.errors.DataError with the message.
  return { errors: [{ error: message, user_facing_error: { is_panic: false, message, meta: {} } }] };
}

function readBody(req) {
  return new Promise((resolve, reject) => {
    const chunks = [];
    req.on('data', (c) => chunks.push(c));
    req.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
    req.on('error', reject);
  });
}

function makeHandler(engine, schema, metrics) {
  const NO_TRACE = '{}';

  async function query(body, txId) {
    if (Array.isArray(body.batch)) {
      const items = body.batch.map((item) => translateQuery(item.query, schema));
      const request = { batch: items.map((t) => t.request), transaction: body.transaction ? {} : undefined };
      const answer = JSON.parse(await engine.query(JSON.stringify(request), NO_TRACE, txId));
      if (answer.errors) return { errors: answer.errors };
      return { batchResult: answer.batchResult.map((one, i) => shapeResult(one, items[i])) };
    }
    const translated = translateQuery(body.query, schema);
    const answer = JSON.parse(await engine.query(JSON.stringify(translated.request), NO_TRACE, txId));
    return shapeResult(answer, translated);
  }

  return async (req, res) => {
    const url = new URL(req.url, 'http://engine');
    const body = await readBody(req);
    try {
      if (req.method === 'GET' && url.pathname === '/status') return send(res, 200, { status: 'ok' });
      if (req.method === 'GET' && url.pathname === '/metrics') {
        const labels = body.trim() ? JSON.parse(body) : {};
        if (url.searchParams.get('format') === 'prometheus') return send(res, 200, metrics.prometheus(labels), 'text/plain');
        return send(res, 200, metrics.json(labels));
      }
      if (req.method !== 'POST') return send(res, 404, errorAnswer(`no route ${req.method} ${url.pathname}`));
      if (url.pathname === '/') {
        const txId = req.headers['x-transaction-id'] || undefined;
        return send(res, 200, await metrics.time(() => query(JSON.parse(body), txId)));
      }
      if (url.pathname === '/transaction/start') {
        const answer = JSON.parse(await engine.startTransaction(body || '{}', NO_TRACE));
        return send(res, 200, transactionError(answer) ?? { id: answer.id });
      }
      const match = /^\/transaction\/([^/]+)\/(commit|rollback)$/.exec(url.pathname);
      if (match) {
        const [, id, verb] = match;
        const raw = verb === 'commit' ? await engine.commitTransaction(id, NO_TRACE) : await engine.rollbackTransaction(id, NO_TRACE);
        return send(res, 200, transactionError(JSON.parse(raw)) ?? {});
      }
      return send(res, 404, errorAnswer(`no route ${req.method} ${url.pathname}`));
    } catch (error) {
      const message = error instanceof ProtocolError ? `could not translate the query: ${error.message}` : String(error?.message ?? error);
      return send(res, 200, errorAnswer(message));
    }
  };
}

// ---------------------------------------------------------------------------------------------

async function main() {
  const args = parseArgs(process.argv.slice(2));
  if (args.version) {
    process.stdout.write(`query-engine ${ENGINE_COMMIT}\n`);
    return;
  }
  // prisma-client-py stops the engine with SIGINT; also leave if our parent dies without doing so,
  // so an orphan does not keep database connections open.
  for (const signal of ['SIGINT', 'SIGTERM']) process.on(signal, () => process.exit(0));
  const parent = process.ppid;
  setInterval(() => process.ppid !== parent && process.exit(0), 1000).unref();

  const env = process.env;
  const schemaWasm = require('@prisma/prisma-schema-wasm');
  const pg = require('pg');
  const { PrismaPg } = require('@prisma/adapter-pg');
  const { bindAdapter } = require('@prisma/driver-adapter-utils');

  const datamodel = readDatamodel(env);
  const settings = poolSettings(databaseUrl(schemaWasm, datamodel, env));
  const schema = new SchemaIndex(JSON.parse(schemaWasm.get_dmmf(JSON.stringify({ prismaSchema: datamodel }))));
  const pool = makePool(pg, settings);
  try {
    await pool.query('SELECT 1'); // fail now, as the native engine does, rather than on the first query
  } catch (error) {
    fail(`cannot reach the database (${error.message})`);
  }

  const glue = await loadEngineModule();
  const logLevel = /info|debug|trace/.test(env.RUST_LOG ?? '') ? 'info' : 'error';
  const engine = new glue.QueryEngine(
    { datamodel, logLevel, logQueries: Boolean(env.LOG_QUERIES), env: {}, ignoreEnvVarErrors: true,
      datasourceOverrides: {}, configDir: path.dirname(fileURLToPath(import.meta.url)), engineProtocol: 'json' },
    (line) => process.stderr.write(`${line}\n`),
    bindAdapter(new PrismaPg(pool, { schema: settings.schema })),
  );
  await engine.connect('{}');

  const server = http.createServer(makeHandler(engine, schema, new Metrics(pool)));
  server.listen(args.port, '127.0.0.1');
}

main().catch((error) => fail(error?.stack ?? String(error)));
