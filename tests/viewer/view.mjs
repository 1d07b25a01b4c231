// What a radiologist sees of a study in OHIF: open it, double-click each named series, and report
// per series the time until it is shown, the text of the segmentation and measurement panels, the
// coloured pixels in the viewports and the shapes of their SVG layer (an overlay drawn), and
// screenshots; plus every console error, page error, failed request and HTTP error answer.
// A probe of a series names an image (SOP Instance UID) and a pixel on it (column, row): the
// viewport is scrolled to that image and the colour drawn there is reported.
// Usage: node view.mjs '{"viewer": URL, "study": UID, "series": [NAMES], "out": DIR,
//   "probes": {NAME: {"sop": UID, "point": [COLUMN, ROW]}}}'
import { chromium } from "playwright-core";
import { join } from "node:path";

const { viewer, study, series, out, probes = {}, timeoutMs = 120000 } = JSON.parse(
  process.argv[2],
);
const browser = await chromium.launch({
  executablePath: "/usr/bin/chromium",
  // WebGL by SwiftShader, chromium's own CPU implementation: cornerstone's CPU rendering
  // (useCPURendering) draws images but no labelmap, so OHIF could show no SEG without WebGL.
  args: ["--no-sandbox", "--disable-gpu", "--use-angle=swiftshader", "--enable-unsafe-swiftshader",
    "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync"],
});
const page = await browser.newPage({ viewport: { width: 1600, height: 1000 } });
const errors = [];
page.on("console", (message) => {
  if (message.type() === "error") errors.push(message.text());
});
page.on("pageerror", (error) => errors.push(`pageerror: ${error.message}`));
page.on("requestfailed", (request) =>
  errors.push(`requestfailed: ${request.url()} ${request.failure()?.errorText}`),
);
page.on("response", (response) => {
  if (response.status() >= 400) errors.push(`HTTP ${response.status()}: ${response.url()}`);
});

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
/** The colour [r, g, b] drawn at ``point`` of image ``sop`` by the viewport showing its series,
 * scrolled to it; null where no viewport shows it. */
const probeColour = ({ sop, point }) =>
  page.evaluate(
    async ({ sop, point }) => {
      const { getRenderingEngines, utilities } = window.cornerstone;
      const of = (id) => id.includes(`/instances/${sop}/`);
      const viewport = (getRenderingEngines() ?? [])
        .flatMap((engine) => engine.getViewports())
        .find((candidate) => candidate.getImageIds?.().some(of));
      if (!viewport) return null;
      const imageId = viewport.getImageIds().find(of);
      await viewport.setImageIdIndex(viewport.getImageIds().indexOf(imageId));
      await new Promise((resolve) => setTimeout(resolve, 1500)); // labelmap after the image
      const world = utilities.imageToWorldCoords(imageId, [point[0] + 0.5, point[1] + 0.5]);
      const [x, y] = viewport.worldToCanvas(world).map((v) => Math.round(v * devicePixelRatio));
      return [...viewport.canvas.getContext("2d").getImageData(x, y, 1, 1).data.slice(0, 3)];
    },
    { sop, point },
  );
/** Shapes of cornerstone's SVG layer: the annotations drawn (an SR's measurements). */
const svgShapes = () =>
  page.locator("svg.svg-layer :is(circle, ellipse, path, polyline, rect, line, text)").count();

const report = { errors, series: {} };
const opened = Date.now();
await page.goto(`${viewer}/viewer?StudyInstanceUIDs=${study}`);
// Image series are thumbnails, SEG and SR series list items without an image.
const SERIES = '[data-cy^="study-browser-thumbnail"]';
await page.waitForSelector(SERIES, { timeout: timeoutMs });
report.studyShownMs = Date.now() - opened;
// A double-click before OHIF has laid out its viewports (no active viewport yet) crashes it
// ("ViewportId is required"): a radiologist sees the image first.
await page.waitForFunction(
  () => Boolean(window.services?.viewportGridService?.getActiveViewportId?.()),
  null,
  { timeout: timeoutMs },
);
// OHIF's first-visit tour, then its notice, cover the viewport: dismissed as a new user would.
await page.waitForTimeout(1000);
for (const button of ["Skip all", "Confirm and hide"]) {
  const found = page.getByText(button, { exact: true });
  if (await found.count()) await found.first().click({ force: true });
}
for (const name of series) {
  const item = page.locator(SERIES, { hasText: name }).first();
  const started = Date.now();
  await item.dblclick();
  let shownMs = null;
  while (Date.now() - started < timeoutMs) {
    if ((await colouredPixels()) > 50 || (await svgShapes()) > 0) {
      shownMs = Date.now() - started;
      break;
    }
    await page.waitForTimeout(200);
  }
  await page.waitForTimeout(1500); // panels settle
  const base = join(out, name.replace(/[^A-Za-z0-9]+/g, "_"));
  const shown = { shownMs, coloured: await colouredPixels(), svg: await svgShapes(), panels: {} };
  if (probes[name]) shown.probe = await probeColour(probes[name]);
  for (const panel of ["panelSegmentation", "trackedMeasurements"]) {
    const tab = page.locator(`[data-cy="${panel}-btn"]`);
    if (await tab.count()) await tab.first().click();
    await page.waitForTimeout(1000);
    const screenshot = `${base}_${panel}.png`;
    await page.screenshot({ path: screenshot });
    shown.panels[panel] = { text: await page.evaluate(() => document.body.innerText), screenshot };
  }
  shown.text = Object.values(shown.panels).map((p) => p.text).join("\n");
  shown.errorBoundary = await page.locator("text=/Something went wrong|Error boundary/i").count();
  report.series[name] = shown;
}
await browser.close();
console.log(JSON.stringify(report));
