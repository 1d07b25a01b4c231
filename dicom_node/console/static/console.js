// The console's shell: the session line, the page list and a hash router. Each page is an ES
// module in pages/ exporting {slug, title, render(main, session)}; list it in PAGES to show it.
import { api } from "./api.js";
import * as studies from "./pages/studies.js";
import * as work from "./pages/work.js";
import predict from "./pages/predict.js";
import config from "./pages/config.js";

const PAGES = [studies, work, predict, config];

function current() {
  const slug = location.hash.replace(/^#\/?/, "").split("/")[0];
  return PAGES.find((page) => page.slug === slug) || PAGES[0];
}

async function show(session, moved) {
  const main = document.getElementById("main");
  const page = current();
  for (const link of document.querySelectorAll("#pages a")) {
    if (link.dataset.slug === page?.slug) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  main.replaceChildren();
  if (!page) return;
  document.title = `${page.title} · ${session.ae_title}`;
  try {
    await page.render(main, session);
  } catch (error) {
    const message = document.createElement("p");
    message.className = "error";
    message.setAttribute("role", "alert");
    message.textContent = `${page.title}: ${error.message}`;
    main.replaceChildren(message);
  }
  // A keyboard or screen-reader user lands on the page they chose, not back on the nav.
  if (moved) main.focus();
}

async function start() {
  const session = await api("session");
  document.getElementById("node-name").textContent = session.ae_title;
  document.getElementById("session").textContent =
    `${session.user}${session.can_write ? "" : " (read only)"}`;
  const list = document.getElementById("pages");
  for (const page of PAGES) {
    const item = document.createElement("li");
    const link = document.createElement("a");
    link.href = `#/${page.slug}`;
    link.dataset.slug = page.slug;
    link.textContent = page.title;
    item.append(link);
    list.append(item);
  }
  window.addEventListener("hashchange", () => show(session, true));
  await show(session);
}

start();
