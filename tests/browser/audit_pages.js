// Audits each URL in Debian's headless chromium at a desktop and a phone width: axe-core's
// WCAG 2.2 A/AA rules and best practices, whether the page is wider than the window
// (sideways scrolling), and the touch targets under 24 px. Writes a full-page screenshot
// of each into SCREENSHOTS (a directory) and prints one JSON array of findings.
//
//   node audit_pages.js URL...
//
// axe-core comes from RUNRATE_NODE_MODULES; the browser as chromium.js launches it.

const fs = require("fs");
const path = require("path");
const { withChromium, run } = require("./chromium");

const axeSource = fs.readFileSync(
  path.join(process.env.RUNRATE_NODE_MODULES, "axe-core", "axe.min.js"),
  "utf8",
);

const VIEWPORTS = [
  { name: "desktop", width: 1280, height: 900 },
  { name: "phone", width: 390, height: 844 },
];
const RULES = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa", "wcag22aa", "best-practice"];
// Rules left out, comma-separated in AXE_DISABLED (for emails: the page landmarks, which
// belong to the mail client's page around the message).
const DISABLED = (process.env.AXE_DISABLED || "").split(",").filter(Boolean);

async function audit(browser) {
  const screenshots = process.env.SCREENSHOTS;
  const findings = [];
  for (const [index, url] of process.argv.slice(2).entries()) {
    for (const viewport of VIEWPORTS) {
      const page = await browser.newPage();
      // What the page's content security policy refused: the pages must need nothing
      // it forbids.
      const refused = [];
      page.on("console", (message) => {
        if (message.type() === "error" && /Content Security Policy/i.test(message.text())) {
          refused.push(message.text());
        }
      });
      await page.setViewportSize({ width: viewport.width, height: viewport.height });
      const response = await page.goto(url);
      // Evaluated through the DevTools protocol: a script tag would be refused by the
      // policy, which allows no scripts.
      await page.evaluate(axeSource);
      const violations = await page.evaluate(async ([tags, disabled]) => {
        const rules = Object.fromEntries(disabled.map((id) => [id, { enabled: false }]));
        const result = await window.axe.run(document, { runOnly: { type: "tag", values: tags }, rules });
        return result.violations.map((v) => ({
          id: v.id,
          impact: v.impact,
          help: v.help,
          targets: v.nodes.slice(0, 5).map((node) => node.target.join(" ")),
        }));
      }, [RULES, DISABLED]);
      const layout = await page.evaluate(() => {
        // A link inside a sentence is exempt (WCAG 2.5.8, inline targets).
        const inline = (element) =>
          element.tagName === "A" && element.closest("p, li") !== null && element.closest("nav") === null;
        const targets = [...document.querySelectorAll("a, button, input, select, textarea")]
          .filter((element) => element.offsetParent !== null && element.type !== "hidden")
          .filter((element) => !inline(element))
          .map((element) => {
            const box = element.getBoundingClientRect();
            return { what: element.outerHTML.slice(0, 80), width: box.width, height: box.height };
          });
        return {
          scrollWidth: document.documentElement.scrollWidth,
          innerWidth: window.innerWidth,
          smallTargets: targets.filter((t) => t.width < 24 || t.height < 24),
        };
      });
      if (screenshots) {
        // A page by its path, a file (an email's HTML) by its name.
        const { protocol, pathname } = new URL(url);
        const where = protocol === "file:" ? path.basename(pathname, ".html") : pathname;
        const slug = where.replace(/[^a-z0-9]+/gi, "-").replace(/^-|-$/g, "") || "home";
        const name = `${String(index + 1).padStart(2, "0")}-${slug}-${viewport.name}.png`;
        await page.screenshot({ path: path.join(screenshots, name), fullPage: true });
      }
      // A file has no HTTP status.
      const status = response ? response.status() : null;
      findings.push({ url, viewport: viewport.name, status, violations, refused, ...layout });
      await page.close();
    }
  }
  return findings;
}

run(() => withChromium(audit));
