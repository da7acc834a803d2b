// End-to-end check of the console in Debian's headless Chromium (driven by playwright-core over
// CDP; no browser download). Seeds the server through the API, then works through the screens as
// a care manager would, saving a screenshot of each to $SHOTS (docs/console by default).
// Usage: BASE=http://127.0.0.1:PORT SYSTOK=<system token> node check.mjs
import { chromium } from "playwright-core";
import { mkdirSync } from "node:fs";
import { seed, client, day } from "./seed.mjs";

const BASE = process.env.BASE;
const SHOTS = process.env.SHOTS || "docs/console";
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

const ids = await seed(BASE, process.env.SYSTOK);
console.log(`seeded: ${JSON.stringify(ids)}`);

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  headless: true,
  args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync"],
});
// Tablet width (landscape).
// The seed's dates are UTC days: the browser works in UTC too.
const context = await browser.newContext({ viewport: { width: 1024, height: 768 }, timezoneId: "UTC" });
const page = await context.newPage();
page.setDefaultTimeout(15000);
const pageErrors = [];
page.on("pageerror", (e) => pageErrors.push(e.message));
page.on("console", (m) => {
  if (m.type() === "error" && !/status of 4\d\d/.test(m.text())) pageErrors.push(m.text());
});
// Nothing leaves the server's origin.
const foreign = [];
page.on("request", (r) => {
  if (!r.url().startsWith(BASE) && !r.url().startsWith("data:")) foreign.push(r.url());
});
const shot = (name) => page.screenshot({ path: `${SHOTS}/${name}.png`, fullPage: true });

/** Every visible form control has an accessible name (label, aria-label or legend). */
async function labelled() {
  const missing = await page.evaluate(() =>
    [...document.querySelectorAll("input, select, textarea")]
      .filter((el) => el.offsetParent !== null)
      .filter((el) => !(el.labels?.length || el.getAttribute("aria-label") || el.closest("fieldset")?.querySelector("legend")))
      .map((el) => el.outerHTML.slice(0, 80)),
  );
  assert(missing.length === 0, `controls without a label: ${missing.join(", ")}`);
}

await step("sign-in page offers the development sign-in and a token box", async () => {
  await page.goto(`${BASE}/console`);
  await page.waitForSelector("#dev-signin select");
  assert((await page.$$("#dev-signin option")).length >= 3, "the practitioners are listed");
  await page.waitForSelector("textarea#token");
  await labelled();
  await shot("signin");
});

await step("sign in as the care manager (dev token minted by the server)", async () => {
  await page.selectOption("#dev-practitioner", ids.casey);
  await page.click("#dev-signin button[type=submit]");
  await page.waitForSelector("#list-overdue");
  const who = await page.getAttribute("#who-name", "data-user");
  assert(who === `Practitioner/${ids.casey}`, `signed in as ${who}`);
  await page.waitForFunction(() => document.getElementById("who-name")?.textContent === "Casey Manager");
});

await step("Today: overdue first, due today, upcoming, with priority", async () => {
  const overdue = await page.$$eval("#list-overdue li.task", (ls) => ls.map((l) => l.dataset.task));
  assert(overdue.includes(ids.overdueTask), `overdue list ${overdue}`);
  const todays = await page.$$eval("#list-today li.task", (ls) => ls.map((l) => l.dataset.task));
  assert(todays.includes(ids.dueTodayTask), `due today ${todays}`);
  const upcoming = await page.$$("#list-upcoming li.task");
  assert(upcoming.length >= 4, `upcoming intake tasks: ${upcoming.length}`);
  const prio = await page.textContent(`li[data-task="${ids.overdueTask}"] .badge.prio`);
  assert(prio.trim() === "urgent", `priority badge ${prio}`);
  await labelled();
  await shot("today");
});

await step("a refused transition shows the server's OperationOutcome", async () => {
  // Someone else cancels the task while it is on screen.
  const t = await api.read(`Task/${ids.dueTodayTask}`);
  t.status = "cancelled";
  t.statusReason = { text: "patient moved" };
  await api.update(t);
  await page.click(`li[data-task="${ids.dueTodayTask}"] button[data-action="in-progress"]`);
  const alert = await page.waitForSelector(`li[data-task="${ids.dueTodayTask}"] .alert.error`);
  const text = await alert.textContent();
  assert(/cancelled/.test(text) && /in-progress/.test(text), `alert: ${text}`);
  await shot("today-refused");
});

await step("complete a task: it leaves the worklist", async () => {
  await page.click(`li[data-task="${ids.overdueTask}"] button[data-action="completed"]`);
  await page.waitForSelector(`li[data-task="${ids.overdueTask}"]`, { state: "detached" });
  const msg = await page.textContent("#today-status .alert.ok");
  assert(/is now completed/.test(msg), `message: ${msg}`);
  const t = await api.read(`Task/${ids.overdueTask}`);
  assert(t.status === "completed", `server says ${t.status}`);
});

await step("a reason is asked for where the state machine needs one (reject)", async () => {
  const row = page.locator("#list-upcoming li.task").first();
  const id = await row.getAttribute("data-task");
  await row.locator('button[data-action="rejected"]').click();
  const box = page.locator(`li[data-task="${id}"] input.reason`);
  await box.waitFor({ state: "visible" });
  assert(await box.evaluate((el) => document.activeElement === el), "the reason box has the focus");
  await box.fill("duplicate of the intake call");
  await page.keyboard.press("Shift+Tab"); // keyboard back to the button row
  await page.click(`li[data-task="${id}"] button[data-action="rejected"]`);
  await page.waitForSelector(`li[data-task="${id}"]`, { state: "detached" });
  const t = await api.read(`Task/${id}`);
  assert(t.status === "rejected" && t.statusReason?.text === "duplicate of the intake call", `server has ${t.status} ${JSON.stringify(t.statusReason)}`);
});

await step("Caseload: by risk tier, with last contact, tasks and ED flags", async () => {
  await page.goto(`${BASE}/console/#/caseload`);
  await page.waitForSelector("table#caseload tbody tr");
  const rows = await page.$$eval("table#caseload tbody tr", (trs) => trs.map((t) => t.dataset.patient));
  assert(rows.includes(ids.alice) && rows.includes(ids.bob), `rows ${rows}`);
  assert(!rows.includes(ids.carol), "Carol (another manager's patient) is listed");
  const alice = await page.textContent(`tr[data-patient="${ids.alice}"]`);
  assert(/ED visit/.test(alice), `Alice's row: ${alice}`);
  await shot("caseload");
});

await step("Patient: demographics, team roles, goals with charts, tasks, episode, risk factors", async () => {
  await page.goto(`${BASE}/console/#/patient/${ids.alice}`);
  await page.waitForSelector("#patient-name");
  const text = await page.textContent("main");
  for (const needle of ["Alice Anders", "1952-04-11", "Primary care physician", "HbA1c below 8%", "7.8 %", "136/84 mmHg", "Diabetes self-management education", "Call about the missed cardiology appointment"]) {
    assert(text.includes(needle), `missing on the patient page: ${needle}`);
  }
  const charts = await page.$$("figure.chart svg circle");
  assert(charts.length >= 15, `chart points: ${charts.length}`);
  const factors = await page.$$("#risk tbody tr");
  assert(factors.length >= 1, "no risk factors listed");
  await shot("patient");
});

await step("a patient on no team of mine is refused", async () => {
  await page.goto(`${BASE}/console/#/patient/${ids.carol}`);
  const alert = await page.waitForSelector("main .alert.error");
  const text = await alert.textContent();
  assert(/Refused \(HTTP 40[34]\)/.test(text), `alert: ${text}`);
  assert(!(await page.textContent("main")).includes("Carol"), "Carol's name is shown");
  await shot("patient-refused");
});

await step("Assess: the Questionnaires are listed by searching the server", async () => {
  await page.goto(`${BASE}/console/#/assess/${ids.alice}`);
  await page.waitForSelector("#questionnaires li a");
  const shown = await page.$$eval("#questionnaires li a", (as) => as.map((a) => [a.getAttribute("href").split("/").pop(), a.textContent]));
  const b = await api.read("Questionnaire?status=active&_sort=title&_count=100");
  const want = b.entry.map((e) => [e.resource.id, e.resource.title]);
  assert(JSON.stringify(shown) === JSON.stringify(want), `shown ${JSON.stringify(shown)}, the server has ${JSON.stringify(want)}`);
  for (const q of ["icm-phq9", "icm-social-needs", "icm-functional-status", "icm-intake", "icm-satisfaction"]) {
    assert(shown.some(([id]) => id === q), `shipped ${q} not listed`);
  }
  // One of the site's own appears too (after a reload: the list is read once a session).
  const own = await api.create({ resourceType: "Questionnaire", status: "active", title: "Caregiver check-in", item: [{ linkId: "1", text: "How is the caregiver coping?", type: "string" }] });
  await page.reload();
  await page.waitForSelector(`#questionnaires a[href$="/${own.id}"]`);
  await shot("assess-list");
});

await step("Assess: the server's validation errors appear next to the items", async () => {
  await page.goto(`${BASE}/console/#/assess/${ids.alice}/icm-phq9`);
  await page.waitForSelector("form.questionnaire .item");
  await labelled();
  // Answer only the first question, then submit.
  await page.locator("form.questionnaire fieldset.choice").first().locator("input").nth(1).check();
  await page.click("form.questionnaire button[type=submit]");
  await page.waitForSelector(".item-error:not([hidden])");
  const n = await page.$$eval(".item-error:not([hidden])", (e) => e.length);
  assert(n >= 8, `errors shown next to ${n} items`);
  await shot("assess-errors");
});

await step("Assess: record a PHQ-9 and see the score", async () => {
  // "More than half the days" (2 points) on the nine questions: 18, moderately severe.
  const sets = page.locator("form.questionnaire .item:not([hidden]) > fieldset.choice");
  const count = await sets.count();
  for (let i = 0; i < Math.min(count, 9); i++) await sets.nth(i).locator("input").nth(2).check();
  await page.click("form.questionnaire button[type=submit]");
  await page.waitForSelector("#assess-result .score-value");
  const scores = await page.textContent("#assess-result");
  assert(/PHQ-9\) total score[^:]*: 18\b/.test(scores), `scores: ${scores}`);
  assert(/moderately severe/.test(scores), `interpretation: ${scores}`);
  await shot("assess");
});

await step("Assess: enableWhen shows an item only when its condition holds", async () => {
  await page.goto(`${BASE}/console/#/assess/${ids.alice}/icm-social-needs`);
  await page.waitForSelector("form.questionnaire .item");
  const help = page.locator('.item[data-link-id="sn-help-wanted"]');
  assert(await help.isHidden(), "the help question is shown before any answer");
  const living = page.locator('.item[data-link-id="sn-living-situation"] input');
  await living.nth(0).check(); // a steady place to live
  assert(await help.isHidden(), "the help question is shown for a steady place to live");
  await living.nth(1).check(); // a place to live today, but worried about losing it
  await help.waitFor({ state: "visible" });
  await labelled();
});

await step("a discharge creates follow-up tasks on the worklist", async () => {
  await page.goto(`${BASE}/console/#/today`);
  await page.waitForSelector("#list-upcoming");
  const before = await page.$$eval("li.task", (ls) => ls.map((l) => l.dataset.task));
  await api.create({
    resourceType: "Encounter",
    status: "finished",
    class: { system: "http://terminology.hl7.org/CodeSystem/v3-ActCode", code: "IMP", display: "inpatient encounter" },
    subject: { reference: `Patient/${ids.bob}` },
    period: { start: day(-3), end: day(0, "T08:00:00Z") },
  });
  await page.reload();
  await page.waitForSelector("#list-upcoming");
  const rows = await page.$$eval("li.task", (ls) => ls.map((l) => ({ id: l.dataset.task, text: l.textContent })));
  const added = rows.filter((r) => !before.includes(r.id));
  assert(added.length >= 3, `new tasks: ${JSON.stringify(added.map((a) => a.text.slice(0, 60)))}`);
  assert(added.every((a) => a.text.includes("Bob Baker")), "follow-up tasks are for Bob");
  await shot("today-discharge");
});

await step("Program: $icm-metrics as a dashboard with counts", async () => {
  await page.goto(`${BASE}/console/#/program`);
  await page.waitForSelector("#metrics .tile");
  const tiles = await page.$$("#metrics .tile");
  assert(tiles.length >= 10, `tiles: ${tiles.length}`);
  const text = await page.textContent("#metrics");
  assert(/numerator \d+ \/ denominator \d+/.test(text), "counts behind the rates");
  assert(/before enrollment .* → after /.test(text), "the pre/post comparison");
  await labelled();
  await shot("program");
});

await step("usable at narrow tablet width (768px): no horizontal scrolling on Today", async () => {
  await page.setViewportSize({ width: 768, height: 1024 });
  await page.goto(`${BASE}/console/#/today`);
  await page.waitForSelector("#list-upcoming");
  const overflow = await page.evaluate(() => document.documentElement.scrollWidth - document.documentElement.clientWidth);
  assert(overflow <= 0, `scrolls sideways by ${overflow}px`);
  await shot("today-tablet");
});

await step("sign out, then sign in by pasting a token; a refused token returns to sign-in", async () => {
  await page.setViewportSize({ width: 1024, height: 768 });
  await page.click("#who button");
  await page.waitForSelector("textarea#token");
  // Well formed, naming Casey, but not signed by the server.
  const b64 = (o) => Buffer.from(JSON.stringify(o)).toString("base64url");
  const forged = `${b64({ alg: "HS256", typ: "JWT" })}.${b64({ sub: "x", fhirUser: `Practitioner/${ids.casey}`, scope: "user/*.cruds", exp: Math.floor(Date.now() / 1000) + 600 })}.c2lnbmF0dXJl`;
  await page.fill("textarea#token", forged);
  await page.click("form.card button[type=submit]");
  const alert = await page.waitForSelector("#signin-status .alert.error");
  assert(/refused|expired/.test(await alert.textContent()), "no message for a refused token");
  const res = await fetch(`${BASE}/auth/dev/token`, { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ practitioner: ids.casey }) });
  const { access_token } = await res.json();
  await page.fill("textarea#token", access_token);
  await page.keyboard.press("Tab");
  await page.keyboard.press("Enter"); // the Sign in button, by keyboard
  await page.waitForSelector("#list-upcoming");
});

await step("no page errors and no request outside the server", async () => {
  assert(pageErrors.length === 0, `page errors: ${pageErrors.join(" | ")}`);
  assert(foreign.length === 0, `foreign requests: ${foreign.join(", ")}`);
});

await browser.close();
console.log(`console: ${passed} passed, ${failed} failed`);
process.exit(failed ? 1 : 0);
