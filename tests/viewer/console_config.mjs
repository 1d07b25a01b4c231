// The console's #/config page as a person uses it: open it with a writer's credentials, press each
// peer's C-ECHO and read the answer, press "Reload configuration" on a broken file (the refusal is
// shown), fix the file, press it again (the new peer appears); axe-core after each step, and
// screenshots. Prints one JSON report: the answers, axe's serious and critical violations, and
// every console error, page error and HTTP error answer.
// Usage: node console_config.mjs '{"url": URL, "username": U, "password": P, "out": DIR,
//   "echo": [PEER NAMES], "config_path": PATH, "fixed_config": YAML TEXT}'
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { axeViolations, collectErrors, isSerious, launch, openPage } from "./console_browser.mjs";

const { url, username, password, out, echo, config_path, fixed_config } = JSON.parse(process.argv[2]);
const browser = await launch();
const page = await openPage(browser, { username, password });
const report = { echo: {}, violations: {}, errors: [], httpErrors: [] };
collectErrors(page, report.errors);
page.on("response", (response) => {
  if (response.status() >= 400) report.httpErrors.push(`${response.status()} ${new URL(response.url()).pathname}`);
});

async function axe(step) {
  report.violations[step] = (await axeViolations(page))
    .filter(isSerious)
    .map((violation) => `${violation.id}: ${violation.help} (${violation.nodes.length})`);
}

/** Wait until `selector`'s text is set and no longer the "in progress" one; return it. */
async function settled(selector) {
  await page.waitForFunction(
    (selector) => {
      const text = document.querySelector(selector)?.textContent ?? "";
      return text && text !== "…" && text !== "Reloading…";
    },
    selector,
    { timeout: 30000 },
  );
  return page.textContent(selector);
}

try {
  await page.goto(`${url}#/config`);
  await page.getByRole("heading", { name: "Configuration", level: 1 }).waitFor();
  report.navigation = await page.locator("#pages a").allTextContents();
  await axe("opened");

  for (const name of echo) {
    await page.getByRole("button", { name: `C-ECHO ${name}` }).click();
    report.echo[name] = await settled(`tr[data-peer="${name}"] .echo-answer`);
  }
  await page.screenshot({ path: join(out, "config-echo.png"), fullPage: true });
  await axe("echoed");

  await page.getByRole("button", { name: "Reload configuration" }).click();
  report.refused = await settled("#reload-outcome");
  report.refusedClass = await page.getAttribute("#reload-outcome", "class");
  await page.screenshot({ path: join(out, "config-refused.png"), fullPage: true });

  writeFileSync(config_path, fixed_config);
  await page.getByRole("button", { name: "Reload configuration" }).click();
  await page.waitForFunction(
    () => document.querySelector("#reload-outcome")?.className === "ok",
    null,
    { timeout: 30000 },
  );
  report.applied = await page.textContent("#reload-outcome");
  report.peersAfter = await page.locator("tr[data-peer]").evaluateAll(
    (rows) => rows.map((row) => row.dataset.peer),
  );
  await page.locator('details[data-section="peers"] summary').click();
  report.peersSection = await page.textContent('details[data-section="peers"] pre');
  await page.screenshot({ path: join(out, "config-reloaded.png"), fullPage: true });
  await axe("reloaded");
} catch (error) {
  report.failure = String(error);
  await page.screenshot({ path: join(out, "config-failure.png"), fullPage: true });
} finally {
  await browser.close();
}
console.log(JSON.stringify(report));
