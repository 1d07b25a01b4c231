// Logging in to the console as a person does: chromium opens /ui/ with the user's credentials
// given to the browser, which it sends only in answer to a challenge it understands (Basic; it
// cannot answer Bearer). Prints one JSON report: the page's status, the shell's session line,
// and every console error and page error.
// Usage: node console_login.mjs '{"url": URL, "username": U, "password": P, "out": DIR}'
import { join } from "node:path";
import { collectErrors, launch, openPage } from "./console_browser.mjs";

const { url, username, password, out } = JSON.parse(process.argv[2]);
const browser = await launch();
const report = { errors: [] };
const page = await openPage(browser, { username, password, height: 700 });
collectErrors(page, report.errors);

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
