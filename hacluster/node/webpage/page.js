// The status page: polls this node's /status and /pool, redraws. Every value
// from the pool goes into the page as text, never as markup.
"use strict";

const PERIOD_MS = 2000;
const PRIORITIES = [["restart", "restart"], ["best-effort", "best effort"], ["", "not protected"]];

function el(tag, props, ...children) {
  const node = document.createElement(tag);
  Object.assign(node, props || {});
  for (const child of children) {
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function badge(text, kind) {
  return el("span", { className: "badge" + (kind ? " " + kind : "") }, text);
}

function age(seconds) {
  if (seconds === undefined || seconds === null) return "never";
  return seconds < 10 ? seconds.toFixed(2) + " s" : seconds.toFixed(0) + " s";
}

function replaceRows(tbody, rows) {
  tbody.replaceChildren(...rows);
}

async function fetchJson(path) {
  const response = await fetch(path, { cache: "no-store" });
  const body = await response.json();
  if (!response.ok) throw new Error(body.error || response.statusText);
  return body;
}

function hostRows(status, pool) {
  const roster = status.roster || {};
  const poolHosts = new Map((pool ? pool.hosts : []).map((h) => [h.uuid, h]));
  const liveset = new Set((status.liveset || []).map(String));
  const masterUuid = pool ? pool.pool.master : null;
  const rows = [];
  for (const index of Object.keys(roster).sort((a, b) => a - b)) {
    const member = roster[index];
    const host = poolHosts.get(member.uuid);
    const me = String(status.host) === index;
    const live = liveset.has(index);
    const state = [];
    if (!status.armed) state.push(badge("HA off"));
    else state.push(live ? badge("live", "ok") : badge("DOWN", "bad"));
    if (member.uuid === masterUuid || (me && status.master)) state.push(badge("master", "warn"));
    if (me) state.push(badge("this node"));
    if (host && !host.enabled) state.push(badge("disabled"));
    // a peer's phase is what its latest report said: stale once it is out of the liveset
    const phase = me ? status.phase : live ? (status.peer_phase || {})[index] || "" : "-";
    const row = el("tr", { className: status.armed && !live ? "down" : "" },
      el("td", {}, member.name),
      el("td", { className: "num" }, index),
      el("td", { className: "wrap" }, ...state),
      el("td", {}, phase),
      el("td", { className: "num" }, me ? "-" : age((status.last_beat_age || {})[index])),
      el("td", { className: "num" }, me ? "-" : age((status.last_slot_age || {})[index])),
      el("td", { className: "num" }, host ? host.vms : ""),
      el("td", { className: "num" }, host ? host.memory.free : ""));
    row.dataset.host = member.name;
    row.dataset.live = String(live);
    rows.push(row);
  }
  return rows;
}

function vmGroups(pool, names) {
  if (!pool) return [el("p", { className: "muted" }, "the master's view is not available now")];
  const out = [];
  for (const [priority, label] of PRIORITIES) {
    const vms = pool.vms.filter((vm) => vm.priority === priority)
      .sort((a, b) => a.order - b.order || a.name.localeCompare(b.name));
    if (!vms.length) continue;
    out.push(el("h3", {}, label));
    const body = el("tbody", {}, ...vms.map((vm) => {
      const row = el("tr", { className: vm.power === "running" ? "" : "down" },
        el("td", {}, vm.name), el("td", { className: "num" }, vm.order),
        el("td", {}, vm.power), el("td", {}, names.get(vm.host) || vm.host || "-"));
      row.dataset.vm = vm.name;
      return row;
    }));
    out.push(el("table", {}, el("thead", {}, el("tr", {}, el("th", {}, "VM"),
      el("th", {}, "order"), el("th", {}, "power"), el("th", {}, "runs on"))), body));
  }
  return out.length ? out : [el("p", { className: "muted" }, "no VMs")];
}

function failoverRows(pool, names) {
  if (!pool) return [];
  const vmNames = new Map(pool.vms.map((vm) => [vm.uuid, vm.name]));
  return (pool.failover || []).map((scenario) => {
    const moves = Object.entries(scenario.placement)
      .map(([vm, host]) => `${vmNames.get(vm) || vm} → ${names.get(host) || host}`);
    let text = moves.join(", ") || "nothing to move";
    if (scenario.verdict !== "fits") text = `${scenario.verdict}: ${scenario.moves} VM(s) would stay down`;
    return el("tr", { className: scenario.verdict === "fits" ? "" : "down" },
      el("td", {}, names.get(scenario.host) || scenario.host), el("td", { className: "wrap" }, text));
  });
}

function faultView(status) {
  const fault = status.last_fault;
  if (!fault || !fault.steps || !fault.steps.length) return [el("span", {}, "none since this node started")];
  const began = fault.steps[0].time;
  const steps = fault.steps.map((step) => el("li", {},
    `+${(step.time - began).toFixed(2)} s  ${step.text}`));
  const head = fault.ended ? `took ${(fault.ended - began).toFixed(2)} s` : "under way";
  return [el("div", {}, `began ${new Date(began * 1000).toLocaleTimeString()}, ${head}`),
    el("ol", { className: "timeline" }, ...steps)];
}

function evidenceView(pool, names) {
  const book = pool && pool.evidence ? pool.evidence : { names: {}, records: [] };
  const records = book.records;
  if (!records.length) return [el("span", {}, "no removal or restart since this master took office")];
  const byIndex = (i) => book.names[String(i)] || `#${i}`;
  return records.slice().reverse().map((r) => {
    const when = new Date(r.time * 1000).toLocaleTimeString();
    if (r.kind === "restart") {
      return el("div", { className: "evidence" },
        el("strong", {}, `${when} start ${r.name || r.vm} on ${names.get(r.to) || r.to}`),
        el("div", {}, `${r.priority}, order ${r.order}; was on ${names.get(r.was_on) || r.was_on || "-"}`),
        el("div", {}, `why there: ${r.why}`));
    }
    const removed = r.removals.map((g) => g.proof === "unseen"
      ? `${byIndex(g.host)}: unseen ${g.unseen_for.toFixed(2)} s >= window ${g.window.toFixed(2)} s (lease ran out)`
      : `${byIndex(g.host)}: ${g.proof}`);
    const views = r.views.map((v) => `${byIndex(v.host)} hears [${v.hbdomain.map(byIndex).join(", ")}]`
      + `, SR [${v.sfdomain.map(byIndex).join(", ")}]`);
    return el("div", { className: "evidence" },
      el("strong", {}, `${when} removed ${r.removed.map(byIndex).join(", ")} (${r.rule})`),
      ...removed.map((t) => el("div", {}, t)),
      el("div", { className: "muted" }, `views: ${views.join("; ")}`));
  });
}

function alertItems(pool) {
  const alerts = pool ? pool.alerts || [] : [];
  if (!alerts.length) return [el("li", { className: "muted" }, "none")];
  return alerts.slice().reverse().map((a) =>
    el("li", {}, `${new Date(a.time * 1000).toLocaleTimeString()} ${a.name}: ${a.body}`));
}

function header(status, pool, poolError) {
  const badges = [];
  if (pool) {
    document.getElementById("title").textContent = `hacluster: pool ${pool.pool.name}`;
    badges.push(pool.pool.ha_enabled ? badge(`HA on, T = ${pool.pool.timeout} s`, "ok")
      : badge("HA off", "warn"));
    const t = pool.pool.tolerance;
    badges.push(badge(`plan: ${t.max} host failure(s) tolerated, ${t.configured} configured`,
      t.overcommitted ? "bad" : "ok"));
  } else {
    badges.push(badge(`no master view: ${poolError}`, "warn"));
  }
  badges.push(badge(`this node: host ${status.host}, ${status.phase}`,
    status.phase === "NORMAL" ? "ok" : "warn"));
  document.getElementById("badges").replaceChildren(...badges);
}

async function refresh() {
  const freshness = document.getElementById("freshness");
  let status;
  try {
    status = await fetchJson("status");
  } catch (error) {
    freshness.textContent = `this node does not answer: ${error.message}`;
    freshness.className = "stale";
    return;
  }
  let pool = null, poolError = "";
  try {
    pool = await fetchJson("pool");
  } catch (error) {
    poolError = error.message;
  }
  const names = new Map(Object.values(status.roster || {}).map((m) => [m.uuid, m.name]));
  header(status, pool, poolError);
  replaceRows(document.querySelector("#hosts tbody"), hostRows(status, pool));
  document.getElementById("hosts-note").textContent =
    `liveset [${(status.liveset || []).join(", ")}] as host ${status.host} sees it`;
  document.getElementById("vms").replaceChildren(...vmGroups(pool, names));
  replaceRows(document.querySelector("#failover tbody"), failoverRows(pool, names));
  document.getElementById("tolerance").textContent = pool
    ? `plan covers ${pool.pool.tolerance.max} host failure(s) (${pool.pool.tolerance.exact ? "exact" : "lower bound"})`
    : "";
  document.getElementById("fault").replaceChildren(...faultView(status));
  document.getElementById("alerts").replaceChildren(...alertItems(pool));
  document.getElementById("evidence").replaceChildren(...evidenceView(pool, names));
  document.getElementById("served-by").textContent = `host ${status.host} (${status.address})`;
  freshness.textContent = `updated ${new Date().toLocaleTimeString()}`;
  freshness.className = "muted";
  document.body.dataset.updated = String(Date.now());
}

document.getElementById("period").textContent = String(PERIOD_MS / 1000);
refresh();
setInterval(refresh, PERIOD_MS);
