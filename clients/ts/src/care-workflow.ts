// A small care workflow written against the types openapi-typescript generates from
// openapi/openapi.json: a Patient, a CarePlan for them and a Task under the plan, sent with a
// typed openapi-fetch client. Type-checked in CI (`tsc --noEmit`, .ci/typed-clients); the
// `@ts-expect-error` lines prove the generated types reject wrong shapes (tsc fails if they
// ever stop being errors).
import createClient from "openapi-fetch";
import type { components, paths } from "./generated/icm-fhir";

type Schemas = components["schemas"];
export type Patient = Schemas["Patient"];
export type CarePlan = Schemas["CarePlan"];
export type Task = Schemas["Task"];
export type Reference = Schemas["Reference"];
export type Resource = Schemas["Resource"];

export const patient: Patient = {
  resourceType: "Patient",
  active: true,
  name: [{ use: "official", family: "Chalmers", given: ["Peter", "James"] }],
  telecom: [{ system: "phone", value: "(03) 5555 6473", use: "home" }],
  gender: "male",
  birthDate: "1974-12-25",
  _birthDate: {
    extension: [
      {
        url: "http://hl7.org/fhir/StructureDefinition/patient-birthTime",
        valueDateTime: "1974-12-25T14:35:45-05:00",
      },
    ],
  },
  contact: [
    {
      relationship: [
        { coding: [{ system: "http://terminology.hl7.org/CodeSystem/v2-0131", code: "N" }] },
      ],
      name: { family: "du Marché", given: ["Bénédicte"] },
    },
  ],
};

function subjectOf(id: string, display?: string): Reference {
  return { reference: `Patient/${id}`, display };
}

export function carePlanFor(patientId: string): CarePlan {
  return {
    resourceType: "CarePlan",
    status: "active",
    intent: "plan",
    title: "Diabetes care",
    subject: subjectOf(patientId),
    period: { start: "2026-11-30" },
    activity: [
      {
        detail: {
          kind: "Appointment",
          status: "scheduled",
          description: "Weekly nurse call",
          scheduledTiming: { repeat: { frequency: 1, period: 1, periodUnit: "wk" } },
        },
      },
    ],
  };
}

export function taskFor(patientId: string, carePlanId: string): Task {
  return {
    resourceType: "Task",
    status: "requested",
    intent: "order",
    priority: "routine",
    basedOn: [{ reference: `CarePlan/${carePlanId}` }],
    for: subjectOf(patientId),
    description: "Call the patient about their HbA1c result",
    restriction: { repetitions: 1, period: { end: "2026-12-07" } },
    input: [{ type: { text: "script" }, valueString: "Ask about diet" }],
  };
}

// --- Wrong shapes the generated types reject -------------------------------------------------

export const badStatus: Task = {
  resourceType: "Task",
  // @ts-expect-error "done" is not a code of the required task-status value set
  status: "done",
  intent: "order",
};

export const stringForReference: Task = {
  resourceType: "Task",
  status: "requested",
  intent: "order",
  // @ts-expect-error Task.for is a Reference object, not a reference string
  for: "Patient/123",
};

// @ts-expect-error CarePlan.subject is required (1..1)
export const noSubject: CarePlan = { resourceType: "CarePlan", status: "active", intent: "plan" };

export const twoBirthDates: Patient = {
  resourceType: "Patient",
  // @ts-expect-error Patient.birthDate is 0..1: one value, not an array
  birthDate: ["1974-12-25"],
};

export const wrongResourceType: Patient = {
  // @ts-expect-error resourceType is the single value "Patient"
  resourceType: "Practitioner",
};

export const unknownElement: Patient = {
  resourceType: "Patient",
  // @ts-expect-error no such element on Patient
  nickname: "Pete",
};

// --- Talking to the server with a typed client ------------------------------------------------

/** Create the patient, their plan and a task under it; return the task as stored. */
export async function careWorkflow(baseUrl: string, token: string): Promise<Task | undefined> {
  const client = createClient<paths>({
    baseUrl,
    headers: { Authorization: `Bearer ${token}` },
  });
  const created = await client.POST("/fhir/Patient", { body: patient });
  const p: Patient | undefined = created.data;
  if (!p?.id) return undefined;
  const plan = await client.POST("/fhir/CarePlan", { body: carePlanFor(p.id) });
  if (!plan.data?.id) return undefined;
  const task = await client.POST("/fhir/Task", { body: taskFor(p.id, plan.data.id) });
  // Search results: Bundle.entry.resource is the Resource union, narrowed by resourceType.
  const found = await client.GET("/fhir/Task", { params: { query: { _count: 10 } } });
  for (const entry of found.data?.entry ?? []) {
    const r: Resource | undefined = entry.resource;
    if (r?.resourceType === "Task") {
      const t: Task = r;
      console.log(t.status, t.for?.reference);
    }
  }
  return task.data;
}
