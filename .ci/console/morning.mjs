// A care manager's morning in the console, in Debian's headless Chromium (playwright-core over
// CDP), against a server holding Synthea-shaped patient histories (bench/synthea_shaped.py, one
// transaction Bundle per patient) enrolled in the program with Casey as care manager: sign in,
// work the worklist (accept and start an intake PHQ-9, record it, complete the task), open the
// patient (their Synthea HbA1c and blood pressure as charts), the caseload and the dashboard.
// Usage: BASE=http://127.0.0.1:PORT SYSTOK=<system token> PATIENTS=N node morning.mjs
import { chromium } from "playwright-core";
import { execFileSync } from "node:child_process";
import { mkdirSync } from "node:fs";
import { seed, enrollAll, client } from "./seed.mjs";

const BASE = process.env.BASE;
const SHOTS = process.env.SHOTS || "docs/console";
const N = Number(process.env.PATIENTS || 10);
const ENTRIES = Number(process.env.ENTRIES || 150);
mkdirSync(SHOTS, { recursive: true });
const api = client(BASE, process.env.SYSTOK);

let passed = 0;
let failed = 0;
async function step(name, f) {
  const t0 = Date.now();
  try {
    await f();
    passed += 1;
    console.log(`ok - ${name} (${Date.now() - t0} ms)`);
  } catch (e) {
    failed += 1;
    console.log(`not ok - ${name}: ${e.message.split("\n").slice(0, 6).join("\n    ")}`);
  }
}
function assert(cond, msg) {
  if (!cond) throw new Error(msg);
}

// Seed: the demo practitioners and patients, then N Synthea-shaped histories, all enrolled.
const t0 = Date.now();
const ids = await seed(BASE, process.env.SYSTOK);
const FAMILIES = ["Koss", "Bechtelar", "Runolfsdottir", "Hartmann", "Okuneva", "Schowalter", "Gutmann", "Wintheiser", "Larkin", "Pfannerstill", "Ziemann", "Haag"];
const GIVEN = ["Abe", "Marisol", "Dewitt", "Lupita", "Teodoro", "Shirlene", "Ramiro", "Jenae", "Cleo", "Ozie", "Lashawn", "Milo"];
const synthea = [];
for (let i = 0; i < N; i++) {
  const bundle = JSON.parse(execFileSync("python3", ["bench/synthea_shaped.py", String(ENTRIES), String(1000 + i)], { maxBuffer: 64 << 20 }));
  // Synthea gives every patient a name of its own; the generator's placeholder is replaced.
  const p = bundle.entry[0].resource;
  p.name = [{ use: "official", family: FAMILIES[i % FAMILIES.length], given: [GIVEN[i % GIVEN.length]] }];
  const res = await api.call("POST", "", bundle);
  const loc = res.entry[0].response.location;
  synthea.push(loc.split("/")[1]);
}
const enrolled = await enrollAll(BASE, process.env.SYSTOK, ids.casey);
console.log(`seeded ${N} Synthea-shaped patients (${ENTRIES} entries each), ${enrolled} enrolled, in ${Date.now() - t0} ms`);
assert(enrolled === N, `enrolled ${enrolled} of ${N}`);

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  headless: true,
  args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync"],
});
const context = await browser.newContext({ viewport: { width: 1024, height: 768 }, timezoneId: "UTC" });
const page = await context.newPage();
page.setDefaultTimeout(15000);
const pageErrors = [];
page.on("pageerror", (e) => pageErrors.push(e.message));
page.on("console", (m) => {
  if (m.type() === "error" && !/status of 4\d\d/.test(m.text())) pageErrors.push(m.text());
});
const shot = (name, fullPage = true) => page.screenshot({ path: `${SHOTS}/${name}.png`, fullPage });

const first = synthea[0];
const firstName = `${GIVEN[0]} ${FAMILIES[0]}`;
let phqTask;

await step("sign in as the care manager", async () => {
  await page.goto(`${BASE}/console`);
  await page.waitForSelector("#dev-signin select");
  await page.selectOption("#dev-practitioner", ids.casey);
  await page.click("#dev-signin button[type=submit]");
  await page.waitForSelector("#list-upcoming");
});

await step(`Today: the intake assessments of all ${N} enrolled Synthea patients are on the worklist`, async () => {
  const rows = await page.$$eval("li.task", (ls) => ls.map((l) => ({ id: l.dataset.task, text: l.textContent, href: l.querySelector('a[href^="#/patient/"]')?.getAttribute("href") })));
  const patients = new Set(rows.map((r) => r.href?.split("/").pop()));
  for (const p of synthea) assert(patients.has(p), `no task for Patient/${p}`);
  const wl = await api.read(`Practitioner/${ids.casey}/$worklist?_count=500`);
  assert(rows.length === (wl.entry || []).length, `${rows.length} rows on screen, ${(wl.entry || []).length} in $worklist`);
  phqTask = rows.find((r) => r.href === `#/patient/${first}` && r.text.includes("PHQ-9"))?.id;
  assert(phqTask, `no PHQ-9 intake task for ${firstName}`);
  await shot("morning-today", false); // the first screen of a long list
});

await step("work the worklist: accept, then start the PHQ-9 intake", async () => {
  await page.click(`li[data-task="${phqTask}"] button[data-action="accepted"]`);
  await page.waitForSelector(`li[data-task="${phqTask}"][data-status="accepted"]`);
  await page.click(`li[data-task="${phqTask}"] button[data-action="in-progress"]`);
  await page.waitForSelector(`li[data-task="${phqTask}"][data-status="in-progress"]`);
  const t = await api.read(`Task/${phqTask}`);
  assert(t.status === "in-progress", `server says ${t.status}`);
});

await step("record the PHQ-9 from the task and see the score", async () => {
  await page.click(`li[data-task="${phqTask}"] a[href*="/icm-phq9"]`);
  await page.waitForSelector("form.questionnaire .item");
  // "Several days" (1 point) on the nine questions: 9, mild.
  const sets = page.locator("form.questionnaire .item:not([hidden]) > fieldset.choice");
  const count = await sets.count();
  for (let i = 0; i < Math.min(count, 9); i++) await sets.nth(i).locator("input").nth(1).check();
  await page.click("form.questionnaire button[type=submit]");
  await page.waitForSelector("#assess-result .score-value");
  const scores = await page.textContent("#assess-result");
  assert(/PHQ-9\) total score[^:]*: 9\b/.test(scores), `scores: ${scores}`);
  assert(/mild/i.test(scores), `interpretation: ${scores}`);
  const qr = await api.read(`QuestionnaireResponse?subject=Patient/${first}&_count=0`);
  assert(qr.total === 1, `${qr.total} responses stored`);
  await shot("morning-assess");
});

await step("complete the task: it leaves the worklist", async () => {
  await page.goto(`${BASE}/console/#/today`);
  await page.waitForSelector(`li[data-task="${phqTask}"]`);
  await page.click(`li[data-task="${phqTask}"] button[data-action="completed"]`);
  await page.waitForSelector(`li[data-task="${phqTask}"]`, { state: "detached" });
  const t = await api.read(`Task/${phqTask}`);
  assert(t.status === "completed", `server says ${t.status}`);
});

await step("open the patient: Synthea history as charts, the care team, risk, tasks", async () => {
  await page.goto(`${BASE}/console/#/patient/${first}`);
  await page.waitForSelector("#patient-name");
  assert((await page.textContent("#patient-name")).includes(firstName), "patient name");
  const a1c = await api.read(`Observation?patient=${first}&code=http://loinc.org|4548-4&_count=0`);
  const bp = await api.read(`Observation?patient=${first}&code=http://loinc.org|85354-9&_count=0`);
  assert(a1c.total > 0 && bp.total > 0, `the history has HbA1c (${a1c.total}) and blood pressure (${bp.total})`);
  const points = await page.$$("figure.chart svg circle");
  assert(points.length >= Math.min(a1c.total, 100), `chart points ${points.length}, HbA1c results ${a1c.total}`);
  const text = await page.textContent("main");
  assert(/Casey Manager/.test(text), "Casey on the care team");
  assert(/PHQ-9 depression screen/.test(text) && /completed/.test(text), "the completed task in the timeline");
  assert((await page.$$("#risk tbody tr")).length >= 1, "risk factors from the Synthea conditions");
  await shot("morning-patient");
});

await step(`Caseload: the ${N} Synthea patients with Alice and Bob`, async () => {
  await page.goto(`${BASE}/console/#/caseload`);
  await page.waitForSelector("table#caseload tbody tr");
  const rows = await page.$$eval("table#caseload tbody tr", (trs) => trs.map((t) => t.dataset.patient));
  for (const p of [...synthea, ids.alice, ids.bob]) assert(rows.includes(p), `Patient/${p} missing from the caseload`);
  assert(rows.length === N + 2, `${rows.length} rows`);
});

await step("the dashboard counts the enrollments", async () => {
  await page.goto(`${BASE}/console/#/program`);
  await page.waitForSelector("#metrics .tile");
  const text = await page.textContent("#metrics");
  assert(/numerator \d+ \/ denominator \d+/.test(text), "counts behind the rates");
  await shot("morning-program");
});

await step("no page errors", async () => {
  assert(pageErrors.length === 0, `page errors: ${pageErrors.join(" | ")}`);
});

await browser.close();
console.log(`console morning: ${passed} passed, ${failed} failed`);
process.exit(failed ? 1 : 0);
