// A reader on a phone, by taps: one step of the newsletter journey in Debian's headless
// chromium with touch and a 390 px screen. Links come from the emails runrate wrote as
// files into MAILDIR (its file transport), their origin swapped for BASE. Prints, as JSON,
// the heading of each page the step ended on.
//
//   node journey.js sign-up BASE MAILDIR ADDRESS   sign up, then confirm from the email
//   node journey.js forget BASE MAILDIR ADDRESS    from the update email, be forgotten

const fs = require("fs");
const path = require("path");
const { withChromium, run } = require("./chromium");

const [step, base, maildir, address] = process.argv.slice(2);

// The link of `kind` (confirm, unsubscribe) in the newest email to ADDRESS that has one,
// waiting for the outbox to write it.
async function linkFromEmail(kind) {
  const pattern = new RegExp(`https?://[^/\\s]+/${kind}\\?token=[A-Za-z0-9._~-]+`);
  for (let waited = 0; waited < 30000; waited += 100) {
    const files = fs.existsSync(maildir) ? fs.readdirSync(maildir) : [];
    for (const file of files.sort().reverse()) {
      const text = fs.readFileSync(path.join(maildir, file), "utf8");
      const match = text.includes(`To: ${address}`) && text.match(pattern);
      if (match) {
        const link = new URL(match[0]);
        return `${base}${link.pathname}${link.search}`;
      }
    }
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  throw new Error(`no email to ${address} with a ${kind} link in ${maildir}`);
}

async function heading(page) {
  return (await page.textContent("h1")).trim();
}

// Taps the button named `name` and waits for the page it leads to.
async function tapButton(page, name) {
  const button = page.getByRole("button", { name });
  await Promise.all([page.waitForNavigation(), button.tap()]);
}

async function signUp(page) {
  await page.goto(`${base}/`);
  await page.getByLabel("Email address").tap();
  await page.getByLabel("Email address").fill(address);
  await page.getByLabel("AWS").tap();
  await tapButton(page, "Subscribe");
  const signedUp = await heading(page);
  await page.goto(await linkFromEmail("confirm"));
  await tapButton(page, "Confirm my subscription");
  return { signedUp, confirmed: await heading(page) };
}

async function forget(page) {
  await page.goto(await linkFromEmail("unsubscribe"));
  await tapButton(page, "Unsubscribe and forget me");
  return { forgotten: await heading(page) };
}

// A phone: touch, 390 px wide.
const PHONE = { hasTouch: true, isMobile: true, viewport: { width: 390, height: 844 } };

run(() =>
  withChromium(async (browser) => {
    const steps = { "sign-up": signUp, forget };
    if (!steps[step]) throw new Error(`no step ${step}`);
    return steps[step](await browser.newPage());
  }, PHONE),
);
