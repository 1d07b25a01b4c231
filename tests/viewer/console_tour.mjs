// A read-only user's tour of every console page, in Debian's chromium, as the node is reached
// through a proxy that serves it under a path prefix: each page with its data loaded, then
// axe-core's violations (all impacts), the enabled buttons and file inputs (a reader must have no
// changing control), the controls the Tab key reaches against every focusable control, and a
// screenshot; last, changing requests forced from the page (each must be refused, 403).
// Usage: node console_tour.mjs '{"url": ".../prefix/ui/", "user": U, "password": P, "study": UID,
//   "job": ID, "delivery": ID, "out": DIR}'
import { join } from "node:path";
import { axeViolations, collectErrors, launch, openPage } from "./console_browser.mjs";

const { url, user, password, study, job, out, timeoutMs = 30000 } = JSON.parse(process.argv[2]);

const browser = await launch();
const page = await openPage(browser, { username: user, password, width: 1400, height: 1000 });
page.setDefaultTimeout(timeoutMs);
const errors = [];
const requested = [];
collectErrors(page, errors, { skipFailedLoads: true });
page.on("request", (request) => requested.push(request.url()));
page.on("response", (response) => {
  if (response.status() >= 400 && !response.url().endsWith("/favicon.ico")) {
    errors.push(`HTTP ${response.status()}: ${response.url()}`);
  }
});

// Each page, and what shows that its data has loaded.
const PAGES = [
  ["studies", "#/studies", `a[href="#/studies/${study}"]`],
  ["study", `#/studies/${study}`, ".timeline li"],
  ["work", "#/work", "#work-body > *"],
  ["config", "#/config", "section[aria-labelledby=\"config-settings\"] details"],
  ["predict", "#/predict", "#predict-models option"],
];

/** What a keyboard user reaches: Tab pressed until the focus leaves the page or comes back
 * round (a date input takes several presses, one per part of the date). */
async function tabbed() {
  await page.evaluate(() => document.activeElement?.blur());
  await page.locator("body").click({ position: { x: 2, y: 2 } });
  const reached = [];
  for (let i = 0; i < 400; i += 1) {
    await page.keyboard.press("Tab");
    const at = await page.evaluate(() => {
      const node = document.activeElement;
      if (!node || node === document.body) return null;
      node.dataset.tourKey ||= `k${Math.random().toString(36).slice(2)}`;
      return node.dataset.tourKey;
    });
    if (at === null || at === reached[0]) break;
    if (!reached.includes(at)) reached.push(at);
  }
  return page.evaluate((reached) => {
    const describe = (node) => `${node.tagName.toLowerCase()}${node.id ? `#${node.id}` : ""} ${(node.getAttribute("aria-label") || node.textContent || node.name || "").trim().slice(0, 40)}`;
    const focusable = [...document.querySelectorAll("a[href], button, input, select, textarea, summary, [tabindex]")]
      .filter((node) => !node.disabled && node.tabIndex >= 0 && node.getClientRects().length > 0
        && getComputedStyle(node).visibility !== "hidden" && !node.closest("fieldset[disabled]"));
    const keys = new Set(reached);
    return { reached: reached.length, focusable: focusable.length,
      missed: focusable.filter((node) => !keys.has(node.dataset.tourKey)).map(describe) };
  }, reached);
}

const report = { errors, pages: {}, outside: [] };
for (const [name, hash, loaded] of PAGES) {
  await page.goto(`${url}${hash}`);
  await page.locator(loaded).first().waitFor({ state: "attached" });
  await page.waitForLoadState("networkidle");
  const violations = await axeViolations(page);
  const enabled = await page.evaluate(() => ({
    buttons: [...document.querySelectorAll("button")].filter((b) => !b.disabled && !b.closest("fieldset[disabled]")).map((b) => b.textContent.trim()),
    files: [...document.querySelectorAll('input[type="file"]')].filter((i) => !i.disabled).length,
  }));
  const shot = join(out, `${name}.png`);
  await page.screenshot({ path: shot, fullPage: true });
  report.pages[name] = { violations, enabled, keyboard: await tabbed(), screenshot: shot,
    text: (await page.locator("main").innerText()).slice(0, 2000) };
}
// The reader forces what the pages do not offer: the API refuses each with 403.
report.errorsBeforeForcing = [...errors];
report.forced = await page.evaluate(async ({ study, job }) => {
  const headers = { "X-Requested-By": "dicom-node-console", "Content-Type": "application/json" };
  const post = async (path, body) => (await fetch(path, { method: "POST", headers, body: JSON.stringify(body ?? {}) })).status;
  return {
    retryJob: await post(`api/jobs/${job}/retry`),
    retryDelivery: await post("api/deliveries/1/retry"),
    reload: await post("api/config/reload"),
    predict: await post("api/predict/jobs", { study, models: ["cxr_pneumonia"] }),
  };
}, { study, job });
const prefix = new URL(url).pathname.replace(/ui\/$/, "");
report.outside = requested.filter((address) => !new URL(address).pathname.startsWith(prefix));
await browser.close();
process.stdout.write(JSON.stringify(report));
