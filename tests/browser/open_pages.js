// Opens each URL in its own page of Debian's headless chromium and prints, as one JSON
// array, what each page left in `window.result` once it set it (or a timeout).
//
//   node open_pages.js URL...
//
// playwright-core comes from RUNRATE_NODE_MODULES (the tests install it there); the
// browser is CHROMIUM, /usr/bin/chromium by default: never a downloaded one.

const fs = require("fs");
const os = require("os");
const path = require("path");
const { chromium } = require(path.join(process.env.RUNRATE_NODE_MODULES, "playwright-core"));

async function main() {
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
  });
  const results = [];
  try {
    for (const url of process.argv.slice(2)) {
      const page = await context.newPage();
      const console = [];
      page.on("console", (message) => console.push(message.text()));
      await page.goto(url);
      try {
        await page.waitForFunction(() => window.result !== undefined, null, { timeout: 15000 });
        results.push({ url, result: await page.evaluate(() => window.result), console });
      } catch (error) {
        results.push({ url, result: null, error: String(error), console });
      }
      await page.close();
    }
  } finally {
    await context.close();
    fs.rmSync(profile, { recursive: true, force: true });
  }
  process.stdout.write(JSON.stringify(results));
}

main().catch((error) => {
  process.stderr.write(`${error.stack || error}\n`);
  process.exit(1);
});
