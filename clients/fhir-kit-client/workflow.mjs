// A care-coordination workflow driven through fhir-kit-client against a live icm-fhir.
// Usage: FHIR_BASE=http://127.0.0.1:8080/fhir [FHIR_TOKEN=<jwt>] node workflow.mjs
// Every result is asserted exactly; the first mismatch exits 1 naming the step.
// Run by .ci/clients on SQLite and PostgreSQL.
import { randomUUID } from 'node:crypto';
import { isDeepStrictEqual, inspect } from 'node:util';
import { Client } from 'fhir-kit-client';

const BASE = process.env.FHIR_BASE ?? 'http://127.0.0.1:8080/fhir';
const TOKEN = process.env.FHIR_TOKEN ?? '';
const TAG = randomUUID().replaceAll('-', '').slice(0, 10); // keeps this run's data apart
const MRN = 'urn:icm-ci:mrn';
const TASK_ID = 'urn:icm-ci:task';

let checks = 0;
function fail(step, msg) {
  console.error(`FAIL [fhir-kit-client] ${step}: ${msg}`);
  process.exit(1);
}
function eq(step, got, want) {
  checks++;
  if (!isDeepStrictEqual(got, want)) fail(step, `expected ${inspect(want, { depth: 6 })}, got ${inspect(got, { depth: 6 })}`);
}
function ok(step, cond, msg = 'condition false') {
  checks++;
  if (!cond) fail(step, msg);
}
// Expect the call to fail with this HTTP status; returns the error's body (an OperationOutcome).
async function rejects(step, status, fn) {
  checks++;
  try {
    await fn();
  } catch (e) {
    if (e?.response?.status !== status) fail(step, `expected HTTP ${status}, got ${e?.response?.status ?? e}`);
    return e.response.data;
  }
  fail(step, `expected HTTP ${status}, the call succeeded`);
}
const codes = (oo) => (oo?.issue ?? []).map((i) => i.code);
const statusOf = (r) => Client.httpFor(r).response.status;
const header = (r, name) => Client.httpFor(r).response.headers.get(name);
const ids = (bundle) => (bundle.entry ?? []).filter((e) => e.search?.mode === 'match').map((e) => e.resource.id).sort();
const ref = (r) => ({ reference: `${r.resourceType}/${r.id}` });

async function main() {
  const client = new Client({ baseUrl: BASE, ...(TOKEN ? { bearerToken: TOKEN } : {}) });

  // -- capability statement (public) and authentication
  const cs = await client.capabilityStatement();
  eq('metadata', [cs.resourceType, cs.fhirVersion], ['CapabilityStatement', '4.0.1']);
  if (TOKEN) {
    const anon = new Client({ baseUrl: BASE });
    const oo = await rejects('no token → 401', 401, () => anon.read({ resourceType: 'Patient', id: 'x' }));
    eq('no token issue code', codes(oo), ['login']);
  }

  // -- create
  const family = `Kit${TAG}`;
  const patient = await client.create({
    resourceType: 'Patient',
    body: { resourceType: 'Patient', identifier: [{ system: MRN, value: TAG }], name: [{ family, given: ['Ada'] }], birthDate: '1950-03-04' },
  });
  eq('create Patient status', statusOf(patient), 201);
  eq('create Patient Location', header(patient, 'location'), `${BASE}/Patient/${patient.id}/_history/1`);
  eq('create Patient ETag', header(patient, 'etag'), 'W/"1"');
  const practitioner = await client.create({
    resourceType: 'Practitioner',
    body: { resourceType: 'Practitioner', name: [{ family: `Carer${TAG}` }] },
  });
  const careteam = await client.create({
    resourceType: 'CareTeam',
    body: { resourceType: 'CareTeam', status: 'active', subject: ref(patient), participant: [{ member: ref(practitioner) }] },
  });
  const careplan = await client.create({
    resourceType: 'CarePlan',
    body: { resourceType: 'CarePlan', status: 'active', intent: 'plan', subject: ref(patient), careTeam: [ref(careteam)] },
  });
  const newTask = (name, status) =>
    client.create({
      resourceType: 'Task',
      body: {
        resourceType: 'Task',
        identifier: [{ system: TASK_ID, value: `${TAG}-${name}` }],
        status,
        intent: 'order',
        basedOn: [ref(careplan)],
        for: ref(patient),
        owner: ref(practitioner),
      },
    });
  let call = await newTask('call', 'requested');
  const visit = await newTask('visit', 'requested');
  const draft = await newTask('draft', 'draft');
  eq('create Tasks', [call.status, visit.status, draft.status, call.meta.versionId], ['requested', 'requested', 'draft', '1']);

  // -- read, vread, resolve
  const read = await client.read({ resourceType: 'Patient', id: patient.id });
  eq('read Patient', [read.id, read.name[0].family, read.birthDate], [patient.id, family, '1950-03-04']);
  const vread = await client.vread({ resourceType: 'Task', id: call.id, version: '1' });
  eq('vread Task', [vread.id, vread.meta.versionId, vread.owner.reference], [call.id, '1', `Practitioner/${practitioner.id}`]);
  const resolved = await client.resolve({ reference: `CareTeam/${careteam.id}` });
  eq('resolve CareTeam', resolved.participant[0].member.reference, `Practitioner/${practitioner.id}`);
  const plan = await client.read({ resourceType: 'CarePlan', id: careplan.id });
  eq('read CarePlan', [plan.status, plan.careTeam[0].reference], ['active', `CareTeam/${careteam.id}`]);

  // -- search: totals, _count=0, _include, compartment search, POST _search, paging
  const requested = await client.search({ resourceType: 'Task', searchParams: { patient: patient.id, status: 'requested' } });
  eq('search Task by patient & status', [ids(requested), requested.total], [[call.id, visit.id].sort(), 2]);
  const counted = await client.search({ resourceType: 'Task', searchParams: { patient: patient.id, _count: 0 } });
  eq('_count=0 gives the total and no entries', [counted.total, counted.entry ?? []], [3, []]);
  const summary = await client.search({ resourceType: 'Patient', searchParams: { name: family, _summary: 'count' } });
  eq('_summary=count', summary.total, 1);
  const byName = await client.search({ resourceType: 'Patient', searchParams: { name: family.toUpperCase() } });
  eq('search Patient by name (case-insensitive)', ids(byName), [patient.id]);
  const inc = await client.search({
    resourceType: 'Task',
    searchParams: { patient: patient.id, status: 'requested', _include: ['Task:patient', 'Task:owner'] },
  });
  eq(
    '_include Task:patient + Task:owner',
    inc.entry.map((e) => [e.search.mode, e.resource.resourceType, e.resource.id]).sort(),
    [
      ['include', 'Patient', patient.id],
      ['include', 'Practitioner', practitioner.id],
      ['match', 'Task', call.id],
      ['match', 'Task', visit.id],
    ].sort(),
  );
  // (compartment search, GET Patient/{id}/CareTeam, is not served: the server answers 404; search by patient instead)
  const teams = await client.search({ resourceType: 'CareTeam', searchParams: { patient: patient.id } });
  eq('search CareTeam by patient', ids(teams), [careteam.id]);
  const posted = await client.search({
    resourceType: 'Task',
    searchParams: { identifier: `${TASK_ID}|${TAG}-draft` },
    options: { postSearch: true },
  });
  eq('POST _search', ids(posted), [draft.id]);
  const page1 = await client.search({ resourceType: 'Task', searchParams: { patient: patient.id, _count: 2, _sort: '_id' } });
  eq('page 1', page1.entry.length, 2);
  const page2 = await client.nextPage({ bundle: page1 });
  eq('page 2', page2.entry.length, 1);
  eq('pages hold every Task once', [...ids(page1), ...ids(page2)].sort(), [call.id, visit.id, draft.id].sort());
  eq('no page 3', client.nextPage({ bundle: page2 }), undefined);
  const back = await client.prevPage({ bundle: page2 });
  eq('previous page', ids(back), ids(page1));

  // -- Task lifecycle through update (PUT), as the server's state machine allows
  let version = 1;
  for (const status of ['accepted', 'in-progress', 'completed']) {
    call = await client.update({ resourceType: 'Task', id: call.id, body: { ...call, status } });
    version++;
    eq(`update Task → ${status}`, [call.status, call.meta.versionId], [status, String(version)]);
  }
  ok('executionPeriod set', Boolean(call.executionPeriod?.start && call.executionPeriod?.end));
  const refused = await rejects('completed → in-progress refused', 409, () =>
    client.update({ resourceType: 'Task', id: call.id, body: { ...call, status: 'in-progress' } }),
  );
  eq('refused transition issue code', codes(refused), ['business-rule']);
  // version-aware update: a stale If-Match is 412
  await rejects('stale If-Match → 412', 412, () =>
    client.update({ resourceType: 'Task', id: visit.id, body: { ...visit, priority: 'urgent' }, options: { headers: { 'If-Match': 'W/"9"' } } }),
  );

  // -- JSON Patch (RFC 6902)
  const patched = await client.patch({
    resourceType: 'Task',
    id: draft.id,
    jsonPatch: [
      { op: 'test', path: '/status', value: 'draft' },
      { op: 'replace', path: '/status', value: 'requested' },
      { op: 'add', path: '/priority', value: 'urgent' },
    ],
  });
  eq('JSON Patch', [patched.status, patched.priority, patched.meta.versionId], ['requested', 'urgent', '2']);
  const failedTest = await rejects('JSON Patch failed test → 422', 422, () =>
    client.patch({ resourceType: 'Task', id: draft.id, jsonPatch: [{ op: 'test', path: '/status', value: 'draft' }] }),
  );
  eq('failed test issue code', codes(failedTest), ['processing']);

  // -- conditional create (If-None-Exist) and conditional update (PUT ?criteria)
  const dupBody = { resourceType: 'Patient', identifier: [{ system: MRN, value: TAG }], name: [{ family }] };
  const existing = await client.create({ resourceType: 'Patient', body: dupBody, options: { headers: { 'If-None-Exist': `identifier=${MRN}|${TAG}` } } });
  eq('conditional create (match)', [statusOf(existing), existing.id], [200, patient.id]);
  const mrn2 = `${TAG}-2`;
  const second = await client.create({
    resourceType: 'Patient',
    body: { ...dupBody, identifier: [{ system: MRN, value: mrn2 }] },
    options: { headers: { 'If-None-Exist': `identifier=${MRN}|${mrn2}` } },
  });
  eq('conditional create (no match)', statusOf(second), 201);
  ok('conditional create new id', second.id !== patient.id);
  const condUpd = await client.update({
    resourceType: 'Patient',
    searchParams: { identifier: `${MRN}|${mrn2}` },
    body: { ...dupBody, identifier: [{ system: MRN, value: mrn2 }], active: false },
  });
  eq('conditional update (1 match)', [statusOf(condUpd), condUpd.id, condUpd.meta.versionId, condUpd.active], [200, second.id, '2', false]);

  // -- transaction: urn:uuid references resolved, all or nothing
  const pFull = `urn:uuid:${randomUUID()}`;
  const tx = await client.transaction({
    body: {
      resourceType: 'Bundle',
      type: 'transaction',
      entry: [
        {
          fullUrl: pFull,
          resource: { resourceType: 'Patient', identifier: [{ system: MRN, value: `${TAG}-tx` }], name: [{ family }] },
          request: { method: 'POST', url: 'Patient' },
        },
        {
          resource: { resourceType: 'Task', status: 'requested', intent: 'order', for: { reference: pFull }, owner: ref(practitioner) },
          request: { method: 'POST', url: 'Task' },
        },
        { request: { method: 'GET', url: `Patient?name=${family}&_count=0` } },
      ],
    },
  });
  eq('transaction-response', [tx.type, tx.entry.map((e) => e.response.status.split(' ')[0])], ['transaction-response', ['201', '201', '200']]);
  const txPatient = tx.entry[0].resource;
  eq('transaction rewrote urn:uuid', tx.entry[1].resource.for.reference, `Patient/${txPatient.id}`);
  eq('transaction GET sees its own writes', tx.entry[2].resource.total, 3);
  const badTx = await rejects('failing transaction → 409, rolled back', 409, () =>
    client.transaction({
      body: {
        resourceType: 'Bundle',
        type: 'transaction',
        entry: [
          { resource: { resourceType: 'Patient', name: [{ family: `Rollback${TAG}` }] }, request: { method: 'POST', url: 'Patient' } },
          { resource: { ...call, status: 'in-progress' }, request: { method: 'PUT', url: `Task/${call.id}` } },
        ],
      },
    }),
  );
  eq('failing transaction issue code', codes(badTx), ['business-rule']);
  const rolledBack = await client.search({ resourceType: 'Patient', searchParams: { name: `Rollback${TAG}`, _count: 0 } });
  eq('nothing of the failed transaction was written', rolledBack.total, 0);

  // -- batch: entries independent, failures reported per entry
  const batch = await client.batch({
    body: {
      resourceType: 'Bundle',
      type: 'batch',
      entry: [
        { request: { method: 'GET', url: `Task/${visit.id}` } },
        { request: { method: 'GET', url: `Task/no-such-task-${TAG}` } },
        { resource: { resourceType: 'Practitioner', name: [{ family: `Batch${TAG}` }] }, request: { method: 'POST', url: 'Practitioner' } },
      ],
    },
  });
  eq('batch-response statuses', [batch.type, batch.entry.map((e) => e.response.status.split(' ')[0])], ['batch-response', ['200', '404', '201']]);
  eq('batch read', batch.entry[0].resource.id, visit.id);

  // -- history
  const hist = await client.history({ resourceType: 'Task', id: call.id });
  eq('instance history', [hist.type, hist.total, hist.entry.map((e) => e.resource.meta.versionId)], ['history', 4, ['4', '3', '2', '1']]);

  // -- revoking the CarePlan cancels its open Tasks
  const revoked = await client.update({ resourceType: 'CarePlan', id: careplan.id, body: { ...plan, status: 'revoked' } });
  eq('CarePlan revoked', revoked.status, 'revoked');
  eq('X-ICM-Cancelled-Tasks', header(revoked, 'x-icm-cancelled-tasks'), '2');
  const after = await client.search({ resourceType: 'Task', searchParams: { 'based-on': `CarePlan/${careplan.id}`, _sort: '_id' } });
  eq(
    'open Tasks cancelled, completed one kept',
    Object.fromEntries(after.entry.map((e) => [e.resource.id, e.resource.status])),
    { [call.id]: 'completed', [visit.id]: 'cancelled', [draft.id]: 'cancelled' },
  );

  // -- delete: 204; read is 410; search no longer finds it; deleting again is still 204
  const del = await client.delete({ resourceType: 'Task', id: draft.id });
  eq('delete status', statusOf(del), 204);
  await rejects('read deleted → 410', 410, () => client.read({ resourceType: 'Task', id: draft.id }));
  const left = await client.search({ resourceType: 'Task', searchParams: { patient: patient.id, _count: 0 } });
  eq('count after delete', left.total, 2);
  eq('delete again', statusOf(await client.delete({ resourceType: 'Task', id: draft.id })), 204);
  await rejects('read unknown → 404', 404, () => client.read({ resourceType: 'Task', id: `nope-${TAG}` }));

  console.log(`fhir-kit-client workflow OK: ${checks} checks`);
}

main().catch((e) => {
  const body = e?.response?.data ? ` ${JSON.stringify(e.response.data)}` : '';
  console.error(`FAIL [fhir-kit-client] unexpected error: ${e?.message ?? e}${body}`);
  process.exit(1);
});
