// Calls to the console's API (/ui/api, relative to the page so that it works behind a proxy's
// prefix). Every request carries the header the node's cross-site guard asks for; an error
// answer becomes an Error with the node's own reason.
export const GUARD = { "X-Requested-By": "dicom-node-console" };

export async function api(path, { method = "GET", body, json } = {}) {
  const headers = { ...GUARD, Accept: "application/json" };
  if (json !== undefined) {
    headers["Content-Type"] = "application/json";
    body = JSON.stringify(json);
  }
  const answer = await fetch(`api/${path}`, { method, headers, body, credentials: "same-origin" });
  const text = await answer.text();
  const data = text ? JSON.parse(text) : null;
  if (!answer.ok) {
    const reason = (data && (data.detail || data.error)) || answer.statusText;
    throw new Error(`${answer.status}: ${typeof reason === "string" ? reason : JSON.stringify(reason)}`);
  }
  return data;
}
