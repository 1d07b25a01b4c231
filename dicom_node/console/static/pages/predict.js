// Upload and predict: drop DICOM files (stored through the node's STOW-RS, like any DICOMweb
// client) or a PNG/JPEG picture (stored as a Secondary Capture with the details entered), choose
// the models, and follow the job until its results show. Everything the node returns is shown as
// text (textContent), never as markup.
import { api, GUARD } from "../api.js";
import { element } from "../dom.js";
import { showResults } from "../results_view.js";

const PICTURE = /\.(png|jpe?g)$/i;
const DETAILS = [
  ["patient_name", "Patient name (Family^Given)", "text"],
  ["patient_id", "Patient ID", "text"],
  ["patient_birth_date", "Birth date (YYYYMMDD)", "text"],
  ["patient_sex", "Sex (M, F or O)", "text"],
  ["accession_number", "Accession number", "text"],
  ["study_description", "Study description", "text"],
];

function isPicture(file) {
  return ["image/png", "image/jpeg"].includes(file.type) || PICTURE.test(file.name);
}

/** The DICOM files as one STOW-RS request body (multipart/related, PS3.18 10.5). */
function stowBody(files, boundary) {
  const parts = [];
  for (const file of files) {
    parts.push(`--${boundary}\r\nContent-Type: application/dicom\r\n\r\n`, file, "\r\n");
  }
  parts.push(`--${boundary}--\r\n`);
  return new Blob(parts);
}

/** Store DICOM files through STOW-RS; the studies they went into. */
async function storeDicom(files, say) {
  const boundary = `dicom-node-console-${crypto.randomUUID()}`;
  say(`Storing ${files.length} DICOM file(s) through STOW-RS…`);
  const answer = await fetch("../dicomweb/studies", {
    method: "POST",
    credentials: "same-origin",
    headers: {
      "Content-Type": `multipart/related; type="application/dicom"; boundary=${boundary}`,
      Accept: "application/dicom+json",
    },
    body: stowBody(files, boundary),
  });
  const text = await answer.text();
  const data = text ? JSON.parse(text) : {};
  if (!answer.ok && answer.status !== 202) {
    const reason = data.detail || answer.headers.get("Warning") || answer.statusText;
    throw new Error(`STOW-RS ${answer.status}: ${reason}`);
  }
  const stored = data["00081199"]?.Value || [];
  const failed = data["00081198"]?.Value || [];
  const studies = new Set();
  for (const item of stored) {
    const url = item["00081190"]?.Value?.[0] || "";
    const match = url.match(/\/studies\/([0-9.]+)\//);
    if (match) studies.add(match[1]);
  }
  if (failed.length) say(`${failed.length} file(s) refused: ${answer.headers.get("Warning") || ""}`);
  return [...studies];
}

async function storePicture(file, form, models) {
  const body = new FormData();
  body.append("file", file, file.name);
  for (const model of models) body.append("models", model);
  for (const [name] of DETAILS) body.append(name, form.elements[name].value);
  const answer = await fetch("api/predict/picture", {
    method: "POST", credentials: "same-origin", headers: GUARD, body,
  });
  const data = await answer.json().catch(() => ({}));
  if (!answer.ok) throw new Error(`${answer.status}: ${data.detail || answer.statusText}`);
  return data;
}

async function follow(job, status, results) {
  for (;;) {
    const state = await api(`predict/jobs/${job}`);
    status.textContent = `Job ${job}: ${state.state}${state.notes.length ? ` (${state.notes.at(-1)})` : ""}`;
    if (state.state === "done" || state.state === "failed") {
      showResults(results, state);
      return state;
    }
    await new Promise((resolve) => setTimeout(resolve, 1000));
  }
}

function modelPicker(models) {
  const select = element("select", { id: "predict-models", name: "models", multiple: true, size: Math.min(models.length, 4) });
  for (const model of models) {
    select.append(element("option", { value: model.name }, `${model.title} (${model.name} ${model.version}, ${model.task})`));
  }
  if (select.options.length) select.options[0].selected = true;
  const cards = element("div", { id: "model-cards" });
  const showCards = () => {
    cards.replaceChildren();
    for (const model of models.filter((m) => [...select.selectedOptions].some((o) => o.value === m.name))) {
      const facts = element("dl", {},
        element("dt", {}, "Description"), element("dd", {}, model.description),
        element("dt", {}, "Intended use"), element("dd", {}, model.intended_use),
        element("dt", {}, "Limitations"), element("dd", {}, model.limitations),
        element("dt", {}, "Outputs"), element("dd", {}, model.labels.join(", ")
          + (model.threshold !== null ? `; threshold ${model.threshold}` : "")));
      const card = element("details", { className: "model-card" },
        element("summary", {}, `Model card: ${model.title} ${model.version}`), facts,
        element("pre", {}, model.card));
      cards.append(card);
    }
  };
  select.addEventListener("change", showCards);
  showCards();
  return [select, cards];
}

export default {
  slug: "predict",
  title: "Upload and predict",
  async render(main, session) {
    const models = await api("predict/models");
    const [select, cards] = modelPicker(models);
    // A read-only user sees the form (the model cards) with its upload controls disabled.
    const files = element("input", { type: "file", id: "predict-files", name: "files", multiple: true,
      accept: ".dcm,application/dicom,image/png,image/jpeg", disabled: !session.can_write });
    const drop = element("div", { className: "drop-zone", id: "drop-zone" },
      element("label", { htmlFor: "predict-files" }, "DICOM files, or a PNG/JPEG picture (or drop them here)"), files);
    drop.addEventListener("dragover", (event) => { event.preventDefault(); drop.classList.add("over"); });
    drop.addEventListener("dragleave", () => drop.classList.remove("over"));
    drop.addEventListener("drop", (event) => {
      event.preventDefault();
      drop.classList.remove("over");
      if (session.can_write) files.files = event.dataTransfer.files;
    });
    const details = element("fieldset", { disabled: !session.can_write }, element("legend", {}, "For a picture: the patient and study it shows"));
    for (const [name, label, type] of DETAILS) {
      details.append(element("p", {}, element("label", { htmlFor: `detail-${name}` }, label), " ",
        element("input", { type, id: `detail-${name}`, name, autocomplete: "off" })));
    }
    const submit = element("button", { type: "submit", disabled: !session.can_write }, "Upload and predict");
    const form = element("form", { id: "predict-form" },
      element("p", {}, element("label", { htmlFor: "predict-models" }, "Models (Ctrl or Shift for several)"), " ", select),
      cards, drop, details, submit);
    const status = element("p", { id: "predict-status", role: "status" });
    const results = element("section", { id: "predict-results", "aria-label": "Results" });
    main.append(element("h1", {}, "Upload and predict"), form, status, results);
    if (!session.can_write) status.textContent = "Read-only access: uploading needs the write right.";

    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      const chosen = [...select.selectedOptions].map((option) => option.value);
      const picked = [...files.files];
      if (!picked.length || !chosen.length) {
        status.textContent = "Choose at least one model and one file.";
        return;
      }
      submit.disabled = true;
      results.replaceChildren();
      try {
        const jobs = [];
        for (const picture of picked.filter(isPicture)) {
          status.textContent = `Uploading ${picture.name}…`;
          jobs.push((await storePicture(picture, form, chosen)).job);
        }
        const dicom = picked.filter((file) => !isPicture(file));
        if (dicom.length) {
          for (const study of await storeDicom(dicom, (text) => { status.textContent = text; })) {
            jobs.push((await api("predict/jobs", { method: "POST", json: { study, models: chosen } })).job);
          }
        }
        for (const job of jobs) await follow(job, status, results);
      } catch (error) {
        status.textContent = error.message;
        status.className = "error";
      } finally {
        submit.disabled = !session.can_write;
      }
    });
  },
};
