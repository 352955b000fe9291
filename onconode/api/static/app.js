// OncoNode status page: plain JavaScript against the node's own API, no build step.
"use strict";

const $ = (sel) => document.querySelector(sel);
let selected = new URLSearchParams(location.search).get("study");

function token() { return sessionStorage.getItem("onconode-token") || ""; }

async function api(path, asBlob) {
  const headers = token() ? { Authorization: "Bearer " + token() } : {};
  const response = await fetch("../" + path, { headers });
  if (response.status === 401) {
    $("#auth").hidden = false;
    throw new Error("the API needs a token");
  }
  if (!response.ok) {
    let detail = response.statusText;
    try { detail = (await response.json()).detail; } catch (e) { /* not JSON */ }
    throw new Error(path + ": " + detail);
  }
  return asBlob ? response.blob() : response.json();
}

function text(tag, value, cls) {
  const el = document.createElement(tag);
  el.textContent = value == null ? "" : String(value);
  if (cls) el.className = cls;
  return el;
}

function finding(s) {
  if (s.positive == null && s.positive_probability == null) {
    return text("span", s.state === "no_model" ? "no applicable model" : "—");
  }
  // An analysed study without a positive or negative: the model states no verdict (slices ranked only).
  const verdict = s.positive == null ? "no verdict" : s.positive ? "positive" : "negative";
  const cell = text("span", s.finding + ": " + verdict, s.positive == null ? "no-verdict" : verdict);
  cell.title = s.headline || "";
  return cell;
}

function when(epoch) { return new Date(epoch * 1000).toLocaleString(); }

async function loadReady() {
  const pill = $("#ready");
  try {
    const response = await fetch("../ready");
    const body = await response.json();
    pill.textContent = body.ready ? "ready" : "not ready: " +
      body.checks.filter((c) => !c.ok).map((c) => c.name + " (" + c.detail + ")").join(", ");
    pill.className = "pill " + (body.ready ? "ok" : "bad");
  } catch (e) {
    pill.textContent = "unreachable"; pill.className = "pill bad";
  }
}

async function loadStudies() {
  const state = $("#state-filter").value;
  const page = await api("studies?limit=50" + (state ? "&state=" + encodeURIComponent(state) : ""));
  $("#total").textContent = "(" + page.total + ")";
  const body = $("#studies tbody");
  body.replaceChildren();
  for (const s of page.items) {
    const row = document.createElement("tr");
    row.dataset.study = s.study_uid;
    if (s.study_uid === selected) row.classList.add("selected");
    const uid = text("td", s.study_uid, "uid"); uid.title = s.study_uid;
    const state = document.createElement("td");
    const badge = text("span", s.state, "state state-" + s.state); badge.title = s.reason || "";
    state.append(badge);
    const found = document.createElement("td"); found.append(finding(s));
    row.append(uid, state, found,
      text("td", s.positive_probability == null ? "—" : s.positive_probability.toFixed(3), "probability"),
      text("td", s.instances), text("td", when(s.last_received_at)));
    row.addEventListener("click", () => { selected = s.study_uid; refresh(); });
    body.append(row);
  }
}

async function loadDetail() {
  if (!selected) { $("#detail").hidden = true; return; }
  const d = await api("studies/" + encodeURIComponent(selected));
  $("#detail").hidden = false;
  $("#detail-uid").textContent = d.study_uid;
  $("#detail-result").textContent = d.conclusion ? d.conclusion.headline :
    (d.result ? d.result.reason : (d.reason || d.state));
  $("#detail-method").textContent = d.conclusion ? d.conclusion.method + ". " + d.conclusion.not_for_diagnosis : "";
  const keys = $("#detail-keys"); keys.replaceChildren();
  for (const k of (d.result ? d.result.key_slices : [])) {
    keys.append(text("li", "slice " + (k.index + 1) + ": probability " + k.positive_probability.toFixed(3) +
      " (per slice)"));
  }
  const series = $("#detail-series"); series.replaceChildren();
  const decisions = d.series_decisions.length ? d.series_decisions : d.series.map((s) =>
    ({ modality: s.modality, description: s.series_uid, slices: s.instances, taken: false, reason: "received" }));
  for (const s of decisions) {
    const item = text("li", (s.taken ? "TAKEN " : "") + s.modality + " " + (s.description || "(no description)") +
      " — " + s.slices + " slices — " + s.reason);
    if (s.evidence && s.evidence.length) {
      const why = document.createElement("ul"); why.className = "evidence";
      for (const line of s.evidence) why.append(text("li", line));
      item.append(why);
    }
    series.append(item);
  }
  const history = $("#detail-history"); history.replaceChildren();
  for (const t of d.transitions) {
    history.append(text("li", when(t.at) + ": " + (t.from_state || "—") + " → " + t.to_state +
      (t.reason ? " (" + t.reason + ")" : "")));
  }
  $("#detail-timings").textContent = Object.entries(d.timings_ms)
    .map(([k, v]) => k + " " + v.toFixed(0)).join(", ") || "—";
  const deliveries = $("#detail-deliveries"); deliveries.replaceChildren();
  for (const x of d.deliveries) {
    deliveries.append(text("li", x.kind + " " + x.object + " → " + x.destination + ": " + x.state +
      " after " + x.attempts + " attempt(s)" + (x.last_error ? " (" + x.last_error + ")" : "")));
  }
  if (!d.deliveries.length) deliveries.append(text("li", "none"));
  const overlays = $("#overlays");
  const key = d.study_uid + " " + d.overlays.join(" ");
  if (overlays.dataset.key === key) return;  // unchanged: keep the images already shown
  overlays.dataset.key = key;
  overlays.replaceChildren();
  for (const [i, url] of d.overlays.entries()) {
    const figure = document.createElement("figure");
    const img = document.createElement("img");
    img.alt = "key slice " + (i + 1) + " with heat map";
    img.className = "overlay";
    img.src = URL.createObjectURL(await api(url, true));
    figure.append(img, text("figcaption", "key slice " + (i + 1)));
    overlays.append(figure);
  }
}

async function refresh() {
  $("#error").hidden = true;
  loadReady();
  try {
    await loadStudies();
    await loadDetail();
  } catch (e) {
    $("#error").textContent = e.message; $("#error").hidden = false;
  }
}

$("#refresh").addEventListener("click", refresh);
$("#state-filter").addEventListener("change", refresh);
$("#auth").addEventListener("submit", (event) => {
  event.preventDefault();
  sessionStorage.setItem("onconode-token", $("#token").value);
  $("#auth").hidden = true;
  refresh();
});
refresh();
setInterval(refresh, 10000);
