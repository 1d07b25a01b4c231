// #/config: the configuration as the node runs it (secrets masked by the node), the files it came
// from, a reload (as SIGHUP: checked first, a bad file refused with check-config's message), and
// the peers with a C-ECHO each. Everything shown is set as text, never parsed as HTML.
import { api } from "../api.js";
import { element } from "../dom.js";

function section(main, title, id) {
  const part = element("section", { "aria-labelledby": id });
  part.append(element("h2", { id }, title));
  main.append(part);
  return part;
}

function showOutcome(output, text, ok) {
  output.className = ok ? "ok" : "error";
  output.textContent = text;
}

function filesPart(main, loaded, session) {
  const part = section(main, "Files", "config-files");
  const list = element("ul");
  for (const file of loaded.files) list.append(element("li", {}, `${file.path} (modified ${file.modified})`));
  if (!loaded.files.length) list.append(element("li", {}, "none: started without configuration files"));
  part.append(list);
  part.append(element("p", {}, `Running since ${loaded.started_at ?? "unknown"}. ` +
    `A reload changes live: ${loaded.live_keys.join(", ")}; anything else needs a restart.`));
  const output = element("p", { id: "reload-outcome", role: "status", "aria-live": "polite" });
  const last = loaded.last_reload;
  if (last) showOutcome(output, `Last reload (${last.at}): ${last.message}`, last.applied);
  if (session.can_write && loaded.reloadable) {
    const button = element("button", { type: "button", id: "reload" }, "Reload configuration");
    button.addEventListener("click", async () => {
      button.disabled = true;
      output.className = "";
      output.textContent = "Reloading…";
      try {
        const outcome = await api("config/reload", { method: "POST" });
        await render(main, session, outcome.message); // the page as now configured
      } catch (error) {
        showOutcome(output, error.message, false);
      } finally {
        button.disabled = false;
      }
    });
    part.append(button);
  }
  part.append(output);
  return output;
}

function peersPart(main, peers, session) {
  const part = section(main, "Peers", "config-peers");
  if (!peers.length) {
    part.append(element("p", {}, "No peers configured."));
    return;
  }
  const table = element("table");
  const head = element("tr");
  for (const title of ["Name", "AE title", "Address", "TLS", "DICOMweb", "Receives", "C-ECHO", "Answer"]) {
    head.append(element("th", { scope: "col" }, title));
  }
  const thead = element("thead");
  thead.append(head);
  const body = element("tbody");
  table.append(thead, body);
  for (const peer of peers) {
    const row = element("tr", { "data-peer": peer.name });
    const receives = [peer.result_destination && "results", peer.research_destination && "research copies"];
    row.append(
      element("th", { scope: "row" }, peer.name),
      element("td", {}, peer.ae_title ?? "—"),
      element("td", {}, peer.host ? `${peer.host}:${peer.port}` : "—"),
      element("td", {}, peer.tls ? "yes" : "no"),
      element("td", {}, peer.dicomweb_url ?? "—"),
      element("td", {}, receives.filter(Boolean).join(", ") || "—"),
    );
    const action = element("td");
    const answer = element("td", { "aria-live": "polite", class: "echo-answer" });
    if (peer.can_echo && session.can_write) {
      const button = element("button", { type: "button", "aria-label": `C-ECHO ${peer.name}` }, "C-ECHO");
      button.addEventListener("click", async () => {
        button.disabled = true;
        answer.className = "echo-answer";
        answer.textContent = "…";
        try {
          const result = await api(`peers/${encodeURIComponent(peer.name)}/echo`, { method: "POST" });
          answer.textContent = result.message;
          answer.classList.add(result.ok ? "ok" : "error");
        } catch (error) {
          answer.textContent = error.message;
          answer.classList.add("error");
        } finally {
          button.disabled = false;
        }
      });
      action.append(button);
    } else {
      action.textContent = peer.can_echo ? "needs the write right" : "DICOMweb only";
    }
    row.append(action, answer);
    body.append(row);
  }
  part.append(table);
}

function settingsPart(main, configuration) {
  const part = section(main, "Configuration as loaded", "config-settings");
  part.append(element("p", {}, "Secrets (passwords, tokens, client secrets, passwords in URLs) are masked."));
  for (const [key, value] of Object.entries(configuration)) {
    const details = element("details", { "data-section": key });
    details.append(element("summary", {}, key));
    details.append(element("pre", {}, JSON.stringify(value, null, 2)));
    part.append(details);
  }
}

async function render(main, session, message) {
  const [loaded, peers] = await Promise.all([api("config"), api("peers")]);
  main.replaceChildren(element("h1", {}, "Configuration"));
  const output = filesPart(main, loaded, session);
  if (message) showOutcome(output, message, true);
  peersPart(main, peers, session);
  settingsPart(main, loaded.configuration);
}

export default { slug: "config", title: "Configuration", render: (main, session) => render(main, session) };
