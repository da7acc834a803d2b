// The console's shell: sign-in, navigation and the hash router (#/today, #/caseload,
// #/patient/ID, #/assess/PATIENT/QUESTIONNAIRE, #/program).
import * as api from "./api.js";
import { h, mount, alertBox, humanName } from "./ui.js";
import { today, caseload, patient, program } from "./views.js";
import { assess } from "./assess.js";

const main = document.getElementById("main");
const nav = document.getElementById("nav");
const who = document.getElementById("who");

const ROUTES = [
  [/^#\/today$/, () => today(main)],
  [/^#\/caseload$/, () => caseload(main)],
  [/^#\/patient\/([A-Za-z0-9\-.]{1,64})$/, (m) => patient(main, m[1])],
  [/^#\/assess\/([A-Za-z0-9\-.]{1,64})(?:\/([A-Za-z0-9\-.]{1,64}))?$/, (m) => assess(main, m[1], m[2])],
  [/^#\/program$/, () => program(main)],
];

async function route() {
  const hash = location.hash || "#/today";
  if (!api.getToken() || hash === "#/signin") return signIn();
  renderHeader();
  for (const [re, view] of ROUTES) {
    const m = re.exec(hash);
    if (m) {
      markCurrent(hash);
      try {
        await view(m);
      } catch (e) {
        // A 401 has already sent the user back to sign-in (icm:unauthorized).
        if (e.status !== 401) mount(main, alertBox(e.message || String(e)));
        else return;
      }
      main.focus();
      return;
    }
  }
  location.hash = "#/today";
}

function markCurrent(hash) {
  for (const a of nav.querySelectorAll("a")) {
    if (hash.startsWith(a.getAttribute("href"))) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  }
}

function renderHeader() {
  nav.hidden = false;
  const c = api.claims() || {};
  mount(
    who,
    h("span", { id: "who-name", "data-user": c.fhirUser || "" }, c.fhirUser || c.sub || "signed in"),
    " ",
    h("button", { type: "button", class: "link", onclick: signOut }, "Sign out"),
  );
  const pid = api.practitionerId();
  if (pid) {
    api
      .fhir(`Practitioner/${pid}`)
      .then((p) => {
        const el = document.getElementById("who-name");
        if (el) el.textContent = humanName(p);
      })
      .catch(() => {});
  }
  if (!pid) {
    who.append(" ", h("span", { class: "badge overdue" }, "token has no Practitioner fhirUser"));
  }
}

/** Show `hash` (a hashchange routes; the same hash again is routed here). */
function go(hash) {
  if (location.hash === hash) route();
  else location.hash = hash;
}

function signOut() {
  api.clearToken();
  location.hash = "#/signin";
}

async function signIn(message) {
  nav.hidden = true;
  mount(who);
  const tokenBox = h("textarea", { id: "token", name: "token", rows: 4, required: true, autocomplete: "off", spellcheck: "false" });
  const status = h("div", { id: "signin-status", "aria-live": "polite" });
  if (message) status.append(alertBox(message));
  const form = h(
    "form",
    {
      class: "card",
      onsubmit: (e) => {
        e.preventDefault();
        if (!tokenBox.value.trim()) return;
        api.setToken(tokenBox.value);
        go("#/today");
      },
    },
    h("h2", {}, "Sign in with a token"),
    h("p", { class: "muted" }, "Paste a bearer token (for example from ", h("code", {}, "icm-fhir token --sub me --fhir-user Practitioner/ID"), ")."),
    h("label", { for: "token" }, "Bearer token"),
    tokenBox,
    h("button", { type: "submit" }, "Sign in"),
  );
  mount(main, h("h1", {}, "Care-manager console"), status, form);
  const list = await api.devPractitioners().catch(() => null);
  if (list) {
    const select = h(
      "select",
      { id: "dev-practitioner", name: "practitioner", required: true },
      list.map((p) => h("option", { value: p.id }, `${p.name} (${p.reference})`)),
    );
    const dev = h(
      "form",
      {
        class: "card",
        id: "dev-signin",
        onsubmit: async (e) => {
          e.preventDefault();
          try {
            const t = await api.devToken(select.value);
            api.setToken(t.access_token);
            go("#/today");
          } catch (err) {
            mount(status, alertBox(err.message));
          }
        },
      },
      h("h2", {}, "Development sign-in"),
      h("p", { class: "muted" }, "This server runs with --dev-console on a loopback address: it mints a 30-minute token for the practitioner you choose."),
      h("label", { for: "dev-practitioner" }, "Practitioner"),
      select,
      h("button", { type: "submit" }, "Sign in as this practitioner"),
    );
    main.append(dev);
  }
  main.focus();
}

window.addEventListener("icm:unauthorized", () => {
  api.clearToken();
  signIn("Your token was refused or has expired: sign in again.");
});
window.addEventListener("hashchange", route);
route();

export { humanName };
