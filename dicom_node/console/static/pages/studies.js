// Studies: search the index (patient ID, name, accession number, study date), then a study's
// timeline (what the node did with it, when, and for how long) with its jobs and deliveries,
// and the actions a writer may take: run a job again, retry a delivery now.
// #/studies lists, #/studies/<Study Instance UID> shows one study.
import { api } from "../api.js";
import { dicomDate, duration, element, personName, table, when } from "../dom.js";

export const slug = "studies";
export const title = "Studies";

/** The last search, so that coming back from a study shows it again. */
let lastForm = {};

const FIELDS = [
  ["patient_id", "Patient ID", "text"],
  ["patient_name", "Patient name", "text"],
  ["accession_number", "Accession number", "text"],
  ["date_from", "Study date from", "date"],
  ["date_to", "Study date to", "date"],
];

export async function render(main, session) {
  const uid = decodeURIComponent(location.hash.replace(/^#\/?studies\/?/, ""));
  if (uid) await showStudy(main, session, uid);
  else await showSearch(main);
}

async function showSearch(main) {
  const results = element("div", { id: "study-results", "aria-live": "polite" });
  const form = element(
    "form",
    { role: "search", "aria-label": "Search studies", className: "search" },
    FIELDS.map(([name, label, type]) =>
      element(
        "div",
        { className: "field" },
        element("label", { for: `search-${name}` }, label),
        element("input", { id: `search-${name}`, name, type, value: lastForm[name] || "" }),
      ),
    ),
    element("button", { type: "submit" }, "Search"),
  );
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    lastForm = Object.fromEntries(new FormData(form));
    await search(results);
  });
  main.append(element("h1", {}, "Studies"), form, results);
  await search(results);
}

async function search(results) {
  const query = new URLSearchParams(Object.entries(lastForm).filter(([, v]) => v));
  let found;
  try {
    found = await api(`studies?${query}`);
  } catch (error) {
    results.replaceChildren(element("p", { className: "error", role: "alert" }, error.message));
    return;
  }
  if (!found.studies.length) {
    results.replaceChildren(element("p", {}, "No study matches."));
    return;
  }
  const rows = found.studies.map((study) => [
    element(
      "a",
      { href: `#/studies/${encodeURIComponent(study.study_instance_uid)}` },
      `${dicomDate(study.study_date) || "no date"} ${study.study_description || study.modalities.join(", ")}`,
    ),
    personName(study.patient_name),
    study.patient_id,
    study.accession_number,
    study.modalities.join(", "),
    String(study.instances),
    study.state,
    study.job || "none",
  ]);
  const count = found.studies.length;
  const caption = `${count} ${count === 1 ? "study" : "studies"}` +
    (found.more ? " (more match: narrow the search)" : "");
  results.replaceChildren(
    table(caption, ["Study", "Patient name", "Patient ID", "Accession", "Modalities", "Instances", "State", "Last job"], rows),
  );
}

async function showStudy(main, session, uid) {
  const status = element("p", { id: "action-status", role: "status" });
  const body = element("div", { id: "study-body" });
  main.append(
    element("p", {}, element("a", { href: "#/studies" }, "← All studies")),
    element("h1", {}, "Study"),
    status,
    body,
  );
  const shown = await api(`studies/${encodeURIComponent(uid)}`);
  fill(body, session, shown, uid, status);
}

function fill(body, session, shown, uid, status) {
  const { study, timeline, jobs, deliveries } = shown;
  const facts = element(
    "dl",
    { className: "facts" },
    [
      ["Patient", personName(study.patient_name)],
      ["Patient ID", study.patient_id],
      ["Birth date", dicomDate(study.patient_birth_date)],
      ["Study date", dicomDate(study.study_date)],
      ["Accession", study.accession_number],
      ["Description", study.study_description],
      ["Study Instance UID", study.study_instance_uid],
      ["State", study.state],
    ].flatMap(([term, value]) => [element("dt", {}, term), element("dd", {}, value || "—")]),
  );
  const events = element(
    "ol",
    { className: "timeline", "aria-label": "Timeline" },
    timeline.map((event) =>
      element(
        "li",
        { className: `event kind-${event.kind.replace(/\W/g, "-")}` },
        element("time", {}, when(event.at)),
        " ",
        element("span", { className: "kind" }, event.kind),
        " ",
        event.text,
        event.duration !== null && event.duration !== undefined ? ` (${duration(event.duration)})` : "",
      ),
    ),
  );
  const actionColumn = session.can_write ? "Action" : null;
  const act = (label, path, enabled, settled) =>
    session.can_write
      ? element(
          "button",
          {
            type: "button",
            disabled: !enabled,
            onclick: () => action(body, session, uid, status, path, settled),
          },
          label,
        )
      : "";
  const jobRows = jobs.map((job) => [
    String(job.id),
    job.state,
    String(job.attempts),
    job.error,
    act(
      `Run job ${job.id} again`,
      `jobs/${job.id}/retry`,
      job.state === "done" || job.state === "failed",
      (now) => now.jobs.some((j) => j.id === job.id && j.attempts > job.attempts && /done|failed/.test(j.state)),
    ),
  ]);
  const deliveryRows = deliveries.map((item) => [
    item.destination,
    element("span", { className: "uid" }, item.sop_instance_uid),
    item.state,
    String(item.attempts),
    item.last_error,
    act(
      `Retry delivery ${item.id} now`,
      `deliveries/${item.id}/retry`,
      item.state !== "sent",
      (now) => now.deliveries.some((d) => d.id === item.id && (d.state === "sent" || (d.attempts > 0 && d.updated_at > item.updated_at))),
    ),
  ]);
  body.replaceChildren(
    facts,
    element("h2", {}, "Timeline"),
    timeline.length ? events : element("p", {}, "Nothing recorded."),
    element("h2", {}, "Jobs"),
    jobs.length ? table("Jobs of this study", ["Job", "State", "Attempts", "Error", actionColumn], jobRows) : element("p", {}, "No job yet."),
    element("h2", {}, "Deliveries"),
    deliveries.length
      ? table("Deliveries of this study's results and copies", ["Destination", "Object", "State", "Attempts", "Peer's last answer", actionColumn], deliveryRows)
      : element("p", {}, "No delivery."),
  );
}

/** Take an action, then follow the study until what it changed has settled: the job ran, the
 * delivery went through or was tried again (a few seconds). */
async function action(body, session, uid, status, path, settled) {
  try {
    await api(path, { method: "POST" });
    status.className = "ok";
    const [kind, id] = path.split("/");
    status.textContent = `${kind === "jobs" ? "job" : "delivery"} ${id}: due now`;
  } catch (error) {
    status.className = "error";
    status.textContent = error.message;
    return;
  }
  for (let i = 0; i < 30 && location.hash.includes(encodeURIComponent(uid)); i += 1) {
    await new Promise((resolve) => setTimeout(resolve, 500));
    const shown = await api(`studies/${encodeURIComponent(uid)}`);
    fill(body, session, shown, uid, status);
    if (settled(shown)) {
      status.textContent += "; done, shown below";
      return;
    }
  }
}
