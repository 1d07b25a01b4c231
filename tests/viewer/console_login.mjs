// Logging in to the console as a person does: chromium opens /ui/ with the user's credentials
// given to the browser, which it sends only in answer to a challenge it understands (Basic; it
// cannot answer Bearer). Prints one JSON report: the page's status, the shell's session line,
// and every console error and page error.
// Usage: node console_login.mjs '{"url": URL, "username": U, "password": P, "out": DIR}'
import { chromium } from "playwright-core";
import { join } from "node:path";

const { url, username, password, out } = JSON.parse(process.argv[2]);
const browser = await chromium.launch({
  executablePath: "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync"],
});
const report = { errors: [] };
const context = await browser.newContext({
  viewport: { width: 1280, height: 700 },
  httpCredentials: { username, password },
});
const page = await context.newPage();
page.on("console", (message) => {
  if (message.type() === "error") report.errors.push(message.text());
});
page.on("pageerror", (error) => report.errors.push(`pageerror: ${error.message}`));

try {
  const answer = await page.goto(url);
  report.status = answer.status();
  await page.waitForFunction(() => document.getElementById("session")?.textContent, null,
    { timeout: 20000 });
  report.session = await page.textContent("#session");
  await page.screenshot({ path: join(out, "console-login.png") });
} catch (error) {
  report.failure = String(error);
  await page.screenshot({ path: join(out, "console-login-failure.png") });
} finally {
  await browser.close();
}
console.log(JSON.stringify(report));
