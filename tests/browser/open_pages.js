// Opens each URL in its own page of Debian's headless chromium and prints, as one JSON
// array, what each page left in `window.result` once it set it (or a timeout).
//
//   node open_pages.js URL...
//
// The browser as chromium.js launches it.

const { withChromium, run } = require("./chromium");

run(() =>
  withChromium(async (context) => {
    const results = [];
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
    return results;
  }),
);
