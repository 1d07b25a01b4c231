// What a radiologist sees of a study in OHIF: open it, double-click each named series, and report
// per series the time until it is shown, the page's text (segment and measurement panels), the
// coloured pixels in the viewports (an overlay drawn), and a screenshot; plus every console error
// and page error. Usage: node view.mjs '{"viewer": URL, "study": UID, "series": [NAMES], "out": DIR}'
import { chromium } from "playwright-core";
import { join } from "node:path";

const { viewer, study, series, out, timeoutMs = 120000 } = JSON.parse(process.argv[2]);
const browser = await chromium.launch({
  executablePath: "/usr/bin/chromium",
  // No WebGL: cornerstone renders on the CPU (software WebGL draws 16-bit images black).
  args: ["--no-sandbox", "--disable-gpu", "--disable-3d-apis", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync"],
});
const page = await browser.newPage({ viewport: { width: 1600, height: 1000 } });
const errors = [];
// Without WebGL, by design here, cornerstone says "no webgl context" once per viewport.
page.on("console", (message) => {
  if (message.type() === "error" && message.text() !== "no webgl context") errors.push(message.text());
});
page.on("pageerror", (error) => errors.push(`pageerror: ${error.message}`));

/** Pixels of the viewport canvases whose colour is far from grey: the overlays drawn. */
const colouredPixels = () =>
  page.evaluate(() =>
    [...document.querySelectorAll("canvas")].reduce((sum, canvas) => {
      const context = canvas.getContext("2d");
      if (!context || !canvas.width) return sum;
      const { data } = context.getImageData(0, 0, canvas.width, canvas.height);
      for (let i = 0; i < data.length; i += 4) {
        const [r, g, b] = [data[i], data[i + 1], data[i + 2]];
        if (Math.max(r, g, b) - Math.min(r, g, b) > 60) sum += 1;
      }
      return sum;
    }, 0),
  );

const report = { errors, series: {} };
const opened = Date.now();
await page.goto(`${viewer}/viewer?StudyInstanceUIDs=${study}`);
// Image series are thumbnails, SEG and SR series list items without an image.
const SERIES = '[data-cy^="study-browser-thumbnail"]';
await page.waitForSelector(SERIES, { timeout: timeoutMs });
report.studyShownMs = Date.now() - opened;
// OHIF's first-visit notice and tour cover the viewport: dismissed as a new user would.
for (const button of ["Confirm and hide", "Skip all"]) {
  const found = page.getByText(button, { exact: true });
  if (await found.count()) await found.first().click();
}
for (const name of series) {
  const thumbnail = page.locator(SERIES, { hasText: name }).first();
  const started = Date.now();
  await thumbnail.dblclick();
  let shownMs = null;
  let coloured = 0;
  while (Date.now() - started < timeoutMs) {
    coloured = await colouredPixels();
    if (coloured > 50) {
      shownMs = Date.now() - started;
      break;
    }
    await page.waitForTimeout(250);
  }
  await page.waitForTimeout(1500); // panels settle
  const file = join(out, `${name.replace(/[^A-Za-z0-9]+/g, "_")}.png`);
  await page.screenshot({ path: file });
  report.series[name] = {
    shownMs,
    coloured: await colouredPixels(),
    text: await page.evaluate(() => document.body.innerText),
    errorBoundary: await page.locator("text=/Something went wrong|Error boundary/i").count(),
    screenshot: file,
  };
}
await browser.close();
console.log(JSON.stringify(report));
