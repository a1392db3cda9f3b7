// posbridge counter screen. No framework, no build step: it must work on any till's browser with the internet down.
// Everything shown comes from the bridge as data and is put on the page with textContent (a card can hold anything).
"use strict";

const TEXT = {
  en: {
    "login.title": "Counter screen", "login.help": "Enter the bridge's local token once; this browser remembers it.",
    "login.label": "Local token", "login.submit": "Open", "login.wrong": "Wrong token. Ask the technician for the bridge's local token.",
    "login.failed": "That link's token is wrong. Enter the local token.",
    "scan.waiting": "Waiting for a card…", "history.title": "Earlier scans", "state.title": "Bridge",
    "state.devices": "Scanners and outputs", "invoices.title": "Invoices that need a person",
    "invoices.none": "None. Every invoice was delivered or is on its way.", "invoices.id": "#",
    "invoices.key": "Invoice", "invoices.state": "State", "invoices.answer": "Cloud's answer", "logout": "Sign out",
    "mark.ok": "Member", "mark.offline": "Offline — from the cache", "mark.provisional": "Offline — not confirmed",
    "mark.unknown": "Unknown card", "mark.unknown_offline": "Unknown — cloud unreachable",
    "mark.invalid": "Not a loyalty card", "mark.refused": "Refused by the cloud", "mark.error": "Could not check",
    "points": "points", "why.cache": "Cloud unreachable: last known data", "why.http": "The cloud answered HTTP {0}",
    "state.cloud": "Cloud", "state.reachable": "reachable", "state.unreachable": "unreachable",
    "state.since": "since {0}", "state.since_before": "since before {0}", "state.delivery": "Delivery",
    "state.running": "running", "state.paused": "paused: {0}", "state.queue": "Waiting to be sent",
    "state.oldest": "{0} (oldest {1})", "state.rejected": "Need a person", "state.connected": "connected",
    "state.disconnected": "not connected", "state.none": "No scanners or outputs configured.",
    "state.unreachable_bridge": "The bridge does not answer. Is posbridge running?",
    "device.scanner": "scanner", "device.output": "keyboard output", "state.not_typed": "last card not typed: {0}",
    "inv.rejected": "rejected", "inv.held": "held for review", "inv.retry": "Retry", "inv.release": "Send as its own sale", "inv.drop": "Drop",
    "inv.confirm_drop": "Drop invoice {0} for good? It will not be sent to the cloud.",
    "inv.retried": "Invoice {0} is queued again.", "inv.dropped": "Invoice {0} was dropped.",
    "inv.failed": "Could not do it: {0}", "source": "from {0}",
  },
  es: {
    "login.title": "Pantalla de mostrador", "login.help": "Introduce una vez el token local del puente; este navegador lo recordará.",
    "login.label": "Token local", "login.submit": "Abrir", "login.wrong": "Token incorrecto. Pide al técnico el token local del puente.",
    "login.failed": "El token de ese enlace es incorrecto. Introduce el token local.",
    "scan.waiting": "Esperando una tarjeta…", "history.title": "Lecturas anteriores", "state.title": "Puente",
    "state.devices": "Lectores y salidas", "invoices.title": "Facturas que necesitan a una persona",
    "invoices.none": "Ninguna. Todas las facturas se entregaron o van de camino.", "invoices.id": "#",
    "invoices.key": "Factura", "invoices.state": "Estado", "invoices.answer": "Respuesta de la nube", "logout": "Cerrar sesión",
    "mark.ok": "Socio", "mark.offline": "Sin conexión — desde la caché", "mark.provisional": "Sin conexión — sin confirmar",
    "mark.unknown": "Tarjeta desconocida", "mark.unknown_offline": "Desconocida — nube inaccesible",
    "mark.invalid": "No es una tarjeta de fidelización", "mark.refused": "Rechazada por la nube", "mark.error": "No se pudo comprobar",
    "points": "puntos", "why.cache": "Nube inaccesible: últimos datos conocidos", "why.http": "La nube respondió HTTP {0}",
    "state.cloud": "Nube", "state.reachable": "accesible", "state.unreachable": "inaccesible",
    "state.since": "desde las {0}", "state.since_before": "desde antes de las {0}", "state.delivery": "Envío",
    "state.running": "en marcha", "state.paused": "en pausa: {0}", "state.queue": "Pendientes de envío",
    "state.oldest": "{0} (la más antigua, {1})", "state.rejected": "Necesitan a una persona", "state.connected": "conectado",
    "state.disconnected": "no conectado", "state.none": "No hay lectores ni salidas configurados.",
    "state.unreachable_bridge": "El puente no responde. ¿Está posbridge en marcha?",
    "device.scanner": "lector", "device.output": "salida de teclado", "state.not_typed": "última tarjeta no tecleada: {0}",
    "inv.rejected": "rechazada", "inv.held": "retenida para revisión", "inv.retry": "Reintentar", "inv.release": "Enviar como venta aparte", "inv.drop": "Descartar",
    "inv.confirm_drop": "¿Descartar definitivamente la factura {0}? No se enviará a la nube.",
    "inv.retried": "La factura {0} vuelve a la cola.", "inv.dropped": "Factura {0} descartada.",
    "inv.failed": "No se pudo: {0}", "source": "desde {0}",
  },
  pt: {
    "login.title": "Ecrã de balcão", "login.help": "Introduza uma vez o token local da ponte; este navegador vai lembrá-lo.",
    "login.label": "Token local", "login.submit": "Abrir", "login.wrong": "Token errado. Peça ao técnico o token local da ponte.",
    "login.failed": "O token dessa ligação está errado. Introduza o token local.",
    "scan.waiting": "À espera de um cartão…", "history.title": "Leituras anteriores", "state.title": "Ponte",
    "state.devices": "Leitores e saídas", "invoices.title": "Faturas que precisam de uma pessoa",
    "invoices.none": "Nenhuma. Todas as faturas foram entregues ou estão a caminho.", "invoices.id": "#",
    "invoices.key": "Fatura", "invoices.state": "Estado", "invoices.answer": "Resposta da nuvem", "logout": "Terminar sessão",
    "mark.ok": "Cliente", "mark.offline": "Sem ligação — da cache", "mark.provisional": "Sem ligação — não confirmado",
    "mark.unknown": "Cartão desconhecido", "mark.unknown_offline": "Desconhecido — nuvem inacessível",
    "mark.invalid": "Não é um cartão de fidelização", "mark.refused": "Recusado pela nuvem", "mark.error": "Não foi possível verificar",
    "points": "pontos", "why.cache": "Nuvem inacessível: últimos dados conhecidos", "why.http": "A nuvem respondeu HTTP {0}",
    "state.cloud": "Nuvem", "state.reachable": "acessível", "state.unreachable": "inacessível",
    "state.since": "desde as {0}", "state.since_before": "desde antes das {0}", "state.delivery": "Envio",
    "state.running": "a funcionar", "state.paused": "em pausa: {0}", "state.queue": "À espera de envio",
    "state.oldest": "{0} (a mais antiga, {1})", "state.rejected": "Precisam de uma pessoa", "state.connected": "ligado",
    "state.disconnected": "não ligado", "state.none": "Sem leitores nem saídas configurados.",
    "state.unreachable_bridge": "A ponte não responde. O posbridge está a correr?",
    "device.scanner": "leitor", "device.output": "saída de teclado", "state.not_typed": "último cartão não escrito: {0}",
    "inv.rejected": "recusada", "inv.held": "retida para revisão", "inv.retry": "Tentar de novo", "inv.release": "Enviar como venda separada", "inv.drop": "Descartar",
    "inv.confirm_drop": "Descartar de vez a fatura {0}? Não será enviada para a nuvem.",
    "inv.retried": "A fatura {0} voltou à fila.", "inv.dropped": "Fatura {0} descartada.",
    "inv.failed": "Não foi possível: {0}", "source": "de {0}",
  },
};

function pickLanguage() {
  for (const tag of navigator.languages || [navigator.language || "en"]) {
    const base = String(tag).toLowerCase().split("-")[0];
    if (TEXT[base]) return base;
  }
  return "en";
}
const LANG = pickLanguage();
function t(key, ...args) {
  const text = (TEXT[LANG][key] !== undefined ? TEXT[LANG][key] : TEXT.en[key]) || key;
  return text.replace(/\{(\d)\}/g, (_, i) => String(args[Number(i)]));
}
const $ = (id) => document.getElementById(id);
function el(tag, text, className) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = String(text);
  if (className) node.className = className;
  return node;
}
function clock(epochSeconds) {
  return new Date(epochSeconds * 1000).toLocaleTimeString(LANG, { hour: "2-digit", minute: "2-digit", second: "2-digit" });
}
function age(seconds) {
  if (seconds === null || seconds === undefined) return "";
  if (seconds < 90) return `${Math.round(seconds)} s`;
  if (seconds < 5400) return `${Math.round(seconds / 60)} min`;
  if (seconds < 172800) return `${Math.round(seconds / 3600)} h`;
  return `${Math.round(seconds / 86400)} d`;
}

let csrf = "";
let stream = null;

// -- scans --

function memberFields(data) {
  if (!data || typeof data !== "object") return {};
  const inner = data.member && typeof data.member === "object" ? data.member : data;
  const name = inner.name || [inner.first_name, inner.last_name].filter(Boolean).join(" ") || inner.full_name || "";
  const points = inner.points !== undefined ? inner.points : inner.balance;
  const level = inner.level || inner.tier || "";
  return { name, points, level };
}

// What a scan means for the cashier: kind (ok/offline/bad), the big mark, the name, points, level and why.
function describe(scan) {
  const member = scan.member;
  if (!scan.member_id) return { kind: "bad", mark: t("mark.invalid"), why: scan.error || "", name: scan.text || "" };
  if (!member) return { kind: "bad", mark: t("mark.error"), why: scan.error || "", name: scan.member_id };
  const fields = memberFields(member.data);
  const status = member.status;
  if (status >= 200 && status < 300) {
    if (member.data && member.data.provisional === true)
      return { kind: "offline", mark: t("mark.provisional"), name: scan.member_id, why: t("why.cache") };
    const offline = member.cache === "stale";
    return { kind: offline ? "offline" : "ok", mark: offline ? t("mark.offline") : t("mark.ok"),
             name: fields.name || scan.member_id, points: fields.points, level: fields.level,
             why: offline ? t("why.cache") : "" };
  }
  if (status === 404) return { kind: "bad", mark: t("mark.unknown"), name: scan.member_id, why: t("why.http", status) };
  if (status === 503 || status === 504)
    return { kind: "bad", mark: t("mark.unknown_offline"), name: scan.member_id, why: scan.error || t("why.http", status) };
  return { kind: "bad", mark: t("mark.refused"), name: scan.member_id, why: scan.error || t("why.http", status) };
}

let shown = null;
function showScan(scan) {
  if (!scan) return;
  if (shown) addHistory(shown);
  shown = scan;
  const d = describe(scan);
  $("scan").className = `panel ${d.kind}`;
  $("scan").dataset.kind = d.kind;
  $("scan-empty").hidden = true;
  $("scan-current").hidden = false;
  $("scan-mark").textContent = d.mark;
  $("scan-name").textContent = d.name || "";
  $("scan-points").textContent = d.points !== undefined && d.points !== null ? `${d.points} ${t("points")}` : "";
  $("scan-level").textContent = d.level || "";
  $("scan-level").hidden = !d.level;
  $("scan-why").textContent = d.why || "";
  const at = scan.at ? new Date(scan.at).toLocaleTimeString(LANG) : "";
  $("scan-meta").textContent = [at, scan.source ? t("source", scan.source) : "", scan.member_id || ""].filter(Boolean).join(" · ");
}
function addHistory(scan) {
  const d = describe(scan);
  const item = el("li", null, d.kind);
  item.appendChild(el("span", "", "dot"));
  item.appendChild(el("span", `${scan.at ? new Date(scan.at).toLocaleTimeString(LANG) : ""} ${d.name || ""} — ${d.mark}`));
  const list = $("scan-list");
  list.insertBefore(item, list.firstChild);
  while (list.children.length > 8) list.removeChild(list.lastChild);
}

function listen() {
  if (stream) stream.close();
  stream = new EventSource("/screen/events");
  stream.addEventListener("scan", (event) => {
    try { showScan(JSON.parse(event.data)); } catch (e) { /* a malformed event is ignored */ }
  });
  stream.addEventListener("open", () => { document.body.dataset.live = "yes"; });
  stream.addEventListener("error", () => { document.body.dataset.live = "no"; });
}

// -- bridge state --

function row(list, label, value, kind) {
  list.appendChild(el("dt", label));
  const dd = el("dd", value, kind || "");
  list.appendChild(dd);
  return dd;
}
function renderState(state) {
  const status = state.status || {};
  const list = $("state-list");
  list.replaceChildren();
  const cloud = status.cloud || {};
  const since = cloud.since ? (cloud.since_exact ? t("state.since", clock(cloud.since)) : t("state.since_before", clock(cloud.since))) : "";
  row(list, t("state.cloud"), `${cloud.reachable ? t("state.reachable") : t("state.unreachable")} ${since}`.trim(),
      cloud.reachable ? "ok" : "bad").id = "cloud-state";
  const delivery = status.delivery || {};
  row(list, t("state.delivery"), delivery.paused ? t("state.paused", delivery.paused_reason || "") : t("state.running"),
      delivery.paused ? "bad" : "ok").id = "delivery-state";
  const depth = status.queue || {};
  const pending = depth.pending || 0;
  const oldest = status.oldest_pending_age_seconds;
  row(list, t("state.queue"), oldest !== null && oldest !== undefined ? t("state.oldest", pending, age(oldest)) : String(pending),
      pending ? "offline" : "ok").id = "queue-state";
  const needs = (state.invoices || []).length;
  row(list, t("state.rejected"), String(needs), needs ? "bad" : "ok");
  const devices = $("devices");
  devices.replaceChildren();
  const all = [...(status.scanners || []).map((s) => ({ ...s, what: t("device.scanner"), problem: s.last_error })),
               ...(status.outputs || []).map((o) => ({ ...o, what: t("device.output") }))];
  if (!all.length) devices.appendChild(el("li", t("state.none")));
  for (const device of all) {
    const last = device.last && device.last.result !== "typed" ? ` — ${t("state.not_typed", device.last.reason)}` : "";
    const text = `${device.name} (${device.what}): ${device.connected ? t("state.connected") : t("state.disconnected")}` +
      (!device.connected && device.problem ? ` — ${device.problem}` : last);
    const item = el("li", text, device.connected ? "ok" : "bad");
    item.dataset.device = device.name;
    devices.appendChild(item);
  }
}

function renderInvoices(invoices) {
  const body = $("invoice-rows");
  body.replaceChildren();
  $("invoices-empty").hidden = invoices.length > 0;
  $("invoice-table").hidden = invoices.length === 0;
  for (const invoice of invoices) {
    const tr = el("tr");
    tr.dataset.invoice = String(invoice.id);
    tr.appendChild(el("td", invoice.id));
    const key = el("td", invoice.key);
    if (invoice.amount !== null && invoice.amount !== undefined) key.appendChild(el("div", `${invoice.amount}`, "meta"));
    tr.appendChild(key);
    tr.appendChild(el("td", t(`inv.${invoice.state}`) !== `inv.${invoice.state}` ? t(`inv.${invoice.state}`) : invoice.state));
    const answer = el("td");
    const cloud = invoice.cloud_answer;
    if (cloud) {
      answer.appendChild(el("div", cloud.status ? `HTTP ${cloud.status}` : ""));
      if (cloud.body) answer.appendChild(el("pre", cloud.body + (cloud.truncated ? " …" : "")));
    } else if (invoice.last_error) {
      answer.appendChild(el("div", invoice.last_error));
    }
    tr.appendChild(answer);
    const actions = el("td", null, "actions");
    // a rejected invoice is sent again; a held one (same sale id, other content) is released as a sale of its own
    const resend = invoice.state === "held" ? "release" : "retry";
    const retry = el("button", t(`inv.${resend}`), "primary");
    retry.type = "button";
    retry.dataset.action = resend;
    retry.addEventListener("click", () => act(invoice.id, resend));
    const drop = el("button", t("inv.drop"), "danger");
    drop.type = "button";
    drop.dataset.action = "drop";
    drop.addEventListener("click", () => { if (window.confirm(t("inv.confirm_drop", invoice.id))) act(invoice.id, "drop"); });
    actions.append(retry, drop);
    tr.appendChild(actions);
    body.appendChild(tr);
  }
}

async function act(id, action) {
  const response = await fetch(`/screen/invoices/${encodeURIComponent(id)}/${action}`, {
    method: "POST", headers: { "X-Posbridge-CSRF": csrf }, credentials: "same-origin",
  });
  let detail = "";
  try { detail = (await response.json()).detail || ""; } catch (e) { /* not JSON */ }
  $("state-error").hidden = response.ok;
  $("state-error").textContent = response.ok ? "" : t("inv.failed", detail || response.status);
  await refresh();
}

async function refresh() {
  let response;
  try {
    response = await fetch("/screen/state", { credentials: "same-origin", cache: "no-store" });
  } catch (e) {
    $("state-error").hidden = false;
    $("state-error").textContent = t("state.unreachable_bridge");
    return false;
  }
  if (response.status === 401) { showLogin(); return false; }
  if (!response.ok) return false;
  const state = await response.json();
  csrf = state.csrf;
  $("state-error").hidden = true;
  renderState(state);
  renderInvoices(state.invoices || []);
  if (!shown && state.last_scan) showScan(state.last_scan);
  $("clock").textContent = clock(state.now);
  document.body.dataset.ready = "yes";
  return true;
}

// -- login --

function showLogin(message) {
  if (stream) { stream.close(); stream = null; }
  $("screen").hidden = true;
  $("login").hidden = false;
  $("login-error").hidden = !message;
  $("login-error").textContent = message || "";
  $("token").focus();
}
async function login(event) {
  event.preventDefault();
  const response = await fetch("/screen/login", {
    method: "POST", headers: { "Content-Type": "application/json" }, credentials: "same-origin",
    body: JSON.stringify({ token: $("token").value }),
  });
  if (!response.ok) { showLogin(t("login.wrong")); return; }
  $("token").value = "";
  await start();
}
async function logout(event) {
  event.preventDefault();
  await fetch("/screen/logout", { method: "POST", credentials: "same-origin" });
  showLogin();
}

let timer = null;
async function start() {
  if (!(await refresh())) return;
  $("login").hidden = true;
  $("screen").hidden = false;
  listen();
  if (!timer) timer = setInterval(refresh, 2000);
}

document.addEventListener("DOMContentLoaded", () => {
  document.documentElement.lang = LANG;
  for (const node of document.querySelectorAll("[data-i18n]")) node.textContent = t(node.dataset.i18n);
  $("login-form").addEventListener("submit", login);
  $("logout").addEventListener("click", logout);
  if (new URLSearchParams(location.search).get("login") === "failed") {
    history.replaceState(null, "", "/");
    showLogin(t("login.failed"));
    return;
  }
  start();
});
