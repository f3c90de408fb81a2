// Validate glTF files with the Khronos glTF validator (npm gltf-validator).
// Usage: node validate.js FILE.glb [...]   Prints one JSON line per file:
//   {"file", "errors", "warnings", "infos", "messages": [first error/warning messages]}
// Exit code 0 when every file has no errors, 1 otherwise, 2 on a usage error.
"use strict";
const fs = require("fs");
const path = require("path");
const validator = require("gltf-validator");

async function check(file) {
  const bytes = new Uint8Array(fs.readFileSync(file));
  const report = await validator.validateBytes(bytes, {
    uri: path.basename(file),
    maxIssues: 100,
    externalResourceFunction: (uri) =>
      Promise.resolve(new Uint8Array(fs.readFileSync(path.join(path.dirname(file), decodeURIComponent(uri))))),
  });
  const issues = report.issues;
  const messages = issues.messages
    .filter((m) => m.severity <= 1)
    .slice(0, 10)
    .map((m) => `${m.severity === 0 ? "error" : "warning"} ${m.code} ${m.pointer || ""}: ${m.message}`);
  return { file, errors: issues.numErrors, warnings: issues.numWarnings, infos: issues.numInfos, messages };
}

async function main() {
  const files = process.argv.slice(2);
  if (files.length === 0) {
    console.error("usage: node validate.js FILE.glb [...]");
    process.exit(2);
  }
  let failed = false;
  for (const file of files) {
    const r = await check(file);
    console.log(JSON.stringify(r));
    if (r.errors > 0) failed = true;
  }
  process.exit(failed ? 1 : 0);
}

main().catch((e) => {
  console.error(`error: ${e.message || e}`);
  process.exit(2);
});
