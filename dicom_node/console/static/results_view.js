// A job's results on the predict page: a classifier's finding (label, probability, the model's
// threshold) with its explanation drawn over the image (opacity slider), a CT segmentation's
// volumes with its segments in 3D (three.js, bundled at install time) and its slices with the
// segments blended in. Text from the node goes in as textContent only.

import { element, table } from "./dom.js";

function loaded(url) {
  return new Promise((resolve, reject) => {
    const image = new Image();
    image.onload = () => resolve(image);
    image.onerror = () => reject(new Error(`cannot load ${url}`));
    image.src = url;
  });
}

/** What the job noted about ``model``: where it ran (device) and how long it took. */
function ran(notes, model) {
  const lines = notes.filter((note) => note.includes(`: ${model} `));
  return lines.length ? element("ul", { className: "ran" }, ...lines.map((note) => element("li", {}, note))) : null;
}

function finding(study, item, notes) {
  const percent = (value) => `${(value * 100).toFixed(1)} %`;
  // Outside the model's domain there is no finding: "not assessed", the report's reason, and
  // the probability marked as not to be relied on.
  const probability = percent(item.probability) + (item.assessed ? "" : " (not reliable)");
  const section = element("section", { className: item.assessed ? "finding" : "finding not-assessed" },
    element("h3", {}, `${item.model}: ${item.label}`),
    item.assessed ? null : element("p", { className: "reason" }, item.reason),
    table("Classification", ["label", "probability", "threshold"],
      [[item.label, probability, item.threshold === null ? "—" : percent(item.threshold)]]),
    ran(notes, item.model));
  if (!item.explanation) return section;
  const canvas = element("canvas", { className: "explained", "data-image": item.image,
    "aria-label": `The image with the model's explanation (Grad-CAM) over it` });
  const id = `opacity-${item.explanation}`;
  const slider = element("input", { type: "range", id, min: 0, max: 100, value: 50 });
  const base = `api/predict/studies/${study}`;
  const draw = (image, overlay) => {
    canvas.width = image.naturalWidth;
    canvas.height = image.naturalHeight;
    const context = canvas.getContext("2d");
    context.globalAlpha = 1;
    context.drawImage(image, 0, 0);
    context.globalAlpha = slider.value / 100;
    context.drawImage(overlay, 0, 0, canvas.width, canvas.height);
    canvas.dataset.opacity = slider.value;
  };
  Promise.all([loaded(`${base}/images/${item.image}`), loaded(`${base}/explanations/${item.explanation}/${item.image}`)])
    .then(([image, overlay]) => {
      draw(image, overlay);
      slider.addEventListener("input", () => draw(image, overlay));
      canvas.dataset.ready = "true";
    })
    .catch((error) => section.append(element("p", { className: "error" }, error.message)));
  section.append(element("figure", {}, canvas,
    element("figcaption", {}, element("label", { htmlFor: id }, "Explanation opacity"), " ", slider)));
  return section;
}

async function sliceView(base, seg) {
  const { slices } = await (await fetch(`${base}/ct/${seg}/slices`, { credentials: "same-origin" })).json();
  const id = `slice-${seg}`;
  const slider = element("input", { type: "range", id, min: 0, max: slices - 1, value: Math.floor(slices / 2) });
  const picture = element("img", { className: "ct-slice", alt: "CT slice with the segments blended in" });
  const label = element("span", {});
  const show = () => {
    picture.src = `${base}/ct/${seg}/slices/${slider.value}`;
    label.textContent = `slice ${Number(slider.value) + 1} of ${slices}`;
  };
  slider.addEventListener("input", show);
  show();
  return element("figure", {}, picture,
    element("figcaption", {}, element("label", { htmlFor: id }, "Slice"), " ", slider, " ", label));
}

function parseMesh(buffer) {
  const length = new DataView(buffer).getUint32(0, true);
  const header = JSON.parse(new TextDecoder().decode(new Uint8Array(buffer, 4, length)));
  let offset = 4 + length;
  return header.segments.map((segment) => {
    const vertices = new Float32Array(buffer, offset, segment.vertices * 3);
    offset += vertices.byteLength;
    const triangles = new Uint32Array(buffer, offset, segment.triangles * 3);
    offset += triangles.byteLength;
    return { ...segment, vertices, triangles };
  });
}

async function view3d(base, seg, holder, described) {
  let THREE;
  try {
    THREE = await import("./vendor/three.js");
  } catch {
    holder.append(element("p", { className: "error" },
      "The 3D view is not built: npm ci --prefix dicom_node/console/frontend && npm run build --prefix dicom_node/console/frontend"));
    return;
  }
  const answer = await fetch(`${base}/ct/${seg}/mesh`, { credentials: "same-origin" });
  const segments = parseMesh(await answer.arrayBuffer());
  const canvas = element("canvas", { className: "ct-3d", tabIndex: 0, width: 640, height: 480,
    "aria-label": "3D view of the segments: drag to turn, wheel to zoom, arrow keys to move",
    // its text alternative: the volumes table beside it
    "aria-describedby": described });
  holder.append(canvas, element("ul", { className: "legend" }, ...segments.map((s) =>
    element("li", {}, element("span", { className: "swatch", style: `background: rgb(${s.colour.join(",")})` }), s.name))));
  const renderer = new THREE.WebGLRenderer({ canvas, antialias: true, preserveDrawingBuffer: true });
  renderer.setClearColor(0x101418);
  const scene = new THREE.Scene();
  const group = new THREE.Group();
  let radius = 1;
  for (const segment of segments) {
    const geometry = new THREE.BufferGeometry();
    geometry.setAttribute("position", new THREE.BufferAttribute(segment.vertices, 3));
    geometry.setIndex(new THREE.BufferAttribute(segment.triangles, 1));
    geometry.computeVertexNormals();
    geometry.computeBoundingSphere();
    radius = Math.max(radius, geometry.boundingSphere.center.length() + geometry.boundingSphere.radius);
    const colour = new THREE.Color(`rgb(${segment.colour.join(",")})`);
    // The outer tissues see-through, so the lungs and bones inside them show.
    const outer = /fat|soft|other|body/i.test(segment.name);
    group.add(new THREE.Mesh(geometry, new THREE.MeshLambertMaterial({
      color: colour, transparent: outer, opacity: outer ? 0.25 : 1, depthWrite: !outer })));
  }
  scene.add(group, new THREE.AmbientLight(0xffffff, 0.6));
  const camera = new THREE.PerspectiveCamera(40, canvas.width / canvas.height, radius / 100, radius * 10);
  camera.position.set(0, 0, radius * 2.6);
  const light = new THREE.DirectionalLight(0xffffff, 1.6);
  camera.add(light);
  scene.add(camera);
  const controls = new THREE.OrbitControls(camera, canvas);
  controls.listenToKeyEvents(canvas);
  const draw = () => renderer.render(scene, camera);
  controls.addEventListener("change", draw);
  draw();
  canvas.dataset.ready = "true";
}

function measurements(study, item, notes) {
  const base = `api/predict/studies/${study}`;
  const rows = item.volumes.map((v) => [v.name, v.volume_ml.toFixed(1),
    v.mean_hu === null ? "—" : v.mean_hu.toFixed(0), v.std_hu === null ? "—" : v.std_hu.toFixed(0)]);
  const volumes = table("Tissue volumes", ["tissue", "volume (mL)", "mean (HU)", "SD (HU)"], rows);
  volumes.id = `volumes-${item.report}`;
  const section = element("section", { className: "measurements" },
    element("h3", {}, `${item.model}: tissue volumes`), volumes,
    ran(notes, item.model));
  if (item.segmentation) {
    const holder = element("div", { className: "ct-views" });
    section.append(holder);
    view3d(base, item.segmentation, holder, volumes.id)
      .then(async () => holder.append(await sliceView(base, item.segmentation)))
      .catch((error) => holder.append(element("p", { className: "error" }, error.message)));
  }
  return section;
}

/** Add the results of an ended job to ``results``. */
export function showResults(results, job) {
  const section = element("section", { className: "job-results", "data-job": job.id },
    element("h2", {}, `Job ${job.id}: ${job.state}`));
  if (job.error) section.append(element("p", { className: "error" }, job.error));
  if (job.viewer_url) {
    section.append(element("p", {}, element("a", { href: job.viewer_url, target: "_blank", rel: "noopener" },
      "Open the study in the viewer")));
  }
  for (const item of job.findings || []) section.append(finding(job.study, item, job.notes));
  for (const item of job.measurements || []) section.append(measurements(job.study, item, job.notes));
  if (!(job.findings || []).length && !(job.measurements || []).length) {
    section.append(element("p", {}, "No result was stored. What the job noted:"));
  }
  section.append(element("details", {}, element("summary", {}, "Job notes"),
    element("ul", {}, ...job.notes.map((note) => element("li", {}, note)))));
  results.append(section);
}
