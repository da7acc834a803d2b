// Seed a fresh server for the console through the public API (system token): two care managers,
// three patients referred and enrolled (Alice and Bob to Casey, Carol to Omar), conditions,
// HbA1c and blood-pressure series, goals on an active care plan, a primary-care physician on the
// team, an ED visit, and Tasks overdue, due today and upcoming.
// Usage: node seed.mjs BASE_URL SYSTEM_TOKEN  (prints the ids as JSON)

const LOINC = "http://loinc.org";
const UCUM = "http://unitsofmeasure.org";
const WORKFLOW = "http://icm-fhir.org/fhir/CodeSystem/icm-workflow";
const ACT = "http://terminology.hl7.org/CodeSystem/v3-ActCode";

export function day(offset, time = "T10:00:00Z") {
  const t = new Date(Date.now() + offset * 86400000);
  return t.toISOString().slice(0, 10) + (time || "");
}

export function client(base, token) {
  async function call(method, path, body, headers = {}) {
    const res = await fetch(`${base}/fhir/${path}`, {
      method,
      headers: {
        Accept: "application/fhir+json",
        Authorization: `Bearer ${token}`,
        ...(body ? { "Content-Type": "application/fhir+json" } : {}),
        ...headers,
      },
      body: body ? JSON.stringify(body) : undefined,
    });
    const text = await res.text();
    const data = text ? JSON.parse(text) : null;
    if (!res.ok) throw new Error(`${method} ${path}: ${res.status} ${text.slice(0, 500)}`);
    return data;
  }
  return {
    call,
    create: (r) => call("POST", r.resourceType, r),
    read: (path) => call("GET", path),
    update: (r) => call("PUT", `${r.resourceType}/${r.id}`, r),
  };
}

export async function seed(base, token) {
  const api = client(base, token);
  const practitioner = (given, family) =>
    api.create({ resourceType: "Practitioner", active: true, name: [{ given: [given], family }] });
  const casey = await practitioner("Casey", "Manager");
  const omar = await practitioner("Omar", "Other");
  const pcp = await practitioner("Priya", "Primary");

  const patient = (given, family, birthDate, gender, mrn) =>
    api.create({
      resourceType: "Patient",
      identifier: [{ system: "urn:example:mrn", value: mrn }],
      name: [{ given: [given], family }],
      birthDate,
      gender,
      telecom: [{ system: "phone", value: "555-0100" }],
      address: [{ line: ["1 Main St"], city: "Springfield", postalCode: "12345" }],
    });
  const alice = await patient("Alice", "Anders", "1952-04-11", "female", "MRN-1001");
  const bob = await patient("Bob", "Baker", "1960-09-23", "male", "MRN-1002");
  const carol = await patient("Carol", "Chen", "1948-01-30", "female", "MRN-1003");

  const enroll = async (p, manager) => {
    const sr = await api.create({
      resourceType: "ServiceRequest",
      status: "active",
      intent: "order",
      category: [{ coding: [{ system: WORKFLOW, code: "icm-referral" }] }],
      code: { text: "Integrated care management" },
      subject: { reference: `Patient/${p.id}` },
    });
    const b = await api.call("POST", `Patient/${p.id}/$enroll`, {
      resourceType: "Parameters",
      parameter: [
        { name: "referral", valueReference: { reference: `ServiceRequest/${sr.id}` } },
        { name: "careManager", valueReference: { reference: `Practitioner/${manager.id}` } },
        { name: "program", valueCode: "chronic-disease" },
      ],
    });
    const of = (t) => b.entry.map((e) => e.resource).find((r) => r?.resourceType === t);
    return { plan: of("CarePlan"), team: of("CareTeam") };
  };
  const a = await enroll(alice, casey);
  const b = await enroll(bob, casey);
  await enroll(carol, omar);

  // Alice's history: diabetes and heart failure, HbA1c and blood pressure over a year, an ED visit.
  for (const [code, display] of [["E11.9", "Type 2 diabetes mellitus"], ["I50.9", "Heart failure"]]) {
    await api.create({
      resourceType: "Condition",
      clinicalStatus: { coding: [{ system: "http://terminology.hl7.org/CodeSystem/condition-clinical", code: "active" }] },
      code: { coding: [{ system: "http://hl7.org/fhir/sid/icd-10-cm", code, display }], text: display },
      subject: { reference: `Patient/${alice.id}` },
      onsetDateTime: "2015-06-01",
    });
  }
  const a1c = [[-330, 9.6], [-240, 9.1], [-150, 8.7], [-60, 8.2], [-10, 7.8]];
  for (const [d, v] of a1c) {
    await api.create({
      resourceType: "Observation",
      status: "final",
      category: [{ coding: [{ system: "http://terminology.hl7.org/CodeSystem/observation-category", code: "laboratory" }] }],
      code: { coding: [{ system: LOINC, code: "4548-4", display: "Hemoglobin A1c/Hemoglobin.total in Blood" }], text: "HbA1c" },
      subject: { reference: `Patient/${alice.id}` },
      effectiveDateTime: day(d),
      valueQuantity: { value: v, unit: "%", system: UCUM, code: "%" },
    });
  }
  const bp = [[-300, 158, 96], [-200, 151, 92], [-120, 146, 90], [-45, 142, 88], [-5, 136, 84]];
  for (const [d, sys, dia] of bp) {
    await api.create({
      resourceType: "Observation",
      status: "final",
      category: [{ coding: [{ system: "http://terminology.hl7.org/CodeSystem/observation-category", code: "vital-signs" }] }],
      code: { coding: [{ system: LOINC, code: "85354-9", display: "Blood pressure panel" }], text: "Blood pressure" },
      subject: { reference: `Patient/${alice.id}` },
      effectiveDateTime: day(d),
      component: [
        { code: { coding: [{ system: LOINC, code: "8480-6", display: "Systolic" }] }, valueQuantity: { value: sys, unit: "mmHg", system: UCUM, code: "mm[Hg]" } },
        { code: { coding: [{ system: LOINC, code: "8462-4", display: "Diastolic" }] }, valueQuantity: { value: dia, unit: "mmHg", system: UCUM, code: "mm[Hg]" } },
      ],
    });
  }
  await api.create({
    resourceType: "Encounter",
    status: "finished",
    class: { system: ACT, code: "EMER", display: "emergency" },
    subject: { reference: `Patient/${alice.id}` },
    period: { start: day(-12, "T03:00:00Z"), end: day(-12, "T09:00:00Z") },
  });

  // Goals on Alice's plan, which becomes active, with activities; a PCP joins her team.
  const goal = (text, code, value, unit, ucum) =>
    api.create({
      resourceType: "Goal",
      lifecycleStatus: "active",
      description: { text },
      subject: { reference: `Patient/${alice.id}` },
      target: [{ measure: { coding: [{ system: LOINC, code }] }, detailQuantity: { value, comparator: "<", unit, system: UCUM, code: ucum }, dueDate: day(180, "") }],
    });
  const g1 = await goal("HbA1c below 8%", "4548-4", 8, "%", "%");
  const g2 = await goal("Systolic blood pressure below 140 mmHg", "8480-6", 140, "mmHg", "mm[Hg]");
  const plan = await api.read(`CarePlan/${a.plan.id}`);
  plan.status = "active";
  plan.title = "Diabetes and heart failure care plan";
  plan.goal = [{ reference: `Goal/${g1.id}` }, { reference: `Goal/${g2.id}` }];
  plan.activity = [
    { detail: { code: { text: "Diabetes self-management education" }, status: "scheduled" } },
    { detail: { code: { text: "Home blood-pressure monitoring" }, status: "in-progress" } },
  ];
  await api.update(plan);
  const team = await api.read(`CareTeam/${a.team.id}`);
  team.participant.push({
    role: [{ coding: [{ system: "http://snomed.info/sct", code: "446050000", display: "Primary care physician" }], text: "Primary care physician" }],
    member: { reference: `Practitioner/${pcp.id}` },
  });
  await api.update(team);
  await api.call("POST", `Patient/${alice.id}/$stratify`);

  // Tasks for Casey: overdue, due today.
  const task = (p, planId, description, status, priority, dueOffset) =>
    api.create({
      resourceType: "Task",
      status,
      intent: "order",
      priority,
      description,
      for: { reference: `Patient/${p.id}` },
      basedOn: [{ reference: `CarePlan/${planId}` }],
      owner: { reference: `Practitioner/${casey.id}` },
      authoredOn: day(-3),
      // Due at the end of the (UTC) day: "due today" stays not yet overdue all day long.
      restriction: { period: { end: day(dueOffset, "T23:59:00Z") } },
    });
  const overdue = await task(alice, a.plan.id, "Call about the missed cardiology appointment", "ready", "urgent", -2);
  const dueToday = await task(bob, b.plan.id, "Review medication list with pharmacist", "accepted", "asap", 0);
  return {
    casey: casey.id,
    omar: omar.id,
    pcp: pcp.id,
    alice: alice.id,
    bob: bob.id,
    carol: carol.id,
    overdueTask: overdue.id,
    dueTodayTask: dueToday.id,
    alicePlan: a.plan.id,
    bobPlan: b.plan.id,
  };
}

/**
 * Enroll every Patient not yet in the program (e.g. Synthea histories loaded with
 * `icm-fhir import`) with `managerId` as care manager: a caseload to work on. Answers the count.
 */
export async function enrollAll(base, token, managerId) {
  const api = client(base, token);
  let n = 0;
  let next = "Patient?_count=100&_elements=id";
  while (next) {
    const page = await api.read(next);
    for (const e of page.entry || []) {
      const id = e.resource?.id;
      if (!id || e.resource.resourceType !== "Patient") continue;
      const current = await api.read(`EpisodeOfCare?patient=${id}&status=active,onhold&_summary=count`);
      if (current.total > 0) continue;
      const sr = await api.create({
        resourceType: "ServiceRequest",
        status: "active",
        intent: "order",
        category: [{ coding: [{ system: WORKFLOW, code: "icm-referral" }] }],
        code: { text: "Integrated care management" },
        subject: { reference: `Patient/${id}` },
      });
      await api.call("POST", `Patient/${id}/$enroll`, {
        resourceType: "Parameters",
        parameter: [
          { name: "referral", valueReference: { reference: `ServiceRequest/${sr.id}` } },
          { name: "careManager", valueReference: { reference: `Practitioner/${managerId}` } },
        ],
      });
      n += 1;
    }
    const link = (page.link || []).find((l) => l.relation === "next")?.url;
    next = link ? link.slice(link.indexOf("/fhir/") + 6) : null;
  }
  return n;
}

// node seed.mjs BASE TOKEN [--enroll-all]: the demo data; with --enroll-all, every other Patient
// already on the server (a Synthea import) is enrolled too, with Casey as care manager.
if (process.argv[1] && process.argv[1].endsWith("seed.mjs")) {
  const [base, token] = process.argv.slice(2);
  (async () => {
    const ids = await seed(base, token);
    if (process.argv.includes("--enroll-all")) ids.enrolledFromServer = await enrollAll(base, token, ids.casey);
    console.log(JSON.stringify(ids, null, 2));
  })().catch((e) => {
    console.error(e.message);
    process.exit(1);
  });
}
