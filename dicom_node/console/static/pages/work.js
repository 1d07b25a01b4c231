// Running work: the jobs in progress with their step and percentage, the outbox by destination
// (with what is not through and the peer's last answer), and the node's health as /healthz
// reports it. Refreshed every few seconds while shown; only redrawn when something changed, so
// the keyboard focus stays where it is otherwise.
import { api } from "../api.js";
import { element, table, when } from "../dom.js";

export const slug = "work";
export const title = "Running work";

const REFRESH_MS = 3000;
const STATES = ["pending", "sent", "failed"];

export async function render(main, session) {
  const status = element("p", { id: "work-status", role: "status" });
  const body = element("div", { id: "work-body" });
  main.append(element("h1", {}, "Running work"), status, body);
  let last = "";
  const refresh = async () => {
    const [work, health] = await Promise.all([api("work"), healthz()]);
    const now = JSON.stringify([work, health]);
    if (now !== last) {
      last = now;
      fill(body, session, status, work, health, refresh);
    }
  };
  await refresh();
  const timer = setInterval(() => {
    if (!body.isConnected) clearInterval(timer);
    else refresh().catch((error) => (status.textContent = error.message));
  }, REFRESH_MS);
}

/** The node's own health check, beside the console (relative: works behind a proxy's prefix). */
async function healthz() {
  const answer = await fetch("../healthz", { headers: { Accept: "application/json" } });
  return answer.json();
}

function fill(body, session, status, work, health, refresh) {
  const running = work.running.map((job) => [
    String(job.id),
    element("a", { href: `#/studies/${encodeURIComponent(job.study_instance_uid)}` }, job.study_instance_uid),
    job.models.join(", ") || "—",
    job.step,
    element(
      "span",
      { className: "progress" },
      element("progress", { max: 100, value: job.percent, "aria-label": `Job ${job.id} progress` }),
      ` ${job.percent}%`,
    ),
    when(job.started_at),
  ]);
  const destinations = Object.entries(work.deliveries).map(([name, counts]) => [
    name,
    ...STATES.map((state) => String(counts[state] || 0)),
  ]);
  const retry = async (row) => {
    try {
      await api(`deliveries/${row.id}/retry`, { method: "POST" });
      status.className = "ok";
      status.textContent = `delivery ${row.id}: due now`;
      await refresh();
    } catch (error) {
      status.className = "error";
      status.textContent = error.message;
    }
  };
  const waiting = work.not_delivered.map((row) => [
    row.destination,
    element("span", { className: "uid" }, row.sop_instance_uid),
    row.state,
    String(row.attempts),
    row.state === "pending" ? when(row.next_attempt_at) : "—",
    row.last_error,
    session.can_write
      ? element("button", { type: "button", onclick: () => retry(row) }, `Retry delivery ${row.id} now`)
      : "",
  ]);
  const healthy = health.status === "ok";
  body.replaceChildren(
    element("h2", {}, "Health"),
    element(
      "p",
      { id: "health", className: healthy ? "ok" : "error" },
      healthy ? "Healthy: the index and the storage take writes, the DICOM listener accepts associations." : "Failing:",
    ),
    healthy ? "" : element("ul", {}, (health.problems || []).map((problem) => element("li", {}, problem))),
    element("h2", {}, "Jobs in progress"),
    running.length
      ? table("Jobs running now", ["Job", "Study", "Models", "Step", "Progress", "Started"], running)
      : element("p", {}, "No job is running."),
    element("h2", {}, "Outbox"),
    destinations.length
      ? table("Deliveries by destination and state", ["Destination", ...STATES.map((s) => `${s[0].toUpperCase()}${s.slice(1)}`)], destinations)
      : element("p", {}, "Nothing was queued for delivery."),
    waiting.length
      ? table("Tried and not through", ["Destination", "Object", "State", "Attempts", "Next try", "Peer's last answer", session.can_write ? "Action" : null], waiting)
      : destinations.length ? element("p", {}, "Every delivery tried went through.") : "",
  );
}
