// Small DOM helpers, FHIR display helpers and the inline SVG line chart. No framework.

/** Create an element: h("p", {class: "x", onclick: f}, "text", child, …). */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith("on") && typeof v === "function") el.addEventListener(k.slice(2), v);
    else if (k === "class") el.className = v;
    else if (v === true) el.setAttribute(k, "");
    else el.setAttribute(k, String(v));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const c of children.flat(Infinity)) {
    if (c === undefined || c === null || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
}

const SVG_NS = "http://www.w3.org/2000/svg";
export function s(tag, attrs = {}, ...children) {
  const el = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, String(v));
  append(el, children);
  return el;
}

/** Replace the content of `el`. */
export function mount(el, ...children) {
  el.replaceChildren();
  append(el, children);
}

/** An alert box with a message (role=alert, read out at once). */
export function alertBox(msg, kind = "error") {
  return h("div", { class: `alert ${kind}`, role: kind === "error" ? "alert" : "status" }, msg);
}

export function loading(what = "Loading") {
  return h("p", { class: "muted", role: "status" }, `${what}…`);
}

/** A HumanName as one line. */
export function humanName(p) {
  const n = (p?.name || [])[0];
  if (!n) return p?.id ? `${p.resourceType || ""}/${p.id}` : "(no name)";
  if (n.text) return n.text;
  return [...(n.prefix || []), ...(n.given || []), n.family].filter(Boolean).join(" ");
}

/** The text of a CodeableConcept. */
export function conceptText(c) {
  if (!c) return "";
  return c.text || (c.coding || []).map((x) => x.display || x.code).filter(Boolean)[0] || "";
}

/** The local id in "Type/id" (or a full URL ending so). */
export function refId(ref, type) {
  const r = typeof ref === "string" ? ref : ref?.reference || "";
  const m = new RegExp(`(?:^|/)${type}/([^/]+)$`).exec(r);
  return m ? m[1] : null;
}

/** A date or dateTime shown as YYYY-MM-DD (HH:MM). */
export function fmtDate(d, withTime = false) {
  if (!d) return "—";
  if (!withTime || d.length <= 10) return d.slice(0, 10);
  const t = new Date(d);
  if (Number.isNaN(t.getTime())) return d;
  return `${d.slice(0, 10)} ${t.toTimeString().slice(0, 5)}`;
}

/** Today as YYYY-MM-DD in the browser's time zone. */
export function today() {
  const t = new Date();
  const p = (n) => String(n).padStart(2, "0");
  return `${t.getFullYear()}-${p(t.getMonth() + 1)}-${p(t.getDate())}`;
}

export function addDays(iso, n) {
  const t = new Date(`${iso}T00:00:00`);
  t.setDate(t.getDate() + n);
  const p = (x) => String(x).padStart(2, "0");
  return `${t.getFullYear()}-${p(t.getMonth() + 1)}-${p(t.getDate())}`;
}

/** A badge (class by kind: high, moderate, low, overdue, …). */
export function badge(text, kind = "") {
  return h("span", { class: `badge ${kind}` }, text);
}

/**
 * A small line chart of one or more series over time, as inline SVG.
 * series: [{name, points: [{t: Date-parsable, v: number}], cls}], target: {low?, high?} band.
 */
export function lineChart({ title, series, unit = "", target, width = 320, height = 140 }) {
  const pts = series.flatMap((x) => x.points);
  const fig = h("figure", { class: "chart" });
  if (!pts.length) {
    fig.append(h("figcaption", {}, title), h("p", { class: "muted" }, "No measurements yet."));
    return fig;
  }
  const pad = { l: 36, r: 8, t: 8, b: 22 };
  const ts = pts.map((p) => new Date(p.t).getTime());
  let vs = pts.map((p) => p.v);
  if (target?.low !== undefined) vs = vs.concat(target.low);
  if (target?.high !== undefined) vs = vs.concat(target.high);
  let [t0, t1] = [Math.min(...ts), Math.max(...ts)];
  if (t0 === t1) [t0, t1] = [t0 - 86400000, t1 + 86400000];
  let [v0, v1] = [Math.min(...vs), Math.max(...vs)];
  const span = v1 - v0 || Math.abs(v1) || 1;
  v0 -= span * 0.1;
  v1 += span * 0.1;
  const x = (t) => pad.l + ((t - t0) / (t1 - t0)) * (width - pad.l - pad.r);
  const y = (v) => height - pad.b - ((v - v0) / (v1 - v0)) * (height - pad.t - pad.b);
  const last = series.map((sr) => sr.points.at(-1)).filter(Boolean);
  const label = `${title}: ${series
    .map((sr) => `${sr.name} latest ${sr.points.at(-1)?.v ?? "none"}${unit}`)
    .join(", ")}${target ? `; target ${describeTarget(target, unit)}` : ""}`;
  const svg = s("svg", { viewBox: `0 0 ${width} ${height}`, role: "img", "aria-label": label, class: "chart-svg" });
  if (target) {
    const hi = target.high ?? v1;
    const lo = target.low ?? v0;
    svg.append(s("rect", { x: pad.l, y: y(hi), width: width - pad.l - pad.r, height: Math.max(0, y(lo) - y(hi)), class: "target-band" }));
  }
  svg.append(
    s("line", { x1: pad.l, y1: height - pad.b, x2: width - pad.r, y2: height - pad.b, class: "axis" }),
    s("line", { x1: pad.l, y1: pad.t, x2: pad.l, y2: height - pad.b, class: "axis" }),
    s("text", { x: pad.l - 4, y: y(v1 - span * 0.1) + 4, class: "tick", "text-anchor": "end" }, fmtNum(v1 - span * 0.1)),
    s("text", { x: pad.l - 4, y: y(v0 + span * 0.1) + 4, class: "tick", "text-anchor": "end" }, fmtNum(v0 + span * 0.1)),
    s("text", { x: pad.l, y: height - 6, class: "tick" }, new Date(t0).toISOString().slice(0, 10)),
    s("text", { x: width - pad.r, y: height - 6, class: "tick", "text-anchor": "end" }, new Date(t1).toISOString().slice(0, 10)),
  );
  series.forEach((sr, i) => {
    const sorted = [...sr.points].sort((a, b) => new Date(a.t) - new Date(b.t));
    const d = sorted.map((p, j) => `${j ? "L" : "M"}${x(new Date(p.t).getTime()).toFixed(1)},${y(p.v).toFixed(1)}`).join(" ");
    svg.append(s("path", { d, class: `series s${i}` }));
    for (const p of sorted) {
      svg.append(s("circle", { cx: x(new Date(p.t).getTime()), cy: y(p.v), r: 3, class: `dot s${i}` }, s("title", {}, `${fmtDate(p.t)}: ${p.v}${unit}`)));
    }
  });
  fig.append(
    h("figcaption", {}, title, " — latest ", last.map((p, i) => `${series[i].name ? series[i].name + " " : ""}${p.v}${unit}`).join(" / "), target ? ` (target ${describeTarget(target, unit)})` : ""),
    svg,
  );
  return fig;
}

function fmtNum(v) {
  return Math.abs(v) >= 100 ? v.toFixed(0) : v.toFixed(1);
}

export function describeTarget(t, unit = "") {
  if (t.low !== undefined && t.high !== undefined) return `${t.low}–${t.high}${unit}`;
  if (t.high !== undefined) return `< ${t.high}${unit}`;
  if (t.low !== undefined) return `> ${t.low}${unit}`;
  return "";
}
