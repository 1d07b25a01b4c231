// The console's upload-and-predict page as a person uses it, in Debian's chromium: for each
// upload (files, models, details), choose the models, set the files on the page's file input (or,
// with "via": "drop", drop them on the drop zone: a real drop event whose DataTransfer holds the
// files' bytes, built in the page), press the button and wait for the result; report what the page shows: the classification
// table, the colours drawn over the image at full and at no opacity, the volumes table, the 3D
// canvas's pixels before and after a drag, the slice picture; plus axe-core's violations, every
// console error, page error and HTTP error answer, and screenshots.
// Usage: node console_predict.mjs '{"url": URL, "user": NAME, "password": PASSWORD, "out": DIR,
//   "uploads": [{"name": NAME, "files": [PATHS], "models": [NAMES], "details": {FIELD: VALUE},
//   "kind": "finding"|"measurements", "via": "input"|"drop"}]}'
import { readFileSync } from "node:fs";
import { basename, join } from "node:path";
import { axeViolations, collectErrors, launch, openPage } from "./console_browser.mjs";

const { url, user, password, out, uploads, timeoutMs = 300000 } = JSON.parse(process.argv[2]);
// WebGL by SwiftShader, chromium's own CPU implementation, for the 3D view
const browser = await launch(["--use-angle=swiftshader", "--enable-unsafe-swiftshader", "--disable-quic"]);
const page = await openPage(browser, { username: user, password, height: 1000 });
const errors = [];
collectErrors(page, errors);
page.on("response", (response) => {
  if (response.status() >= 400) errors.push(`HTTP ${response.status()}: ${response.url()}`);
});

/** Colours over the explanation canvas of ``section``: drawn at full opacity and at none, and
 * the pixels where they differ (the overlay), with the first such pixel's colour at full. */
const overlayPixels = (section) =>
  section.evaluate(async (node) => {
    const canvas = node.querySelector("canvas.explained");
    const slider = node.querySelector('input[type="range"]');
    const grab = async (value) => {
      slider.value = value;
      slider.dispatchEvent(new Event("input"));
      return canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height).data;
    };
    const full = await grab(100);
    const none = await grab(0);
    let changed = 0;
    let first = null;
    for (let i = 0; i < full.length; i += 4) {
      if (full[i] !== none[i] || full[i + 1] !== none[i + 1] || full[i + 2] !== none[i + 2]) {
        changed += 1;
        if (first === null) first = { at: [(i / 4) % canvas.width, Math.floor(i / 4 / canvas.width)],
          full: [...full.slice(i, i + 3)], none: [...none.slice(i, i + 3)] };
      }
    }
    await grab(50);
    return { width: canvas.width, height: canvas.height, changed, first };
  });

/** The 3D canvas read back: how many pixels differ from its background colour, and a hash of
 * them (to tell a turned view from the first one). */
const canvas3d = (section) =>
  section.evaluate((node) => {
    const canvas = node.querySelector("canvas.ct-3d");
    const copy = document.createElement("canvas");
    copy.width = canvas.width;
    copy.height = canvas.height;
    const context = copy.getContext("2d");
    context.drawImage(canvas, 0, 0);
    const { data } = context.getImageData(0, 0, copy.width, copy.height);
    let drawn = 0;
    let hash = 0;
    for (let i = 0; i < data.length; i += 4) {
      if (Math.abs(data[i] - 0x10) + Math.abs(data[i + 1] - 0x14) + Math.abs(data[i + 2] - 0x18) > 30) drawn += 1;
      hash = (hash * 31 + data[i] + data[i + 1] * 7 + data[i + 2] * 13) | 0;
    }
    return { drawn, total: data.length / 4, hash };
  });

const tableRows = (locator) =>
  locator.evaluate((table) => [...table.querySelectorAll("tbody tr")].map((row) =>
    [...row.cells].map((cell) => cell.textContent)));

const report = { errors, uploads: [] };
await page.goto(`${url}#/predict`);
await page.waitForSelector("#predict-models option", { timeout: 30000 });
report.models = await page.$$eval("#predict-models option", (options) => options.map((o) => o.value));
report.axeBefore = await axeViolations(page);

for (const [index, upload] of uploads.entries()) {
  let shownDropped = null;
  await page.selectOption("#predict-models", upload.models);
  for (const [field, value] of Object.entries(upload.details || {})) {
    await page.fill(`#detail-${field}`, value);
  }
  if (upload.via === "drop") {
    const dropped = upload.files.map((path) => ({ name: basename(path),
      type: /\.png$/i.test(path) ? "image/png" : /\.jpe?g$/i.test(path) ? "image/jpeg" : "application/dicom",
      bytes: readFileSync(path).toString("base64") }));
    await page.evaluate((dropped) => {
      const transfer = new DataTransfer();
      for (const file of dropped) {
        const bytes = Uint8Array.from(atob(file.bytes), (c) => c.charCodeAt(0));
        transfer.items.add(new File([bytes], file.name, { type: file.type }));
      }
      const zone = document.getElementById("drop-zone");
      for (const type of ["dragenter", "dragover", "drop"]) {
        zone.dispatchEvent(new DragEvent(type, { bubbles: true, cancelable: true, dataTransfer: transfer }));
      }
    }, dropped);
    shownDropped = await page.$eval("#predict-files", (input) => [...input.files].map((f) => f.name));
  } else {
    await page.setInputFiles("#predict-files", upload.files);
  }
  const earlier = await page.$$eval(".job-results", (nodes) => nodes.map((n) => n.dataset.job));
  await page.click('#predict-form button[type="submit"]');
  // the page replaces the results of the upload before with those of this one
  const job = await (await page.waitForFunction(
    (earlier) => [...document.querySelectorAll(".job-results")]
      .map((n) => n.dataset.job).find((id) => !earlier.includes(id)),
    earlier, { timeout: timeoutMs })).jsonValue();
  const section = page.locator(`.job-results[data-job="${job}"]`);
  const shown = { name: upload.name, heading: await section.locator("h2").textContent(), dropped: shownDropped };
  if (upload.kind === "finding") {
    await section.locator('canvas.explained[data-ready="true"]').waitFor({ timeout: 60000 });
    shown.title = await section.locator(".finding h3").textContent();
    shown.reason = await section.locator(".finding .reason").allTextContents();
    shown.ran = await section.locator(".ran li").allTextContents();
    shown.classification = await tableRows(section.locator("table").first());
    shown.overlay = await overlayPixels(section);
  } else {
    await section.locator('canvas.ct-3d[data-ready="true"]').waitFor({ timeout: 120000 });
    shown.volumes = await tableRows(section.locator("table").first());
    shown.before = await canvas3d(section);
    await section.locator("canvas.ct-3d").scrollIntoViewIfNeeded();
    const box = await section.locator("canvas.ct-3d").boundingBox();
    await page.mouse.move(box.x + box.width / 2, box.y + box.height / 2);
    await page.mouse.down();
    await page.mouse.move(box.x + box.width / 2 + 120, box.y + box.height / 2 + 30, { steps: 8 });
    await page.mouse.up();
    shown.turned = await canvas3d(section);
    // by keyboard: the canvas takes the focus and its arrow keys move the view
    await section.locator("canvas.ct-3d").focus();
    shown.focused3d = await page.evaluate(() => document.activeElement.className);
    shown.describedBy = await section.locator("canvas.ct-3d").evaluate((canvas) =>
      document.getElementById(canvas.getAttribute("aria-describedby"))?.querySelector("caption")?.textContent);
    for (const key of ["ArrowLeft", "ArrowLeft", "ArrowUp", "ArrowUp"]) await page.keyboard.press(key);
    shown.keyed = await canvas3d(section);
    const slice = section.locator("img.ct-slice");
    await slice.waitFor({ timeout: 60000 });
    await page.waitForFunction((img) => img.complete && img.naturalWidth > 0, await slice.elementHandle());
    shown.slice = await slice.evaluate((img) => ({ width: img.naturalWidth, height: img.naturalHeight }));
  }
  shown.screenshot = join(out, `${index + 1}_${upload.name}.png`);
  await section.screenshot({ path: shown.screenshot });
  report.uploads.push(shown);
}
report.axeAfter = await axeViolations(page);
report.screenshot = join(out, "page.png");
await page.screenshot({ path: report.screenshot, fullPage: true });
await browser.close();
process.stdout.write(JSON.stringify(report));
