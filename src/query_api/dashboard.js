"use strict";
// Built with textContent only: SKU names and group ids come from outside.
function cell(text, cls) { const td = document.createElement("td"); td.textContent = String(text); if (cls) td.className = cls; return td; }
function row(cells, cls) { const tr = document.createElement("tr"); cells.forEach(c => tr.appendChild(c)); if (cls) tr.className = cls; return tr; }
function fill(tableId, rows, emptyText) {
  const body = document.querySelector("#" + tableId + " tbody");
  body.replaceChildren(...rows);
  if (rows.length === 0) { const tr = row([cell(emptyText, "empty")]); tr.firstChild.colSpan = 5; body.appendChild(tr); }
}
// Totals arrive as JSON numbers, or as decimal strings past 2^53: formatted from the digits
// (BigInt), so a large total is shown exactly.
function money(minor) {
  const digits = String(minor), negative = digits.startsWith("-");
  const padded = (negative ? digits.slice(1) : digits).padStart(3, "0");
  return (negative ? "-" : "") + BigInt(padded.slice(0, -2)).toLocaleString("en") + "." + padded.slice(-2);
}
function chart(points) {
  const el = document.getElementById("revenue-chart");
  if (points.length === 0) { el.textContent = "no captures yet"; el.className = "empty"; return; }
  el.className = "";
  const w = 320, h = 120, pad = 18, max = Math.max(1, ...points.map(p => p.value));
  const bw = Math.min(28, Math.max(4, (w - pad) / points.length - 4));
  const ns = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("viewBox", `0 0 ${w} ${h}`); svg.setAttribute("width", "100%"); svg.setAttribute("role", "img");
  points.forEach((p, i) => {
    const bh = Math.max(1, (h - pad - 4) * p.value / max);
    const r = document.createElementNS(ns, "rect");
    r.setAttribute("x", pad + i * (bw + 4)); r.setAttribute("y", h - pad - bh);
    r.setAttribute("width", bw); r.setAttribute("height", bh); r.setAttribute("fill", "#58a6ff"); r.setAttribute("rx", 2);
    const t = document.createElementNS(ns, "title"); t.textContent = `${p.label}: ${money(p.minor)}`; r.appendChild(t);
    svg.appendChild(r);
    // Day of month under every other bar and the last, so labels never overlap.
    if (i % 2 === points.length % 2 || i === points.length - 1) {
      const l = document.createElementNS(ns, "text"); l.setAttribute("x", pad + i * (bw + 4)); l.setAttribute("y", h - 4);
      l.textContent = p.label.slice(8); svg.appendChild(l);
    }
  });
  el.replaceChildren(svg);
}
// The order process's status → the same orders' fulfilment statuses (the panel beside
// it), so the two panels read as one vocabulary; the rest have the same name in both.
const FULFILMENT_OF = { pending: "awaiting_payment", confirmed: "awaiting_payment", paid: "ready_to_ship + packed" };
// Groups whose partitions the reader unfolded, kept across refreshes.
const openGroups = new Set();
function render(d) {
  document.getElementById("orders-total").textContent = d.orders_total;
  fill("orders-by-status", d.orders_by_status.map(s => {
    const tr = row([cell(s.status), cell(s.orders, "n")]); tr.dataset.status = s.status; return tr;
  }), "no orders yet");
  fill("decisions", d.decisions.map(s => {
    const tr = row([cell(s.status), cell(FULFILMENT_OF[s.status] || s.status, "dim"), cell(s.orders, "n")],
      ["rejected", "expired"].includes(s.status) ? "low" : "");
    tr.dataset.decision = s.status; return tr;
  }), "nothing decided yet");
  document.getElementById("low-threshold").textContent = d.inventory.low_stock_below;
  document.getElementById("low-count").textContent = d.inventory.low;
  const over = document.getElementById("oversold-count");
  over.textContent = d.inventory.oversold; over.className = d.inventory.oversold > 0 ? "pill bad" : "pill ok";
  // Worst first; the API lists them in SKU order.
  const worst = [...d.inventory.items].sort((a, b) => a.available - b.available || a.sku.localeCompare(b.sku));
  fill("inventory", worst.slice(0, 25).map(l => {
    const tr = row([cell(l.sku), cell(l.on_hand, "n"), cell(l.reserved, "n"), cell(l.available, "n")], l.available < 0 ? "oversold" : "low");
    tr.dataset.sku = l.sku; return tr;
  }), "stock is fine everywhere");
  const byCurrency = {};
  d.revenue_per_day.forEach(r => { (byCurrency[r.currency] = byCurrency[r.currency] || []).push(r); });
  const main = Object.keys(byCurrency).sort((a, b) => byCurrency[b].length - byCurrency[a].length)[0];
  // The main currency's last 14 days, zero where nothing was captured, so gaps show.
  const perDay = {};
  (main ? byCurrency[main] : []).forEach(r => { perDay[r.day] = r.net_captured_minor; });
  const days = [];
  for (let i = 13; i >= 0; i--) {
    const day = new Date(Date.parse(d.generated_at) - i * 86400000).toISOString().slice(0, 10);
    days.push({ label: day, value: Number(perDay[day] || 0), minor: perDay[day] || 0 });
  }
  chart(main ? days : []);
  document.getElementById("revenue-currency").textContent = main ? `(${main})` : "";
  fill("revenue", d.revenue_per_day.map(r => {
    const tr = row([cell(r.day), cell(r.currency), cell(money(r.net_captured_minor), "n")]);
    tr.dataset.day = r.day; tr.dataset.currency = r.currency; tr.dataset.minor = r.net_captured_minor; return tr;
  }), "no captured payments in this period");
  document.getElementById("lag-total").textContent = d.lag_total;
  // One row per group; its partitions fold out under it on demand.
  fill("lag", d.lag.flatMap(g => {
    const worst = g.worst ? `${g.worst.topic} [${g.worst.partition}]: ${g.worst.lag}` : "–";
    const toggle = cell(g.group);
    const tr = row([toggle, cell(g.runs), cell(g.lag ?? "?", "n"), cell(worst)], (g.lag || 0) > 1000 ? "low" : "");
    tr.dataset.group = g.group; tr.dataset.runs = g.runs; tr.dataset.lag = g.lag ?? "";
    const details = row([cell("")]);
    details.className = "partitions"; details.hidden = !openGroups.has(g.group);
    details.firstChild.colSpan = 4;
    const inner = document.createElement("table");
    const head = row(["topic", "partition", "applied", "log end", "lag"].map(h => { const th = document.createElement("th"); th.textContent = h; return th; }));
    inner.appendChild(head);
    g.partitions.forEach(p => inner.appendChild(row([cell(p.topic), cell(p.partition, "n"), cell(p.next_offset, "n"), cell(p.log_end ?? "?", "n"), cell(p.lag ?? "?", "n")])));
    details.firstChild.appendChild(inner);
    tr.classList.add("expandable");
    tr.addEventListener("click", () => {
      if (openGroups.has(g.group)) openGroups.delete(g.group); else openGroups.add(g.group);
      details.hidden = !openGroups.has(g.group);
    });
    return [tr, details];
  }), "no group has read anything yet");
  const mirrors = document.getElementById("mirrors");
  mirrors.hidden = d.mirrors.length === 0;
  fill("mirror-ages", d.mirrors.map(m => row([cell(m.region), cell(m.age_ms ?? "?", "n")], (m.age_ms ?? 0) > 10000 ? "low" : "")));
  document.getElementById("dead-letters-total").textContent = d.dead_letters_total;
  fill("dead-letters", d.dead_letters.map(g => {
    const tr = row([cell(g.group), cell(g.parked, "n")], g.parked > 0 ? "oversold" : ""); tr.dataset.group = g.group; return tr;
  }), "nothing parked");
  document.getElementById("updated").textContent = new Date(d.generated_at).toLocaleTimeString();
}
// The token lives in this tab's session storage only: not in a cookie (so no other site's
// page can make the browser send it) and gone when the tab closes. A link may carry it once
// in its fragment (never sent to the server), which is taken and removed from the address.
const TOKEN_KEY = "orderflow.read-token";
function takeTokenFromFragment() {
  const m = /^#token=([\x21-\x7e]+)$/.exec(location.hash);
  if (m) {
    sessionStorage.setItem(TOKEN_KEY, decodeURIComponent(m[1]));
    history.replaceState(null, "", location.pathname + location.search);
  }
}
function showLogin(message) {
  document.getElementById("data").hidden = true;
  document.getElementById("login").hidden = false;
  document.getElementById("login-error").textContent = message || "";
  document.body.dataset.state = "login";
}
let timer = null;
async function refresh() {
  timer = null;
  const token = sessionStorage.getItem(TOKEN_KEY);
  if (!token) { showLogin(""); return; }
  try {
    const r = await fetch("/dashboard.json", { cache: "no-store", headers: { "Authorization": "Bearer " + token } });
    if (r.status === 401 || r.status === 403) {
      sessionStorage.removeItem(TOKEN_KEY);
      const body = await r.json().catch(() => ({}));
      showLogin(body.message || `the API answered ${r.status}`);
      return;
    }
    if (!r.ok) throw new Error(`dashboard.json answered ${r.status}`);
    render(await r.json());
    document.getElementById("login").hidden = true;
    document.getElementById("data").hidden = false;
    document.getElementById("error").textContent = "";
    document.body.dataset.state = "ready";
  } catch (e) {
    document.getElementById("error").textContent = "cannot refresh: " + e.message;
    document.body.dataset.state = "error";
  }
  timer = setTimeout(refresh, 2000);
}
document.getElementById("login").addEventListener("submit", ev => {
  ev.preventDefault();
  sessionStorage.setItem(TOKEN_KEY, document.getElementById("token").value.trim());
  document.getElementById("token").value = "";
  if (timer) clearTimeout(timer);
  refresh();
});
takeTokenFromFragment();
refresh();
