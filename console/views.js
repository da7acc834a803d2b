// The console's screens: Today ($worklist), Caseload ($caseload), Patient, Program ($icm-metrics).
import * as api from "./api.js";
import { h, mount, alertBox, loading, humanName, conceptText, refId, fmtDate, today as todayIso, addDays, badge, lineChart, describeTarget } from "./ui.js";

const OVERDUE = "http://icm-fhir.org/StructureDefinition/task-overdue";
const REFERRAL = "http://icm-fhir.org/StructureDefinition/referral-attention";
const ADMITTED = "http://icm-fhir.org/StructureDefinition/patient-admitted";
const CONTRIBUTION = "http://icm-fhir.org/fhir/StructureDefinition/risk-contribution";
const RISK_SCORE = "http://icm-fhir.org/fhir/StructureDefinition/risk-score";
const LOINC = "http://loinc.org";

function me() {
  const id = api.practitionerId();
  if (!id) throw new Error("The token names no Practitioner (fhirUser claim): the worklist and caseload need one.");
  return id;
}

/** Names of the patients referenced, by id (one search). */
async function patientNames(ids) {
  const uniq = [...new Set(ids.filter(Boolean))];
  const names = new Map();
  if (!uniq.length) return names;
  const b = await api.search("Patient", { _id: uniq.join(","), _count: String(uniq.length) });
  for (const p of api.resources(b, "Patient")) names.set(p.id, humanName(p));
  return names;
}

function patientLink(id, names) {
  return h("a", { href: `#/patient/${id}` }, names.get(id) || `Patient/${id}`);
}

// ---------------------------------------------------------------------------------------------
// Today

/** The transitions offered for a Task status: [label, target status, needs a reason]. */
const ACTIONS = {
  draft: [["Request", "requested"]],
  requested: [["Accept", "accepted"], ["Reject", "rejected", true]],
  received: [["Accept", "accepted"], ["Reject", "rejected", true]],
  accepted: [["Start", "in-progress"], ["Cancel", "cancelled", true]],
  ready: [["Start", "in-progress"], ["Complete", "completed"], ["Cancel", "cancelled", true]],
  "in-progress": [["Complete", "completed"], ["Put on hold", "on-hold", true], ["Failed", "failed", true]],
  "on-hold": [["Resume", "in-progress"], ["Cancel", "cancelled", true]],
};

const PRIORITY_RANK = { stat: 0, asap: 1, urgent: 2, routine: 3 };

function ext(entry, url) {
  return (entry.search?.extension || []).find((e) => e.url === url);
}

function due(task) {
  return task.restriction?.period?.end || null;
}

/**
 * Move a Task to `status` with the state machine's reason: read the current version, change
 * the status, update with If-Match. A refusal throws the server's OperationOutcome text.
 */
async function transition(taskId, status, reason) {
  const { body: task, etag } = await api.fhir(`Task/${taskId}`, { full: true });
  task.status = status;
  if (reason) task.statusReason = { text: reason };
  if (status === "accepted" && !task.owner) task.owner = { reference: `Practitioner/${me()}` };
  return api.fhir(`Task/${taskId}`, { method: "PUT", body: task, ifMatch: etag || undefined });
}

export async function today(main) {
  mount(main, h("h1", {}, "Today"), loading("Loading your worklist"));
  const wl = await api.fhir(`Practitioner/${me()}/$worklist?_count=200`);
  const entries = (wl.entry || []).filter((e) => e.resource?.resourceType === "Task");
  const names = await patientNames(entries.map((e) => refId(e.resource.for, "Patient")));
  const now = todayIso();
  const groups = { overdue: [], today: [], upcoming: [] };
  for (const e of entries) {
    const d = due(e.resource);
    if (ext(e, OVERDUE)?.valueBoolean || (d && d.slice(0, 10) < now)) groups.overdue.push(e);
    else if (d && d.slice(0, 10) === now) groups.today.push(e);
    else groups.upcoming.push(e);
  }
  const byPriority = (a, b) =>
    (PRIORITY_RANK[a.resource.priority || "routine"] ?? 3) - (PRIORITY_RANK[b.resource.priority || "routine"] ?? 3) ||
    String(due(a.resource) || "9999").localeCompare(String(due(b.resource) || "9999"));
  const section = (key, title) => {
    const list = groups[key].sort(byPriority);
    return h(
      "section",
      { class: "group", "aria-labelledby": `h-${key}` },
      h("h2", { id: `h-${key}` }, title, " ", badge(String(list.length), key === "overdue" && list.length ? "overdue" : "")),
      list.length ? h("ul", { class: "tasks", id: `list-${key}` }, list.map((e) => taskRow(e, names, () => today(main)))) : h("p", { class: "muted" }, "Nothing here."),
    );
  };
  mount(
    main,
    h("h1", {}, "Today"),
    h("p", { class: "muted" }, `${entries.length} open task${entries.length === 1 ? "" : "s"} on your worklist (Practitioner/${me()}/$worklist).`),
    h("div", { id: "today-status", "aria-live": "polite" }),
    section("overdue", "Overdue"),
    section("today", "Due today"),
    section("upcoming", "Upcoming"),
  );
}

function taskRow(entry, names, reload) {
  const t = entry.resource;
  const pid = refId(t.for, "Patient");
  const status = h("div", { class: "task-status", "aria-live": "polite" });
  const flags = [];
  if (ext(entry, OVERDUE)?.valueBoolean) flags.push(badge("overdue", "overdue"));
  const ref = ext(entry, REFERRAL);
  if (ref) flags.push(badge(`referral ${ref.valueCode}`, "moderate"));
  if (ext(entry, ADMITTED)) flags.push(badge("in hospital now", "high"));
  const q = (t.input || []).map((i) => i.valueCanonical).find((c) => c && c.includes("/Questionnaire/"));
  const reasonId = `reason-${t.id}`;
  const reasonBox = h("input", { id: reasonId, name: "reason", type: "text", class: "reason", "aria-describedby": `${reasonId}-hint` });
  const reasonWrap = h(
    "div",
    { class: "reason-wrap", hidden: true },
    h("label", { for: reasonId }, "Reason"),
    reasonBox,
    h("span", { id: `${reasonId}-hint`, class: "muted" }, " required for this change"),
  );
  let pending = null;
  const buttons = (ACTIONS[t.status] || []).map(([label, to, needsReason]) =>
    h(
      "button",
      {
        type: "button",
        class: needsReason ? "secondary" : "",
        "data-action": to,
        onclick: async () => {
          if (needsReason && (pending !== to || !reasonBox.value.trim())) {
            pending = to;
            reasonWrap.hidden = false;
            reasonBox.focus();
            mount(status, alertBox(`Give a reason, then press “${label}” again.`, "info"));
            return;
          }
          mount(status, loading(`${label}`));
          try {
            await transition(t.id, to, needsReason ? reasonBox.value.trim() : undefined);
            const msg = `Task “${t.description || conceptText(t.code)}” is now ${to}.`;
            await reload();
            const s = document.getElementById("today-status");
            if (s) mount(s, alertBox(msg, "ok"));
          } catch (e) {
            mount(status, alertBox(`Refused: ${e.message}`));
          }
        },
      },
      label,
    ),
  );
  return h(
    "li",
    { class: `task prio-${t.priority || "routine"}`, "data-task": t.id, "data-status": t.status },
    h(
      "div",
      { class: "task-main" },
      h("strong", { class: "task-title" }, t.description || conceptText(t.code) || `Task/${t.id}`),
      " ",
      badge(t.priority || "routine", `prio ${t.priority || "routine"}`),
      " ",
      badge(t.status, "status"),
      " ",
      flags,
      h(
        "div",
        { class: "muted" },
        pid ? patientLink(pid, names) : "",
        " · due ",
        fmtDate(due(t)),
        q ? [" · ", h("a", { href: `#/assess/${pid}/${q.split("/").pop()}` }, "open assessment")] : "",
      ),
    ),
    h("div", { class: "task-actions" }, buttons, reasonWrap),
    status,
  );
}

// ---------------------------------------------------------------------------------------------
// Caseload

function parts(p) {
  const out = {};
  for (const x of p.part || []) {
    const v = x.valueReference ?? x.valueInteger ?? x.valueDateTime ?? x.valueCode ?? x.valueString ?? x.valueBoolean;
    if (out[x.name] === undefined) out[x.name] = v;
    else out[x.name] = [].concat(out[x.name], v);
  }
  return out;
}

export async function caseload(main) {
  mount(main, h("h1", {}, "Caseload"), loading("Loading your caseload"));
  const cl = await api.fhir(`Practitioner/${me()}/$caseload`);
  const rows = (cl.parameter || []).filter((p) => p.name === "patient").map(parts);
  const ids = rows.map((r) => refId(r.patient, "Patient"));
  const names = await patientNames(ids);
  // Admissions and ED visits of the last 30 days (one search over the caseload).
  const recent = new Map();
  if (ids.length) {
    const enc = await api.search("Encounter", {
      subject: ids.map((i) => `Patient/${i}`).join(","),
      class: "IMP,EMER,ACUTE,OBSENC",
      date: `ge${addDays(todayIso(), -30)}`,
      _count: "500",
    });
    for (const e of api.resources(enc, "Encounter")) {
      const pid = refId(e.subject, "Patient");
      const kind = e.class?.code === "EMER" ? "ED visit" : "admission";
      recent.set(pid, [...(recent.get(pid) || []), `${kind} ${fmtDate(e.period?.start)}`]);
    }
  }
  const tierRank = { high: 0, moderate: 1, low: 2 };
  rows.sort((a, b) => (tierRank[a.riskTier] ?? 3) - (tierRank[b.riskTier] ?? 3));
  mount(
    main,
    h("h1", {}, "Caseload"),
    h("p", { class: "muted" }, `${rows.length} patient${rows.length === 1 ? "" : "s"}, highest risk first.`),
    rows.length
      ? h(
          "div",
          { class: "table-wrap" },
          h(
            "table",
            { id: "caseload" },
            h("caption", { class: "sr-only" }, "Patients on your care teams"),
            h("thead", {}, h("tr", {}, ["Patient", "Risk", "Last contact", "Open tasks", "Overdue", "Admissions / ED"].map((c) => h("th", { scope: "col" }, c)))),
            h(
              "tbody",
              {},
              rows.map((r) => {
                const pid = refId(r.patient, "Patient");
                const flags = [];
                if (r.currentAdmission) flags.push(badge("in hospital now", "high"));
                for (const f of recent.get(pid) || []) flags.push(badge(f, "moderate"));
                return h(
                  "tr",
                  { "data-patient": pid },
                  h("th", { scope: "row" }, patientLink(pid, names)),
                  h("td", {}, badge(r.riskTier || "not stratified", r.riskTier || "")),
                  h("td", {}, fmtDate(r.lastCompletedTask)),
                  h("td", { class: "num" }, String(r.openTasks ?? 0)),
                  h("td", { class: "num" }, r.overdueTasks ? badge(String(r.overdueTasks), "overdue") : "0"),
                  h("td", {}, flags.length ? flags : h("span", { class: "muted" }, "none in 30 days")),
                );
              }),
            ),
          ),
        )
      : h("p", { class: "muted" }, "No patients on your active care teams."),
  );
}

// ---------------------------------------------------------------------------------------------
// Patient

// The Questionnaires a care manager can fill in: every active one the server holds (the shipped
// program instruments are stored resources), found by a search like any other, once a session.
let questionnaireList = null;
export function questionnaires() {
  if (!questionnaireList) {
    questionnaireList = api
      .search("Questionnaire", { status: "active", _sort: "title", _count: "100" })
      .then((b) => api.resources(b, "Questionnaire").map((q) => [q.id, q.title || q.name || q.id]))
      .catch((e) => {
        questionnaireList = null;
        throw e;
      });
  }
  return questionnaireList;
}

function obsPoints(obs, componentCode) {
  const out = [];
  for (const o of obs) {
    const t = o.effectiveDateTime || o.effectivePeriod?.start || o.issued;
    let q = o.valueQuantity;
    if (componentCode) q = (o.component || []).find((c) => (c.code?.coding || []).some((x) => x.code === componentCode))?.valueQuantity;
    if (t && typeof q?.value === "number") out.push({ t, v: q.value });
  }
  return out.sort((a, b) => new Date(a.t) - new Date(b.t));
}

function goalTarget(goal) {
  const t = (goal.target || [])[0];
  if (!t) return { text: "" };
  const q = t.detailQuantity;
  const r = t.detailRange;
  const code = (t.measure?.coding || []).map((c) => c.code)[0];
  if (q) {
    const cmp = q.comparator || "=";
    const target = cmp.startsWith("<") ? { high: q.value } : cmp.startsWith(">") ? { low: q.value } : { low: q.value, high: q.value };
    return { code, text: `${cmp} ${q.value} ${q.unit || ""}`.trim(), target };
  }
  if (r) return { code, text: `${r.low?.value ?? ""}–${r.high?.value ?? ""} ${r.high?.unit || r.low?.unit || ""}`, target: { low: r.low?.value, high: r.high?.value } };
  return { code, text: t.detailString || conceptText(t.detailCodeableConcept) || "" };
}

export async function patient(main, id) {
  mount(main, h("h1", {}, "Patient"), loading("Loading the patient"));
  let p;
  try {
    p = await api.fhir(`Patient/${id}`);
  } catch (e) {
    mount(
      main,
      h("h1", {}, "Patient"),
      alertBox(`Refused (HTTP ${e.status || "?"}): ${e.message}`),
      h("p", {}, "You see only patients on your active care teams."),
    );
    return;
  }
  const [teams, plans, tasks, episodes, risks, a1c, bp, qs] = await Promise.all([
    api.search("CareTeam", { patient: id, status: "active", _include: "CareTeam:participant" }),
    api.search("CarePlan", { patient: id, status: "active,draft", _include: "CarePlan:goal" }),
    api.search("Task", { patient: id, _sort: "-_lastUpdated", _count: "50" }),
    api.search("EpisodeOfCare", { patient: id, _sort: "-_lastUpdated", _include: "EpisodeOfCare:care-manager" }),
    api.search("RiskAssessment", { subject: `Patient/${id}`, _sort: "-date", _count: "1" }),
    api.search("Observation", { patient: id, code: `${LOINC}|4548-4`, _sort: "date", _count: "100" }),
    api.search("Observation", { patient: id, code: `${LOINC}|85354-9,${LOINC}|55284-4`, _sort: "date", _count: "100" }),
    questionnaires().catch(() => []),
  ]);
  const people = new Map();
  for (const r of api.resources(teams)) if (r.resourceType !== "CareTeam") people.set(`${r.resourceType}/${r.id}`, humanName(r));
  const goals = new Map(api.resources(plans, "Goal").map((g) => [g.id, g]));
  const a1cObs = api.resources(a1c, "Observation");
  const bpObs = api.resources(bp, "Observation");

  const demo = h(
    "dl",
    { class: "facts" },
    h("dt", {}, "Born"),
    h("dd", {}, fmtDate(p.birthDate)),
    h("dt", {}, "Gender"),
    h("dd", {}, p.gender || "—"),
    h("dt", {}, "Identifier"),
    h("dd", {}, (p.identifier || []).map((i) => i.value).filter(Boolean).join(", ") || "—"),
    h("dt", {}, "Phone"),
    h("dd", {}, (p.telecom || []).filter((t) => t.system === "phone").map((t) => t.value).join(", ") || "—"),
    h("dt", {}, "Address"),
    h("dd", {}, (p.address || []).map((a) => [...(a.line || []), a.city, a.postalCode].filter(Boolean).join(", "))[0] || "—"),
  );

  const teamList = api.resources(teams, "CareTeam").map((t) =>
    h(
      "div",
      { class: "card" },
      h("h3", {}, t.name || `CareTeam/${t.id}`),
      h(
        "ul",
        {},
        (t.participant || []).map((x) =>
          h("li", {}, h("strong", {}, people.get(x.member?.reference) || x.member?.display || x.member?.reference || "?"), " — ", (x.role || []).map(conceptText).join(", ") || "member"),
        ),
      ),
    ),
  );

  const planList = api.resources(plans, "CarePlan").map((cp) => {
    const gs = (cp.goal || []).map((g) => goals.get(refId(g, "Goal"))).filter(Boolean);
    return h(
      "div",
      { class: "card" },
      h("h3", {}, cp.title || conceptText((cp.category || [])[0]) || `CarePlan/${cp.id}`, " ", badge(cp.status, "status")),
      h("h4", {}, "Goals"),
      gs.length
        ? h(
            "table",
            { class: "goals" },
            h("thead", {}, h("tr", {}, ["Goal", "Target", "Latest", "Status"].map((c) => h("th", { scope: "col" }, c)))),
            h(
              "tbody",
              {},
              gs.map((g) => {
                const tg = goalTarget(g);
                let latest = "—";
                if (tg.code === "4548-4") latest = a1cObs.length ? `${obsPoints(a1cObs).at(-1)?.v ?? "—"} %` : "—";
                else if (["85354-9", "8480-6", "55284-4"].includes(tg.code)) {
                  const sys = obsPoints(bpObs, "8480-6").at(-1);
                  const dia = obsPoints(bpObs, "8462-4").at(-1);
                  latest = sys ? `${sys.v}/${dia?.v ?? "?"} mmHg` : "—";
                }
                return h("tr", {}, h("td", {}, conceptText(g.description)), h("td", {}, tg.text || "—"), h("td", {}, latest), h("td", {}, g.lifecycleStatus || ""));
              }),
            ),
          )
        : h("p", { class: "muted" }, "No goals yet."),
      h("h4", {}, "Activities"),
      (cp.activity || []).length
        ? h("ul", {}, cp.activity.map((a) => h("li", {}, conceptText(a.detail?.code) || a.detail?.description || a.reference?.display || a.reference?.reference || "activity", a.detail?.status ? [" ", badge(a.detail.status, "status")] : "")))
        : h("p", { class: "muted" }, "No activities yet."),
    );
  });

  const a1cGoal = [...goals.values()].map(goalTarget).find((t) => t.code === "4548-4");
  const charts = h(
    "div",
    { class: "charts" },
    lineChart({ title: "HbA1c", unit: "%", series: [{ name: "", points: obsPoints(a1cObs) }], target: a1cGoal?.target || { high: 8 } }),
    lineChart({
      title: "Blood pressure",
      unit: "",
      series: [
        { name: "systolic", points: obsPoints(bpObs, "8480-6") },
        { name: "diastolic", points: obsPoints(bpObs, "8462-4") },
      ],
      target: { high: 140 },
    }),
  );

  const taskList = api.resources(tasks, "Task");
  const timeline = taskList.length
    ? h(
        "ol",
        { class: "timeline", id: "task-timeline" },
        taskList.map((t) =>
          h("li", { "data-status": t.status }, h("time", {}, fmtDate(t.lastModified || t.authoredOn, true)), " ", h("strong", {}, t.description || conceptText(t.code) || `Task/${t.id}`), " ", badge(t.status, "status"), t.statusReason ? ` — ${conceptText(t.statusReason)}` : "", " · due ", fmtDate(t.restriction?.period?.end)),
        ),
      )
    : h("p", { class: "muted" }, "No tasks.");

  const eps = api.resources(episodes, "EpisodeOfCare");
  for (const r of api.resources(episodes)) if (r.resourceType !== "EpisodeOfCare") people.set(`${r.resourceType}/${r.id}`, humanName(r));
  const epList = eps.length
    ? h(
        "ul",
        {},
        eps.map((e) => h("li", {}, conceptText((e.type || [])[0]) || "Episode", " ", badge(e.status, "status"), ` since ${fmtDate(e.period?.start)}`, e.period?.end ? ` until ${fmtDate(e.period.end)}` : "", e.careManager ? ` · care manager ${people.get(e.careManager.reference) || e.careManager.display || e.careManager.reference}` : "")),
      )
    : h("p", { class: "muted" }, "Not enrolled.");

  const ra = api.resources(risks, "RiskAssessment")[0];
  let riskCard = h("p", { class: "muted" }, "Not stratified yet.");
  if (ra) {
    const pred = (ra.prediction || [])[0] || {};
    const tier = (pred.qualitativeRisk?.coding || [])[0]?.code || "";
    const score = (pred.extension || []).find((x) => x.url === RISK_SCORE)?.valueDecimal;
    const contribs = (pred.extension || [])
      .filter((x) => x.url === CONTRIBUTION)
      .map((x) => Object.fromEntries((x.extension || []).filter((y) => y.url !== "basis").map((y) => [y.url, y.valueCode ?? y.valueDecimal ?? y.valueString])));
    riskCard = h(
      "div",
      { id: "risk" },
      h("p", {}, badge(tier || "?", tier), ` score ${score ?? "?"} · ${fmtDate(ra.occurrenceDateTime, true)}`),
      contribs.length
        ? h(
            "table",
            {},
            h("thead", {}, h("tr", {}, ["Factor", "Points", "Detail"].map((c) => h("th", { scope: "col" }, c)))),
            h("tbody", {}, contribs.map((c) => h("tr", {}, h("td", {}, c.factor), h("td", { class: "num" }, String(c.points)), h("td", {}, c.detail)))),
          )
        : h("p", { class: "muted" }, "No contributing factors."),
    );
  }
  const restratify = h("button", {
    type: "button",
    class: "secondary",
    onclick: async () => {
      try {
        await api.fhir(`Patient/${id}/$stratify`, { method: "POST" });
        await patient(main, id);
      } catch (e) {
        main.prepend(alertBox(e.message));
      }
    },
  }, "Stratify now");

  mount(
    main,
    h("h1", { id: "patient-name" }, humanName(p)),
    h(
      "nav",
      { class: "actions", "aria-label": "Assessments" },
      "Assess: ",
      qs.length ? qs.map(([qid, title]) => [h("a", { class: "button-link", href: `#/assess/${id}/${qid}` }, title), " "]) : h("span", { class: "muted" }, "no active Questionnaire"),
    ),
    h("div", { class: "grid" }, h("section", {}, h("h2", {}, "Demographics"), demo), h("section", {}, h("h2", {}, "Episode of care"), epList), h("section", {}, h("h2", {}, "Risk"), riskCard, restratify)),
    h("section", {}, h("h2", {}, "Care team"), teamList.length ? teamList : h("p", { class: "muted" }, "No active care team.")),
    h("section", {}, h("h2", {}, "Care plan"), planList.length ? planList : h("p", { class: "muted" }, "No active care plan."), charts),
    h("section", {}, h("h2", {}, "Tasks"), timeline),
  );
}

// ---------------------------------------------------------------------------------------------
// Program

function population(group, code) {
  return (group.population || []).find((p) => (p.code?.coding || []).some((c) => c.code === code))?.count;
}

export async function program(main) {
  const params = new URLSearchParams(location.hash.split("?")[1] || "");
  const end = params.get("end") || todayIso();
  const start = params.get("start") || addDays(end, -365);
  const startBox = h("input", { id: "period-start", type: "date", value: start, required: true });
  const endBox = h("input", { id: "period-end", type: "date", value: end, required: true });
  const mine = h("input", { id: "mine", type: "checkbox", checked: params.get("mine") === "1" });
  const results = h("div", { id: "metrics", "aria-live": "polite" }, loading("Computing the measures"));
  const form = h(
    "form",
    {
      class: "card inline",
      onsubmit: (e) => {
        e.preventDefault();
        load();
      },
    },
    h("label", { for: "period-start" }, "From"),
    startBox,
    h("label", { for: "period-end" }, "To"),
    endBox,
    h("label", { for: "mine", class: "check" }, mine, " my enrollments only"),
    h("button", { type: "submit" }, "Show"),
  );
  mount(main, h("h1", {}, "Program"), form, results);
  async function load() {
    mount(results, loading("Computing the measures"));
    const q = new URLSearchParams({ "period-start": startBox.value, "period-end": endBox.value });
    if (mine.checked && api.practitionerId()) q.set("care-manager", `Practitioner/${api.practitionerId()}`);
    const qc = new URLSearchParams(q);
    qc.set("compare", "pre-post");
    try {
      const [b, bc] = await Promise.all([api.fhir(`$icm-metrics?${q}`), api.fhir(`$icm-metrics?${qc}`)]);
      const WINDOW = "http://icm-fhir.org/fhir/StructureDefinition/measure-window";
      const byMeasure = new Map();
      for (const r of [...api.resources(b, "MeasureReport"), ...api.resources(bc, "MeasureReport")]) {
        const w = (r.extension || []).find((x) => x.url === WINDOW)?.valueCode || "period";
        byMeasure.set(r.measure, { ...(byMeasure.get(r.measure) || {}), [w]: r });
      }
      const titles = new Map(
        await Promise.all(
          [...byMeasure.keys()].map((m) =>
            api
              .fhir(`Measure/${m.split("/").pop()}`)
              .then((x) => [m, x.title || x.name])
              .catch(() => [m, m.split("/").pop().replace(/-/g, " ")]),
          ),
        ),
      );
      mount(
        results,
        h(
          "div",
          { class: "tiles" },
          [...byMeasure.entries()].map(([measure, w]) => {
            const r = w.period || w.post || w.pre;
            const g = (r.group || [])[0] || {};
            const name = measure.split("/").pop();
            const title = titles.get(measure) || name;
            const score = g.measureScore?.value;
            const num = population(g, "numerator");
            const den = population(g, "denominator");
            const cmp = w.pre && w.post ? h("p", { class: "muted" }, `12 months before enrollment ${fmtScore(w.pre)} → after ${fmtScore(w.post)}`) : "";
            return h(
              "article",
              { class: "tile", "data-measure": name },
              h("h2", {}, title),
              h("p", { class: "score" }, score === undefined ? "—" : fmtN(score), g.measureScore?.unit ? h("span", { class: "unit" }, ` ${g.measureScore.unit}`) : ""),
              h("p", { class: "muted" }, `numerator ${num ?? "—"} / denominator ${den ?? "—"}`),
              cmp,
            );
          }),
        ),
      );
    } catch (e) {
      mount(results, alertBox(e.message));
    }
  }
  await load();
}

function fmtN(v) {
  return Number.isInteger(v) ? String(v) : Number(v).toFixed(2);
}

function fmtScore(r) {
  const v = ((r.group || [])[0] || {}).measureScore?.value;
  return v === undefined ? "—" : fmtN(v);
}

export { describeTarget };
