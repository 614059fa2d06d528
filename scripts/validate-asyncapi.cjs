// Validates an AsyncAPI document with the AsyncAPI initiative's own parser (npm's @asyncapi/parser,
// installed pinned by `scripts/install-deps --test-tools`; run with NODE_PATH at its node_modules).
// Usage: node scripts/validate-asyncapi.cjs FILE. Prints every diagnostic; exits 1 on any error.
const fs = require("fs");
const { Parser } = require("@asyncapi/parser");

async function main() {
  const text = fs.readFileSync(process.argv[2], "utf8");
  const { document, diagnostics } = await new Parser().parse(text);
  const severities = ["error", "warning", "info", "hint"];
  for (const d of diagnostics) {
    console.log(`${severities[d.severity] ?? d.severity} ${d.code} at ${d.path.join(".")}: ${d.message}`);
  }
  const errors = diagnostics.filter((d) => d.severity === 0);
  if (!document || errors.length > 0) {
    console.log(`invalid: ${errors.length} error(s)`);
    process.exit(1);
  }
  const messages = document.allMessages().length;
  const channels = document.allChannels().length;
  console.log(`valid: AsyncAPI ${document.version()}, ${channels} channels, ${messages} messages`);
}

main().catch((e) => {
  console.error(e);
  process.exit(2);
});
