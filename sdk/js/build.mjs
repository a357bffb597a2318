#!/usr/bin/env node
// Builds a JavaScript or TypeScript Kiln function into a component:
//   1. type-check (TypeScript entries; `--no-typecheck` skips it) and find
//      what the entry exports;
//   2. bundle the entry, its npm packages and @kiln/sdk into one module
//      (esbuild), with a source map so errors name the user's lines;
//   3. componentize-js against a world of the kiln:platform interfaces the
//      bundle imports, plus wasi:http's proxy world.
// An unchanged bundle reuses the previous component: step 3 takes seconds.
//
// Usage: node build.mjs <entry.{js,ts}> <output.wasm> [--no-typecheck] [--root DIR]
// (stacks name files relative to DIR, the app folder; default the entry's).
import { componentize } from '@bytecodealliance/componentize-js';
import * as esbuild from 'esbuild';
import ts from 'typescript';
import { createHash } from 'node:crypto';
import { cp, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { basename, dirname, extname, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const kilnWit = process.env.KILN_WIT_DIR ?? resolve(here, '../../wit');
const TS_EXTENSIONS = new Set(['.ts', '.mts', '.cts', '.tsx']);

class BuildError extends Error {}

/** Prints one progress line per step, with its time, on stderr. */
async function step(label, work) {
  const started = performance.now();
  const result = await work();
  const ms = performance.now() - started;
  const time = ms < 1000 ? `${Math.round(ms)} ms` : `${(ms / 1000).toFixed(1)} s`;
  process.stderr.write(`  ${label} (${time})\n`);
  return result;
}

function compilerOptions() {
  return {
    strict: true,
    noEmit: true,
    allowJs: true,
    checkJs: false,
    skipLibCheck: true,
    target: ts.ScriptTarget.ES2022,
    module: ts.ModuleKind.ESNext,
    moduleResolution: ts.ModuleResolutionKind.Bundler,
    lib: ['lib.es2022.d.ts', 'lib.dom.d.ts', 'lib.dom.iterable.d.ts'],
    types: [],
    paths: { '@kiln/sdk': [join(here, 'index.d.ts')] },
  };
}

/**
 * Type-checks a TypeScript entry (when asked) and reports what it exports:
 * whether its default export has `scheduled`, and any raw `scheduledHandler`.
 */
function analyse(entry, typecheck) {
  const program = ts.createProgram([entry], compilerOptions());
  if (typecheck) {
    const diagnostics = ts.getPreEmitDiagnostics(program);
    if (diagnostics.length > 0) {
      const text = ts.formatDiagnostics(diagnostics, {
        getCanonicalFileName: (f) => f,
        getCurrentDirectory: () => process.cwd(),
        getNewLine: () => '\n',
      });
      throw new BuildError(`${text}${diagnostics.length} type error(s); fix them, or build with --no-typecheck`);
    }
  }
  const checker = program.getTypeChecker();
  const source = program.getSourceFile(entry);
  const module = source && checker.getSymbolAtLocation(source);
  const exports = module ? checker.getExportsOfModule(module) : [];
  const named = (name) => exports.find((e) => e.escapedName === name);
  let scheduled = false;
  const def = named('default');
  if (def) {
    const type = checker.getTypeOfSymbolAtLocation(def, source);
    // An untyped default (`any`) may hold anything: export the handler, which reports a missing one at run time.
    scheduled = Boolean(type.getProperty('scheduled')) || (type.flags & ts.TypeFlags.Any) !== 0;
  }
  return { hasDefault: Boolean(def), scheduled, rawScheduled: Boolean(named('scheduledHandler')) };
}

/** The module componentize-js sees: the user's entry behind the SDK's adapters. */
function wrapper(entry, shape) {
  const user = JSON.stringify(entry);
  const sdkEntry = JSON.stringify(join(here, 'src/entry.js'));
  const lines = [`import * as user from ${user};`];
  if (shape.rawScheduled) {
    lines.push(`export { scheduledHandler } from ${user};`);
  } else if (shape.scheduled) {
    lines.push(`import { scheduledExport } from ${sdkEntry};`, 'export const scheduledHandler = scheduledExport(user.default);');
  }
  if (shape.hasDefault) {
    lines.push(
      `import { serveFetch } from ${sdkEntry};`,
      "if (typeof user.default?.fetch === 'function' || typeof user.default?.fileRule === 'function') serveFetch(user.default);",
    );
  }
  return lines.join('\n');
}

async function bundle(entry, shape, root) {
  const result = await esbuild.build({
    stdin: { contents: wrapper(entry, shape), resolveDir: dirname(entry), sourcefile: 'kiln-entry.js', loader: 'js' },
    bundle: true,
    write: false,
    format: 'esm',
    platform: 'browser',
    target: 'es2022',
    outfile: 'function.js',
    sourcemap: 'external',
    sourceRoot: '',
    external: ['kiln:platform/*'],
    alias: { '@kiln/sdk': here },
    metafile: true,
    logLevel: 'silent',
  }).catch((err) => {
    const messages = err.errors?.map((e) => `${e.location ? `${e.location.file}:${e.location.line}: ` : ''}${e.text}`);
    throw new BuildError(messages?.join('\n') ?? String(err));
  });
  const code = result.outputFiles.find((f) => f.path.endsWith('.js')).text;
  const map = JSON.parse(result.outputFiles.find((f) => f.path.endsWith('.map')).text);
  // Source paths as a user reads them: relative to the app folder, the SDK's by package name.
  map.sources = map.sources.map((s) => {
    const path = resolve(process.cwd(), s);
    const inSdk = relative(here, path);
    return inSdk.startsWith('..') ? relative(root, path) : `@kiln/sdk/${inSdk}`;
  });
  delete map.sourcesContent;
  const imports = new Set();
  for (const output of Object.values(result.metafile.outputs)) {
    for (const i of output.imports) {
      const m = /^kiln:platform\/([a-z-]+)@[0-9.]+$/.exec(i.path);
      if (m) imports.add(m[1]);
    }
  }
  // Appended after the bundle's last line, so no mapped position moves.
  const withMap = `${code}\nglobalThis[Symbol.for('kiln.sourceMap')] = ${JSON.stringify(JSON.stringify(map))};\n`;
  return { code: withMap, imports: [...imports].sort() };
}

function world(imports, scheduled) {
  const lines = imports.map((name) => `    import ${name};`);
  if (scheduled) lines.push('    export scheduled-handler;');
  lines.push('    include wasi:http/proxy@0.2.10;');
  return `package kiln:platform@0.1.0;\n\nworld js-function {\n${lines.join('\n')}\n}\n`;
}

async function main(args) {
  const typecheck = !args.includes('--no-typecheck');
  const rootAt = args.indexOf('--root');
  const rootArg = rootAt >= 0 ? args.splice(rootAt, 2)[1] : undefined;
  const [source, output] = args.filter((a) => !a.startsWith('--'));
  if (!source || !output) {
    console.error('usage: node build.mjs <entry.{js,ts}> <output.wasm> [--no-typecheck] [--root DIR]');
    return 2;
  }
  const entry = resolve(source);
  const root = resolve(rootArg ?? dirname(entry));
  const isTs = TS_EXTENSIONS.has(extname(entry));
  const shape = await step(isTs && typecheck ? 'type-checked' : 'analysed', () => analyse(entry, isTs && typecheck));
  const scheduled = shape.scheduled || shape.rawScheduled;
  const { code, imports } = await step('bundled', () => bundle(entry, shape, root));
  const witWorld = world(imports, scheduled);
  const pkg = JSON.parse(await readFile(join(here, 'node_modules/@bytecodealliance/componentize-js/package.json'), 'utf8'));
  const hash = createHash('sha256').update(pkg.version).update(witWorld).update(code);
  for (const file of ['worlds.wit', ...imports.map((i) => `${i}.wit`)]) {
    hash.update(await readFile(join(kilnWit, file)).catch(() => ''));
  }
  const digest = hash.digest('hex');
  const stamp = `${output}.inputs`;
  if ((await readFile(stamp, 'utf8').catch(() => '')) === digest) {
    process.stderr.write('  unchanged since the last build\n');
    return 0;
  }
  const work = await mkdtemp(join(tmpdir(), 'kiln-js-'));
  try {
    await cp(kilnWit, join(work, 'wit'), { recursive: true });
    await writeFile(join(work, 'wit', 'js-function.wit'), witWorld);
    const bundlePath = join(work, `${basename(entry, extname(entry))}.js`);
    await writeFile(bundlePath, code);
    process.stderr.write('  componentize-js: compiling the bundle with StarlingMonkey (about 10 s)\n');
    const { component } = await step('componentized', () =>
      componentize({ sourcePath: bundlePath, witPath: join(work, 'wit'), worldName: 'js-function' }),
    );
    await writeFile(output, component);
    await writeFile(stamp, digest);
  } finally {
    await rm(work, { recursive: true, force: true });
  }
  return 0;
}

try {
  process.exitCode = await main(process.argv.slice(2));
} catch (err) {
  console.error(err instanceof BuildError ? err.message : `componentize-js: ${err.message ?? err}`);
  process.exitCode = 1;
}
