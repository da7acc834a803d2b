// Assess: render a shipped Questionnaire as a form (groups, answer options, enableWhen, required
// items), submit a QuestionnaireResponse, show the server's validation errors next to the items
// and the scores the server derived (Observations derivedFrom the response).
import * as api from "./api.js";
import { h, mount, alertBox, loading, humanName, conceptText, badge } from "./ui.js";
import { questionnaires } from "./views.js";

export async function assess(main, patientId, qid) {
  mount(main, h("h1", {}, "Assess"), loading("Loading"));
  let p;
  try {
    p = await api.fhir(`Patient/${patientId}`);
  } catch (e) {
    mount(main, h("h1", {}, "Assess"), alertBox(`Refused (HTTP ${e.status || "?"}): ${e.message}`));
    return;
  }
  if (!qid) {
    let qs;
    try {
      qs = await questionnaires();
    } catch (e) {
      mount(main, h("h1", {}, `Assess ${humanName(p)}`), alertBox(`Could not list the Questionnaires (HTTP ${e.status || "?"}): ${e.message}`));
      return;
    }
    mount(
      main,
      h("h1", {}, `Assess ${humanName(p)}`),
      qs.length
        ? h("ul", { id: "questionnaires" }, qs.map(([id, title]) => h("li", {}, h("a", { href: `#/assess/${patientId}/${id}` }, title))))
        : h("p", { class: "muted" }, "The server holds no active Questionnaire."),
    );
    return;
  }
  const q = await api.fhir(`Questionnaire/${qid}`);
  const form = new QuestionnaireForm(q);
  const errors = h("div", { id: "assess-status", "aria-live": "polite" });
  const result = h("div", { id: "assess-result", "aria-live": "polite" });
  const el = h(
    "form",
    {
      class: "questionnaire",
      novalidate: true,
      onsubmit: async (e) => {
        e.preventDefault();
        form.clearErrors();
        mount(errors, loading("Submitting"));
        mount(result);
        const qr = form.response(patientId);
        try {
          const saved = await api.fhir("QuestionnaireResponse", { method: "POST", body: qr });
          mount(errors, alertBox(`Saved as QuestionnaireResponse/${saved.id}.`, "ok"));
          await showScores(result, saved.id);
        } catch (err) {
          const shown = form.showErrors(err.outcome);
          mount(errors, alertBox(`The server did not accept the response: ${shown ? `${shown} problem${shown === 1 ? "" : "s"} marked below.` : err.message}`));
          const first = el.querySelector(".item-error");
          if (first) first.closest(".item")?.querySelector("input, textarea, select")?.focus();
        }
      },
    },
    form.render(),
    h("button", { type: "submit" }, "Submit"),
  );
  mount(
    main,
    h("h1", {}, q.title || q.name || qid),
    h("p", { class: "muted" }, `For ${humanName(p)} · `, h("a", { href: `#/patient/${patientId}` }, "back to the patient")),
    errors,
    el,
    result,
  );
}

async function showScores(el, qrId) {
  const b = await api.search("Observation", { "derived-from": `QuestionnaireResponse/${qrId}`, _count: "50" });
  const obs = api.resources(b, "Observation");
  mount(
    el,
    h("h2", {}, "Scores"),
    obs.length
      ? h(
          "ul",
          { class: "scores" },
          obs.map((o) => {
            const v = o.valueQuantity?.value ?? o.valueInteger ?? o.valueBoolean ?? conceptText(o.valueCodeableConcept);
            const interp = (o.interpretation || []).map(conceptText).join(", ");
            return h("li", { "data-code": (o.code?.coding || [])[0]?.code || "" }, h("strong", {}, conceptText(o.code)), ": ", h("span", { class: "score-value" }, String(v)), interp ? [" ", badge(interp, "")] : "");
          }),
        )
      : h("p", { class: "muted" }, "This questionnaire has no scores."),
  );
}

let seq = 0;

/** A Questionnaire as form controls, with its enableWhen logic. */
class QuestionnaireForm {
  constructor(q) {
    this.q = q;
    this.defs = new Map(); // linkId → definition
    this.nodes = new Map(); // linkId → wrapper element
    this.errors = new Map(); // linkId → error element
    this.paths = new Map(); // response path → linkId (filled by response())
    this.index(q.item || []);
  }

  index(items) {
    for (const it of items) {
      this.defs.set(it.linkId, it);
      this.index(it.item || []);
    }
  }

  render() {
    const root = h("div", {}, (this.q.item || []).map((it) => this.renderItem(it)));
    this.refresh();
    root.addEventListener("change", () => this.refresh());
    root.addEventListener("input", () => this.refresh());
    return root;
  }

  renderItem(it) {
    const id = `q${++seq}`;
    const err = h("p", { class: "item-error", id: `${id}-err`, hidden: true });
    this.errors.set(it.linkId, err);
    const req = it.required ? h("span", { class: "req", "aria-hidden": "true" }, " *") : "";
    const label = [it.prefix ? `${it.prefix} ` : "", it.text || it.linkId, req];
    let body;
    if (it.type === "group") {
      body = h("fieldset", { class: "group" }, h("legend", {}, label), (it.item || []).map((c) => this.renderItem(c)));
    } else if (it.readOnly) {
      body = h("p", { class: "display muted" }, label, ": calculated by the server when the response is saved.");
    } else if (it.type === "display") {
      body = h("p", { class: "display" }, it.text || "");
    } else if ((it.answerOption || []).length || it.type === "boolean") {
      const options = it.type === "boolean" && !(it.answerOption || []).length
        ? [{ valueBoolean: true }, { valueBoolean: false }]
        : it.answerOption;
      const multi = it.repeats === true;
      body = h(
        "fieldset",
        { class: "choice", "aria-describedby": `${id}-err`, "aria-required": it.required ? "true" : undefined },
        h("legend", {}, label),
        options.map((o, i) =>
          h(
            "label",
            { class: "option" },
            h("input", { type: multi ? "checkbox" : "radio", name: id, value: String(i), "data-link": it.linkId }),
            " ",
            optionText(o),
          ),
        ),
      );
    } else {
      const type = { integer: "number", decimal: "number", date: "date", dateTime: "datetime-local", time: "time" }[it.type] || "text";
      const control = it.type === "text"
        ? h("textarea", { id, rows: 3, "data-link": it.linkId, "aria-describedby": `${id}-err`, "aria-required": it.required ? "true" : undefined })
        : h("input", { id, type, step: it.type === "decimal" ? "any" : undefined, "data-link": it.linkId, "aria-describedby": `${id}-err`, "aria-required": it.required ? "true" : undefined });
      body = h("div", {}, h("label", { for: id }, label), control);
    }
    const wrap = h("div", { class: "item", "data-link-id": it.linkId }, body, err);
    this.nodes.set(it.linkId, wrap);
    return wrap;
  }

  /** The answers (as FHIR answer values) currently given for an item. */
  answers(linkId) {
    const it = this.defs.get(linkId);
    const wrap = this.nodes.get(linkId);
    if (!it || !wrap) return [];
    const own = [...wrap.querySelectorAll(`[data-link="${CSS.escape(linkId)}"]`)];
    if (it.type === "group" || it.type === "display") return [];
    if ((it.answerOption || []).length || it.type === "boolean") {
      const options = it.type === "boolean" && !(it.answerOption || []).length ? [{ valueBoolean: true }, { valueBoolean: false }] : it.answerOption;
      return own.filter((c) => c.checked).map((c) => valueOf(options[Number(c.value)]));
    }
    const v = own[0]?.value?.trim();
    if (!v) return [];
    switch (it.type) {
      case "integer":
        return [{ valueInteger: Number.isInteger(Number(v)) ? Number(v) : v }];
      case "decimal":
        return [{ valueDecimal: Number(v) }];
      case "date":
        return [{ valueDate: v }];
      case "dateTime":
        return [{ valueDateTime: v.length === 16 ? `${v}:00` : v }];
      case "time":
        return [{ valueTime: v.length === 5 ? `${v}:00` : v }];
      default:
        return [{ valueString: v }];
    }
  }

  enabled(linkId, depth = 0) {
    const it = this.defs.get(linkId);
    if (!it || depth > 20) return true;
    const conds = it.enableWhen || [];
    if (!conds.length) return true;
    const results = conds.map((c) => this.condition(c, depth));
    return it.enableBehavior === "any" ? results.some(Boolean) : results.every(Boolean);
  }

  condition(c, depth) {
    const given = this.enabled(c.question, depth + 1) ? this.answers(c.question) : [];
    if (c.operator === "exists") return (given.length > 0) === (c.answerBoolean !== false);
    const [k, want] = Object.entries(c).find(([key]) => key.startsWith("answer")) || [];
    if (!k) return false;
    return given.some((a) => {
      const got = Object.values(a)[0];
      const same = typeof want === "object" ? got?.code === want.code && (!want.system || got?.system === want.system) : got === want;
      switch (c.operator) {
        case "=":
          return same;
        case "!=":
          return !same;
        case ">":
          return got > want;
        case "<":
          return got < want;
        case ">=":
          return got >= want;
        case "<=":
          return got <= want;
        default:
          return false;
      }
    });
  }

  /** Show or hide each item by its enableWhen conditions. */
  refresh() {
    for (const [linkId, node] of this.nodes) {
      const on = this.enabled(linkId);
      node.hidden = !on;
      for (const c of node.querySelectorAll(`[data-link="${CSS.escape(linkId)}"]`)) c.disabled = !on;
    }
  }

  /** The QuestionnaireResponse of the form (enabled, answered items only). */
  response(patientId) {
    this.paths.clear();
    const build = (items, at) => {
      const out = [];
      for (const it of items) {
        if (!this.enabled(it.linkId) || it.type === "display" || it.readOnly) continue;
        const path = `${at}.item[${out.length}]`;
        if (it.type === "group") {
          const children = build(it.item || [], path);
          if (!children.length) continue;
          this.paths.set(path, it.linkId);
          out.push({ linkId: it.linkId, text: it.text, item: children });
          continue;
        }
        const answer = this.answers(it.linkId);
        if (!answer.length) continue;
        this.paths.set(path, it.linkId);
        out.push({ linkId: it.linkId, text: it.text, answer });
      }
      return out;
    };
    const me = api.practitionerId();
    const qr = {
      resourceType: "QuestionnaireResponse",
      questionnaire: this.q.url,
      status: "completed",
      subject: { reference: `Patient/${patientId}` },
      authored: new Date().toISOString().replace(/\.\d+Z$/, "Z"),
      item: build(this.q.item || [], "QuestionnaireResponse"),
    };
    if (me) qr.author = { reference: `Practitioner/${me}` };
    return qr;
  }

  clearErrors() {
    for (const e of this.errors.values()) {
      e.hidden = true;
      e.textContent = "";
      e.closest(".item")?.classList.remove("invalid");
    }
  }

  /** Put each issue of the OperationOutcome next to its item; answers how many were placed. */
  showErrors(oo) {
    let placed = 0;
    for (const issue of oo?.issue || []) {
      const expr = (issue.expression || issue.location || [])[0] || "";
      let linkId = /linkId='([^']+)'/.exec(expr)?.[1];
      if (!linkId) {
        // The longest response path of ours that the expression starts with.
        let best = "";
        for (const [path, id] of this.paths) {
          if ((expr === path || expr.startsWith(`${path}.`)) && path.length > best.length) {
            best = path;
            linkId = id;
          }
        }
      }
      if (!linkId) linkId = /item '([^']+)'/.exec(issue.diagnostics || "")?.[1];
      const err = linkId && this.errors.get(linkId);
      if (!err) continue;
      err.hidden = false;
      err.textContent = [err.textContent, issue.diagnostics || issue.details?.text || issue.code].filter(Boolean).join(" · ");
      err.closest(".item")?.classList.add("invalid");
      placed += 1;
    }
    return placed;
  }
}

function optionText(o) {
  if (o.valueCoding) return o.valueCoding.display || o.valueCoding.code;
  if (o.valueBoolean !== undefined) return o.valueBoolean ? "Yes" : "No";
  const v = Object.entries(o).find(([k]) => k.startsWith("value"));
  return v ? String(v[1]) : "?";
}

function valueOf(o) {
  const [k, v] = Object.entries(o).find(([key]) => key.startsWith("value")) || [];
  if (!k) return {};
  if (k === "valueCoding") return { valueCoding: { system: v.system, code: v.code, display: v.display } };
  return { [k]: v };
}
