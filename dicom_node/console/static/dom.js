// Building the pages' elements from data without ever parsing it as HTML: every value the node
// sends (patient names, a peer's answer) comes from outside and becomes text only.

/** An element with properties (attributes when the name has a dash or is `for`, `role`, ...)
 * and children (strings become text nodes; null and false are left out). */
export function element(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(props)) {
    if (value === undefined || value === null || value === false) continue;
    if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else if (name in node && !name.includes("-")) node[name] = value;
    else node.setAttribute(name, value);
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

/** A table with a caption, column headers and rows of cells (text or elements); a column whose
 * header is null (an action a read-only user may not take) is left out with its cells. */
export function table(caption, headers, rows) {
  const kept = headers.map((header) => header !== null);
  headers = headers.filter((_, i) => kept[i]);
  rows = rows.map((cells) => cells.filter((_, i) => kept[i]));
  return element(
    "table",
    {},
    element("caption", {}, caption),
    element("thead", {}, element("tr", {}, headers.map((h) => element("th", { scope: "col" }, h)))),
    element("tbody", {}, rows.map((cells) => element("tr", {}, cells.map((c) => element("td", {}, c))))),
  );
}

/** A time the node sends (seconds since 1970) as local date and time. */
export function when(seconds) {
  if (seconds === null || seconds === undefined) return "";
  const d = new Date(seconds * 1000);
  const two = (n) => String(n).padStart(2, "0");
  return `${d.getFullYear()}-${two(d.getMonth() + 1)}-${two(d.getDate())} ` +
    `${two(d.getHours())}:${two(d.getMinutes())}:${two(d.getSeconds())}`;
}

/** A duration in seconds, as a person reads it. */
export function duration(seconds) {
  if (seconds === null || seconds === undefined) return "";
  if (seconds < 60) return `${seconds.toFixed(1)} s`;
  return `${Math.floor(seconds / 60)} min ${Math.round(seconds % 60)} s`;
}

/** A DICOM date (YYYYMMDD) as YYYY-MM-DD. */
export function dicomDate(value) {
  return /^\d{8}$/.test(value || "") ? `${value.slice(0, 4)}-${value.slice(4, 6)}-${value.slice(6)}` : value || "";
}

/** A DICOM person name (Family^Given^...) as a person writes it. */
export function personName(value) {
  return (value || "").split("=")[0].split("^").filter(Boolean).join(", ");
}
