// kubectl modelrollout dashboard: polls api/rollouts and redraws the table and the
// timelines. Text from the cluster goes in with textContent only; the timelines are
// SVG the CLI built with every piece of text escaped.
"use strict";

const DEFAULT_POLL_MS = 2000;

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (key === "text") node.textContent = value;
    else node.setAttribute(key, value);
  }
  for (const child of children) if (child) node.append(child);
  return node;
}

function idFor(key) {
  return "rollout-" + key.replace(/[^A-Za-z0-9_-]/g, "-");
}

function weightsCell(r) {
  const cell = el("td", { class: "weights" });
  const text = `${r.weights.stable}% / ${r.weights.candidate}%` + (r.approximate ? " (approx.)" : "");
  cell.append(el("span", { class: "weights-text", text }));
  const bar = el("span", { class: "bar", title: `candidate ${r.weights.candidate}%` });
  const fill = el("span");
  fill.style.width = `${r.weights.candidate}%`;
  bar.append(fill);
  cell.append(bar);
  return cell;
}

function gatesCell(r) {
  const list = el("ul", { class: "gates" });
  for (const g of r.gates) {
    const item = el("li", { "data-gate": g.metric });
    item.append(el("span", { class: "gate-text", text: `${g.metric} ${g.value} (${g.limit})` }));
    item.append(el("span", { class: `verdict verdict-${g.verdict}`, text: g.verdict }));
    list.append(item);
  }
  if (!r.gates.length) list.append(el("li", { text: "-" }));
  const cell = el("td", { class: "gates-cell" }, list);
  if (r.lastCheck && r.lastCheck !== "-") cell.append(el("small", { text: `${r.lastCheck} ago` }));
  return cell;
}

function row(r) {
  const tr = el("tr", { "data-rollout": r.key });
  const link = el("a", { href: "#" + idFor(r.key), text: r.name });
  tr.append(
    el("td", { class: "rollout" }, link, el("div", { class: "ns", text: r.namespace })),
    el("td", { class: "model", text: r.model }),
    el("td", { class: "stable", text: r.stable }),
    el("td", { class: "candidate", text: r.candidate }),
    el("td", { class: "phase" }, el("span", { class: `badge phase-${r.phase}`, text: r.phase })),
    el("td", { class: "stage", text: r.stage }),
    el("td", { class: "step", text: r.step }),
    weightsCell(r),
    el("td", { class: "mirror", text: `${r.mirror}%` }),
    gatesCell(r),
  );
  const message = el("td", { class: "message", text: r.message });
  if (r.nextAction) message.append(el("span", { class: "next", text: r.nextAction }));
  tr.append(message);
  return tr;
}

function detail(r) {
  const section = el("section", { class: "detail", id: idFor(r.key), "data-rollout": r.key });
  section.append(el("h2", { text: `${r.namespace}/${r.name}: ${r.phase}` }));
  const figure = el("div", { class: "timeline-box" });
  const svg = new DOMParser().parseFromString(r.timelineSvg, "image/svg+xml").documentElement;
  if (svg && svg.nodeName === "svg") figure.append(document.importNode(svg, true));
  section.append(figure);
  if (r.events.length) {
    const list = el("ul", { class: "events" });
    for (const e of r.events) {
      list.append(el("li", { class: e.type, text: `${e.when} ${e.reason}: ${e.message}` }));
    }
    section.append(list);
  }
  return section;
}

function render(data) {
  document.getElementById("scope").textContent = data.scope;
  document.getElementById("updated").textContent = `updated ${data.at}`;
  const note = document.getElementById("note");
  note.hidden = !data.eventsNote;
  note.textContent = data.eventsNote || "";
  const body = document.querySelector("#rollouts tbody");
  body.replaceChildren(...data.rollouts.map(row));
  document.getElementById("empty").hidden = data.rollouts.length > 0;
  document.getElementById("details").replaceChildren(...data.rollouts.map(detail));
  document.body.dataset.updated = data.at;
}

function showError(message) {
  const box = document.getElementById("error");
  box.hidden = !message;
  box.textContent = message ? `cannot refresh: ${message}` : "";
}

let pollMs = DEFAULT_POLL_MS;

async function refresh() {
  try {
    const response = await fetch("api/rollouts", { cache: "no-store" });
    const data = await response.json();
    if (!response.ok) throw new Error(data.error || response.statusText);
    pollMs = data.pollMs || DEFAULT_POLL_MS;
    render(data);
    showError(null);
  } catch (err) {
    showError(err.message);
  } finally {
    setTimeout(refresh, pollMs);
  }
}

refresh();
