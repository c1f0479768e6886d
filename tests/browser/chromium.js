// Debian's headless chromium (CHROMIUM, /usr/bin/chromium by default: never a downloaded
// one) on a fresh profile, driven by playwright-core from RUNRATE_NODE_MODULES. Runs
// `use(context)`, then closes the browser and removes the profile. `options` go to
// playwright's launchPersistentContext (a phone's touch and screen, say).

const fs = require("fs");
const os = require("os");
const path = require("path");
const { chromium } = require(path.join(process.env.RUNRATE_NODE_MODULES, "playwright-core"));

async function withChromium(use, options = {}) {
  const profile = fs.mkdtempSync(path.join(os.tmpdir(), "runrate-chromium-"));
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    headless: true,
    args: [
      "--headless",
      "--no-sandbox",
      "--disable-gpu",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
    ],
    ...options,
  });
  try {
    return await use(context);
  } finally {
    await context.close();
    fs.rmSync(profile, { recursive: true, force: true });
  }
}

// Runs `main`, printing what it returns as JSON; a failure exits 1 with its stack.
function run(main) {
  main()
    .then((result) => process.stdout.write(JSON.stringify(result)))
    .catch((error) => {
      process.stderr.write(`${error.stack || error}\n`);
      process.exit(1);
    });
}

module.exports = { withChromium, run };
