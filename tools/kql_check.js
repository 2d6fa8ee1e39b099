#!/usr/bin/env node
// Parse and analyse KQL with Microsoft's Kusto language service (@kusto/language-service-next)
// and report every diagnostic as JSON.
//
//   node tools/kql_check.js [--schema FILE] [--stdin] [--describe] [FILE.kql ...]
//
// Inputs: each FILE.kql is one query. With --stdin, also reads JSON from standard input:
// either [{"name": "...", "query": "..."}, ...] or {"<name>": "<query>", ...}.
// Every query is analysed against the tables in the schema file (default: kql_schema.json next
// to this script), so an unknown table, column or function is a diagnostic, not only a syntax
// error. The language service's analyzer diagnostics (its lint rules) count too.
//
// With --describe, each result also carries what the analyzer knows about the query's shape:
//   columns       the result columns [{name, type}] (the alert rules' dimensions and measure
//                 columns must be among them);
//   last          the last operator of the outermost pipeline: {kind, byClause, aggregates}
//                 (a summarize with no by clause returns exactly one row, even on no input);
//   datatables    every datatable literal: {text, rows} (rows 0: an always-empty leg);
//   fuzzyMissing  table names a fuzzy union could not resolve (KS205; the leg is dropped at run
//                 time instead of failing the query).
// --describe is for inspection: warnings still count as diagnostics (and fail "ok").
//
// Output (stdout): {"ok": bool, "checked": N, "results": [{"name", "diagnostics": [...]}]}
// Exit status: 0 no diagnostics, 1 at least one diagnostic, 2 usage or loading error.
'use strict';

const fs = require('fs');
const path = require('path');

function fail(message) {
  process.stdout.write(JSON.stringify({ ok: false, error: message }) + '\n');
  process.exit(2);
}

function loadKusto() {
  // The package is a Bridge.NET build: bridge.js defines the global `Bridge` runtime, then
  // Kusto.Language.Bridge.js registers the global `Kusto` namespace. Neither exports anything.
  let dir;
  try {
    dir = path.dirname(require.resolve('@kusto/language-service-next/package.json'));
  } catch (e) {
    fail('@kusto/language-service-next is not installed: run `make test` (or `npm ci`) first');
  }
  require(path.join(dir, 'bridge.js'));
  require(path.join(dir, 'Kusto.Language.Bridge.js'));
  if (typeof globalThis.Kusto === 'undefined' || !globalThis.Kusto.Language) {
    fail('loading @kusto/language-service-next did not define the Kusto namespace');
  }
  return globalThis.Kusto.Language;
}

function buildGlobals(K, schemaFile) {
  const schema = JSON.parse(fs.readFileSync(schemaFile, 'utf8'));
  const tables = Object.entries(schema.tables || {}).map(([tableName, columns]) => {
    const spec = Object.entries(columns).map(([col, type]) => `${col}:${type}`).join(', ');
    return new K.Symbols.TableSymbol.$ctor7(tableName, `(${spec})`, null);
  });
  if (tables.length === 0) fail(`no tables in ${schemaFile}`);
  const database = new K.Symbols.DatabaseSymbol.ctor(schema.database || 'db', tables);
  return K.GlobalState.Default.WithDatabase(database);
}

function toArray(list) {
  const out = [];
  if (!list) return out;
  for (let i = 0; i < list.Count; i++) out.push(list.getItem(i));
  return out;
}

function lineAndColumn(text, offset) {
  const before = text.slice(0, offset).split('\n');
  return { line: before.length, column: before[before.length - 1].length + 1 };
}

function minimal(K, node) {
  return node ? node.ToString(K.Syntax.IncludeTrivia.Minimal) : null;
}

function describe(K, code, diagnostics) {
  const columns = [];
  const result = code.ResultType;
  if (result && result.Columns) {
    for (const c of toArray(result.Columns)) columns.push({ name: c.Name, type: c.Type ? c.Type.Name : null });
  }
  const pipes = [];
  const datatables = [];
  code.Syntax.WalkElements(function (e) {
    if (e instanceof K.Syntax.PipeExpression) pipes.push(e);
    if (e instanceof K.Syntax.DataTableExpression) datatables.push({ text: minimal(K, e), rows: e.Values.Count });
  });
  let last = null;
  if (pipes.length) {
    const outer = pipes.reduce((a, b) => (b.End - b.TextStart > a.End - a.TextStart ? b : a));
    const op = outer.Operator;
    const kind = String(op.constructor.$$name || '').split('.').pop();
    last = { kind, text: minimal(K, op) };
    if (op instanceof K.Syntax.SummarizeOperator) {
      last.byClause = minimal(K, op.ByClause);
      last.aggregates = [];
      for (let i = 0; i < op.Aggregates.Count; i++) last.aggregates.push(minimal(K, op.Aggregates.getItem(i).Element$1));
    }
  }
  const fuzzyMissing = diagnostics
    .filter((d) => d.code === 'KS205')
    .map((d) => d.excerpt);
  return { columns, last, datatables, fuzzyMissing };
}

function check(K, globals, name, text, withDescription) {
  const code = K.KustoCode.ParseAndAnalyze(text, globals);
  const diagnostics = toArray(code.GetDiagnostics());
  const service = new K.Editor.KustoCodeService.ctor(code);
  const analyzer = toArray(service.GetAnalyzerDiagnostics(true));
  const all = diagnostics.concat(analyzer).map((d) => {
    const where = d.HasLocation ? lineAndColumn(text, d.Start) : { line: null, column: null };
    return {
      severity: d.Severity,
      code: d.Code,
      category: d.Category,
      message: d.Message,
      start: d.HasLocation ? d.Start : null,
      length: d.HasLocation ? d.Length : null,
      line: where.line,
      column: where.column,
      excerpt: d.HasLocation ? text.substr(d.Start, Math.max(d.Length, 1)) : null,
    };
  });
  const out = { name, diagnostics: all };
  if (withDescription) Object.assign(out, describe(K, code, all));
  return out;
}

function readStdinQueries() {
  const raw = fs.readFileSync(0, 'utf8');
  let data;
  try {
    data = JSON.parse(raw);
  } catch (e) {
    fail(`standard input is not JSON: ${e.message}`);
  }
  if (Array.isArray(data)) {
    return data.map((item, i) => {
      if (!item || typeof item.query !== 'string') fail(`stdin item ${i} has no string "query"`);
      return { name: String(item.name || `stdin[${i}]`), text: item.query };
    });
  }
  if (data && typeof data === 'object') {
    return Object.entries(data).map(([name, query]) => {
      if (typeof query !== 'string') fail(`stdin entry ${name} is not a string`);
      return { name, text: query };
    });
  }
  fail('standard input must be a JSON array or object');
  return [];
}

function main(argv) {
  let schemaFile = path.join(__dirname, 'kql_schema.json');
  let useStdin = false;
  let withDescription = false;
  const files = [];
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    if (arg === '--schema') {
      schemaFile = argv[++i];
      if (!schemaFile) fail('--schema needs a file');
    } else if (arg === '--describe') {
      withDescription = true;
    } else if (arg === '--stdin' || arg === '-') {
      useStdin = true;
    } else if (arg === '--help' || arg === '-h') {
      process.stdout.write('usage: kql_check.js [--schema FILE] [--stdin] [--describe] [FILE.kql ...]\n');
      process.exit(0);
    } else {
      files.push(arg);
    }
  }
  const inputs = files.map((file) => {
    let text;
    try {
      text = fs.readFileSync(file, 'utf8');
    } catch (e) {
      fail(`cannot read ${file}: ${e.message}`);
    }
    return { name: file, text };
  });
  if (useStdin) inputs.push(...readStdinQueries());
  if (inputs.length === 0) fail('no queries given (pass .kql files and/or --stdin)');

  const K = loadKusto();
  const globals = buildGlobals(K, schemaFile);
  const results = inputs.map((q) => {
    if (!q.text.trim()) return { name: q.name, diagnostics: [{ severity: 'Error', code: 'EMPTY', message: 'empty query' }] };
    return check(K, globals, q.name, q.text, withDescription);
  });
  const ok = results.every((r) => r.diagnostics.length === 0);
  process.stdout.write(JSON.stringify({ ok, checked: results.length, results }, null, 2) + '\n');
  process.exit(ok ? 0 : 1);
}

main(process.argv.slice(2));
