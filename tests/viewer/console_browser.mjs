// What the console's browser scripts share, so each one says only what a person does on its page:
// Debian's chromium launched the same way (headless, no background traffic), a window that
// answers the node's Basic challenge, the page's errors collected, and axe-core's violations.
import { createRequire } from "node:module";
import { chromium } from "playwright-core";

const AXE = createRequire(import.meta.url).resolve("axe-core/axe.min.js");
const ARGS = ["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
  "--disable-component-update", "--disable-sync"];

/** Debian's chromium; `args` are flags beyond the usual ones (e.g. WebGL by SwiftShader). */
export function launch(args = []) {
  return chromium.launch({ executablePath: "/usr/bin/chromium", args: [...ARGS, ...args] });
}

/** A page in a new window of `browser` that logs in as `username` when the node asks. */
export async function openPage(browser, { username, password, width = 1280, height = 900 }) {
  const context = await browser.newContext({
    viewport: { width, height },
    httpCredentials: { username, password },
  });
  return context.newPage();
}

/** Push every console error and uncaught page error of `page` into `errors`. With
 * `skipFailedLoads`, chromium's "Failed to load resource" lines are left out: the script then
 * reports failed answers itself, with their address. */
export function collectErrors(page, errors, { skipFailedLoads = false } = {}) {
  page.on("console", (message) => {
    if (message.type() !== "error") return;
    if (skipFailedLoads && message.text().startsWith("Failed to load resource")) return;
    errors.push(message.text());
  });
  page.on("pageerror", (error) => errors.push(`pageerror: ${error.message}`));
}

/** axe-core's violations of the page as shown now, each with the first five elements it found. */
export async function axeViolations(page) {
  await page.addScriptTag({ path: AXE });
  return page.evaluate(async () =>
    (await window.axe.run(document, { resultTypes: ["violations"] })).violations.map((v) => ({
      id: v.id, impact: v.impact, help: v.help, nodes: v.nodes.map((n) => n.target.join(" ")).slice(0, 5),
    })));
}

/** Whether axe-core rates a violation serious or critical (what the tests refuse). */
export const isSerious = (violation) => ["serious", "critical"].includes(violation.impact);
