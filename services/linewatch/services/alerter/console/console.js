// The alarm console: the operator API's alarms, pushed as server-sent events over fetch (the token goes in the
// Authorization header, never in a URL), and its actions. No framework, no CDN: this file is all of it.
"use strict";

const RANK = { critical: 4, high: 3, medium: 2, low: 1 };
const SHAPE = { critical: "◆", high: "▲", medium: "●", low: "■" }; // priority by shape and word, not colour alone
const ACKABLE = new Set(["unacknowledged", "rtn_unacknowledged"]);
const $ = (id) => document.getElementById(id);
let token = sessionStorage.getItem("linewatch-token");
let me = null;
let rows = [];
let streaming = null;
let pending = null; // the shelve, out-of-service or comment being confirmed
const opened = new Set(); // alarms whose trail and lots are open: kept open across updates
const cellsOf = new Map(); // lot -> {text, at}: the cells to quarantine, asked again after a minute

function raisedAt(row) {
  const raised = (row.trail || []).filter((step) => step.state === "unacknowledged").pop();
  return row.raised_at || (raised && raised.at) || "";
}

function headers() {
  return { Authorization: `Bearer ${token}`, "Content-Type": "application/json" };
}

function say(text, refused = false) {
  const banner = $("banner");
  banner.textContent = text;
  banner.className = refused ? "refused" : "";
  banner.hidden = !text;
}

async function signIn(candidate) {
  const answer = await fetch("/me", { headers: { Authorization: `Bearer ${candidate}` } });
  if (!answer.ok) {
    const body = await answer.json().catch(() => ({}));
    alert(`Sign-in refused (${answer.status}): ${body.error || "unknown token"}`);
    return;
  }
  token = candidate;
  sessionStorage.setItem("linewatch-token", token);
  me = await answer.json();
  $("who").textContent = `${me.user} (${me.role})`;
  $("sign-in").hidden = true;
  $("console").hidden = false;
  $("sign-out").hidden = false;
  listen();
}

function signOut() {
  sessionStorage.removeItem("linewatch-token");
  token = null;
  me = null;
  if (streaming) streaming.abort();
  $("console").hidden = true;
  $("sign-out").hidden = true;
  $("sign-in").hidden = false;
  $("who").textContent = "";
  $("token").value = "";
  say("");
}

async function listen() {
  streaming = new AbortController();
  try {
    const answer = await fetch("/alarms/stream", { headers: headers(), signal: streaming.signal });
    if (!answer.ok) throw new Error(`stream refused: ${answer.status}`);
    const reader = answer.body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += decoder.decode(value, { stream: true });
      let end;
      while ((end = buffer.indexOf("\n\n")) >= 0) {
        const message = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        const data = message.split("\n").filter((l) => l.startsWith("data: ")).map((l) => l.slice(6)).join("\n");
        if (data) {
          rows = JSON.parse(data);
          $("updated").textContent = `updated ${new Date().toISOString().slice(11, 19)} UTC`;
          render();
        }
      }
    }
  } catch (error) {
    if (streaming.signal.aborted) return;
    say(`Connection to the alerter lost (${error.message}); reconnecting…`);
  }
  if (token) setTimeout(listen, 1000);
}

function fillFilter(id, values) {
  const select = $(id);
  const chosen = select.value;
  select.replaceChildren(new Option("all", ""), ...[...new Set(values)].filter(Boolean).sort().map((v) => new Option(v, v)));
  select.value = chosen;
}

function visible() {
  const want = { area: $("f-area").value, line: $("f-line").value, priority: $("f-priority").value, state: $("f-state").value };
  return rows
    .filter((r) => Object.entries(want).every(([key, value]) => !value || r[key] === value))
    .sort((a, b) => (RANK[b.priority] || 0) - (RANK[a.priority] || 0) || raisedAt(b).localeCompare(raisedAt(a)));
}

function grafanaLink(row) {
  if (!me.grafana_url) return null;
  const at = Date.parse(raisedAt(row)) || Date.now();
  const params = new URLSearchParams({ "var-area": row.area || "", "var-line": row.line || "", "var-equipment": row.equipment_id || "", from: at - 1800000, to: at + 1800000 });
  return `${me.grafana_url.replace(/\/$/, "")}/d/linewatch-equipment?${params}`;
}

function button(label, onClick) {
  const element = document.createElement("button");
  element.textContent = label;
  element.addEventListener("click", onClick);
  return element;
}

function cell(row, text, className) {
  const td = row.insertCell();
  td.textContent = text;
  if (className) td.className = className;
  return td;
}

function render() {
  fillFilter("f-area", rows.map((r) => r.area));
  fillFilter("f-line", rows.map((r) => r.line));
  fillFilter("f-priority", rows.map((r) => r.priority));
  fillFilter("f-state", rows.map((r) => r.state));
  const body = $("alarms").tBodies[0];
  body.replaceChildren();
  const shown = visible();
  $("empty").hidden = shown.length > 0;
  for (const alarm of shown) {
    const row = body.insertRow();
    row.className = `p-${alarm.priority} ${alarm.state}`;
    row.dataset.alarmId = alarm.alarm_id;
    cell(row, `${SHAPE[alarm.priority] || "?"} ${alarm.priority.toUpperCase()}`, "priority");
    cell(row, raisedAt(alarm).slice(0, 19).replace("T", " "), "raised");
    cell(row, alarm.state.replaceAll("_", " ") + (alarm.shelved_until ? ` until ${alarm.shelved_until.slice(0, 16)}` : ""), "state");
    cell(row, [alarm.area, alarm.line, alarm.equipment_id].filter(Boolean).join(" / "));
    cell(row, `${alarm.alarm_id}: ${alarm.message}`);
    cell(row, alarm.corrective_action || "Not rationalized yet: see the alarm's procedure");
    const actions = row.insertCell();
    if (ACKABLE.has(alarm.state)) actions.append(button("Acknowledge", () => act(alarm.alarm_id, "acknowledge")));
    if (alarm.state === "shelved") actions.append(button("Unshelve", () => act(alarm.alarm_id, "unshelve")));
    else if (alarm.state !== "out_of_service") actions.append(button("Shelve…", () => confirmRemoval(alarm, "shelve")));
    if (alarm.state === "out_of_service") actions.append(button("Return to service", () => act(alarm.alarm_id, "return_to_service")));
    else actions.append(button("Out of service…", () => confirmRemoval(alarm, "remove_from_service")));
    actions.append(button("Comment…", () => confirmRemoval(alarm, "comment")));
    const link = grafanaLink(alarm);
    if (link) {
      const a = document.createElement("a");
      a.href = link;
      a.target = "_blank";
      a.textContent = "Grafana";
      actions.append(a);
    }
    const details = document.createElement("details");
    const summary = document.createElement("summary");
    summary.textContent = "Audit trail and lots";
    const list = document.createElement("ul");
    list.className = "trail";
    for (const step of alarm.trail || []) {
      const item = document.createElement("li");
      item.textContent = `${(step.at || "").slice(0, 19).replace("T", " ")} ${step.state.replaceAll("_", " ")} — ${step.user || "system"}: ${step.comment || step.cause}`;
      list.append(item);
    }
    const lots = document.createElement("p");
    lots.textContent = alarm.lots && alarm.lots.length ? `Lots affected: ${alarm.lots.join(", ")}` : "No lot affected.";
    const cells = document.createElement("ul");
    cells.className = "cells";
    const perLot = (alarm.lots || []).map((lot) => [lot, cells.appendChild(document.createElement("li"))]);
    details.addEventListener("toggle", () => {
      if (!details.open) return opened.delete(alarm.alarm_id);
      opened.add(alarm.alarm_id);
      for (const [lot, item] of perLot) showCells(lot, item);
    });
    details.open = opened.has(alarm.alarm_id);
    details.append(summary, list, lots, cells);
    actions.append(details);
  }
}

async function showCells(lot, item) {
  const known = cellsOf.get(lot);
  if (known && Date.now() - known.at < 60000) {
    item.textContent = known.text;
    return;
  }
  item.textContent = `lot ${lot}: looking up its cells…`;
  const answer = await fetch(`/lots/${encodeURIComponent(lot)}/cells`, { headers: headers() });
  const reply = await answer.json().catch(() => ({}));
  if (!answer.ok) {
    item.textContent = `lot ${lot}: cells not known (${answer.status}: ${reply.error || answer.statusText})`;
    return;
  }
  const text = `Cells to quarantine from lot ${lot} (${reply.cells.length}): ${reply.cells.join(", ") || "none built yet"}`;
  cellsOf.set(lot, { text, at: Date.now() });
  item.textContent = text;
}

function confirmRemoval(alarm, action) {
  pending = { alarm_id: alarm.alarm_id, action };
  const verb = { shelve: "Shelve", remove_from_service: "Take out of service", comment: "Comment on" }[action];
  $("remove-title").textContent = `${verb} ${alarm.alarm_id}`;
  $("remove-reason-label").textContent = action === "comment" ? "Comment" : "Reason";
  $("remove-minutes-label").hidden = action !== "shelve";
  $("remove-form").hidden = false;
  $("remove-reason").focus();
}

async function act(alarmId, action, comment = "", durationS = null) {
  const body = { alarm_id: alarmId, action, comment };
  if (durationS) body.duration_s = durationS;
  const answer = await fetch("/actions", { method: "POST", headers: headers(), body: JSON.stringify(body) });
  const reply = await answer.json().catch(() => ({}));
  if (answer.status === 202) say(`${action.replaceAll("_", " ")} ${alarmId}: accepted`);
  else say(`${answer.status} ${answer.status === 403 ? "refused" : "error"}: ${reply.error || answer.statusText}`, true);
  return answer.status;
}

$("sign-in").addEventListener("submit", (event) => {
  event.preventDefault();
  signIn($("token").value);
});
$("sign-out").addEventListener("click", signOut);
for (const id of ["f-area", "f-line", "f-priority", "f-state"]) $(id).addEventListener("change", render);
$("ack-visible").addEventListener("click", async () => {
  for (const alarm of visible().filter((r) => ACKABLE.has(r.state))) await act(alarm.alarm_id, "acknowledge");
});
$("remove-cancel").addEventListener("click", () => { $("remove-form").hidden = true; pending = null; });
$("remove-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  if (!pending) return;
  const minutes = Number($("remove-minutes").value);
  await act(pending.alarm_id, pending.action, $("remove-reason").value, pending.action === "shelve" ? minutes * 60 : null);
  $("remove-form").hidden = true;
  $("remove-reason").value = "";
  pending = null;
});
if (token) signIn(token);
