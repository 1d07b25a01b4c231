// What an integration engineer does in the node's console, in Debian's chromium: search a study
// by patient ID with the keyboard, open its timeline, press "retry" on a delivery that failed and
// watch its state change, run the study's job again (its attempts both in the timeline), then
// open the running work. axe-core checks each page; screenshots and
// the page's text are reported, with every console error, page error and HTTP error answer.
// Last, a read-only user's view of the same study: no action buttons.
// Usage: node console_studies.mjs '{"url": ".../ui/", "user": U, "password": P,
//   "reader": U, "readerPassword": P, "patientId": ID, "hostile": [TEXT...], "out": DIR}'
// A study whose attributes are markup must be shown as that text (``hostile``), never parsed.
import { join } from "node:path";
import { axeViolations, collectErrors, isSerious, launch, openPage } from "./console_browser.mjs";

const { url, user, password, reader, readerPassword, patientId, hostile, out,
  timeoutMs = 30000 } = JSON.parse(process.argv[2]);

const browser = await launch();
const page = await openPage(browser, { username: user, password, width: 1400, height: 1000 });
page.setDefaultTimeout(timeoutMs);
const errors = [];
// A failed load is reported by its answer below, with its address (the browser's own favicon
// request, which the console does not serve, left out).
collectErrors(page, errors, { skipFailedLoads: true });
page.on("response", (response) => {
  if (response.status() >= 400 && !response.url().endsWith("/favicon.ico")) {
    errors.push(`HTTP ${response.status()}: ${response.url()}`);
  }
});

/** axe-core's serious and critical violations of the page as shown now. */
async function axe(name) {
  const found = await axeViolations(page);
  report.axe[name] = found.filter(isSerious);
  report.axeMinor[name] = found.filter((v) => !isSerious(v));
}

async function shot(name) {
  await page.screenshot({ path: join(out, `${name}.png`), fullPage: true });
}

const report = { errors, axe: {}, axeMinor: {} };
// A step that times out says why with what the page reported (a script error, a refusal).
process.on("uncaughtException", (error) => {
  console.error(`${error.message}\npage errors: ${JSON.stringify(errors)}`);
  process.exit(1);
});

// The search, by keyboard: the field found by its label, Enter submits.
await page.goto(`${url}#/studies`);
await page.getByRole("heading", { name: "Studies" }).waitFor();
await page.getByRole("table").waitFor(); // every study, before any search
await axe("search");
const listed = await page.locator("#study-results").innerText();
report.hostile = {
  ran: await page.evaluate(() => window.pwned === 1),
  elements: await page.locator("main :is(img, b, i)").count(),
  shown: hostile.every((text) => listed.includes(text)),
};
await shot("0-studies");
const field = page.getByLabel("Patient ID");
await field.focus();
await page.keyboard.type(patientId);
await page.keyboard.press("Enter");
await page.waitForFunction(
  () => document.querySelectorAll("#study-results tbody tr").length === 1,
);
report.found = await page.locator("#study-results tbody tr").first().innerText();
await shot("1-search");

// The study, opened from its link with the keyboard.
await page.locator("#study-results tbody a").first().focus();
await page.keyboard.press("Enter");
await page.getByRole("heading", { name: "Timeline" }).waitFor();
await axe("study");
report.timeline = await page.getByRole("list", { name: "Timeline" }).innerText();
await shot("2-timeline");

// Retry the first delivery not through (the test started its peer meanwhile), by keyboard.
const button = page.getByRole("button", { name: /^Retry delivery \d+ now$/ }).first();
const name = await button.innerText();
const row = page.getByRole("row").filter({ has: page.getByRole("button", { name }) });
report.before = await row.innerText();
await button.focus();
await page.keyboard.press("Enter");
await page.getByRole("status").filter({ hasText: "done" }).waitFor();
report.after = await row.innerText();
report.status = await page.getByRole("status").innerText();
await shot("3-retried");

// Run the job again, by keyboard: the timeline keeps the first attempt's times beside the second's.
await page.getByRole("button", { name: /^Run job \d+ again$/ }).first().focus();
await page.keyboard.press("Enter");
await page.getByRole("status").filter({ hasText: /^job \d+: due now; done/ }).waitFor();
report.rerun = await page.getByRole("list", { name: "Timeline" }).innerText();
await shot("3-rerun");

// The running work.
await page.getByRole("link", { name: "Running work" }).click();
await page.locator("#health").waitFor();
await axe("work");
report.work = await page.locator("main").innerText();
await shot("4-work");

// A read-only user sees the study without a button to press.
const other = await openPage(browser, { username: reader, password: readerPassword, width: 1400, height: 1000 });
const studyUrl = page.url().replace("#/work", "");
await other.goto(`${studyUrl}#/studies`);
await other.locator("#study-results tbody a").first().click();
await other.getByRole("heading", { name: "Timeline" }).waitFor();
report.readerSession = await other.locator("#session").innerText();
report.readerButtons = await other.getByRole("button").count();
await other.screenshot({ path: join(out, "5-read-only.png"), fullPage: true });

await browser.close();
console.log(JSON.stringify(report));
