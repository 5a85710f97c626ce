// Drives the dashboard in Debian's chromium with playwright-core, against the
// node that test_dashboard.c started (it prepared a run waiting for approval).
//
//   1. open /, sign in with the token, see the run in waiting_approval (filtered
//      by status), open its live timeline;
//   2. from that tab open the approvals inbox (window.open keeps the tab's
//      sessionStorage, so no second sign-in), approve the run there, and see
//      the first tab's timeline reach run.succeeded without a reload;
//   3. flip the kill switch of one tool and back; look at the cluster panel;
//   4. create TROUPE_BULK_RUNS runs (default 10000) through the API and page
//      through the whole list in the browser: every run exactly once.
// Screenshots are saved to TROUPE_SHOTS and their paths printed. Exits 0 on
// success, 1 with the reason on stderr. No fixed sleeps: every wait is for a
// condition, with playwright's timeout as a guard against hangs.
import { chromium } from 'playwright-core';
import fs from 'node:fs';
import path from 'node:path';

const base = process.env.TROUPE_URL;
const token = process.env.TROUPE_TOKEN;
const runId = process.env.TROUPE_RUN;
const doneRunId = process.env.TROUPE_DONE_RUN; // a run that already succeeded
const toolName = process.env.TROUPE_TOOL || 'lookup_order';
const shots = process.env.TROUPE_SHOTS || path.resolve('screenshots');
const bulk = Number(process.env.TROUPE_BULK_RUNS || 10000);
const chromiumPath = process.env.TROUPE_CHROMIUM || '/usr/bin/chromium';
const GUARD = 60000; // ms: a hang guard, never a pass/fail threshold

function fail(msg) {
  console.error('dashboard.mjs: FAIL: ' + msg);
  process.exitCode = 1;
  throw new Error(msg);
}
function check(cond, msg) { if (!cond) fail(msg); }

async function api(method, p, body) {
  const r = await fetch(base + p, {
    method,
    headers: Object.assign({ Authorization: 'Bearer ' + token }, body ? { 'Content-Type': 'application/json' } : {}),
    body: body ? JSON.stringify(body) : undefined,
  });
  const j = await r.json();
  if (!r.ok) fail(method + ' ' + p + ': HTTP ' + r.status + ' ' + JSON.stringify(j));
  return j;
}

// Create n runs through the API, a few requests in flight at once.
async function createRuns(n) {
  let next = 0;
  const ids = new Set();
  async function worker() {
    while (next < n) {
      const i = next++;
      const r = await api('POST', '/v1/runs', {
        goal: 'bulk run ' + i,
        agent: { model: 'mock-gpt', system: '[mock:quick] Answer at once.' },
        metadata: { bulk: i },
      });
      ids.add(r.id);
    }
  }
  await Promise.all(Array.from({ length: 16 }, worker));
  return ids;
}

let shotNo = 0;
async function shot(page, name) {
  const file = path.join(shots, String(++shotNo).padStart(2, '0') + '-' + name + '.png');
  await page.screenshot({ path: file, fullPage: true });
  console.log('screenshot: ' + file);
}

async function main() {
  check(base && token && runId && doneRunId, 'TROUPE_URL, TROUPE_TOKEN, TROUPE_RUN and TROUPE_DONE_RUN must be set');
  check(fs.existsSync(chromiumPath), chromiumPath + ' not found: scripts/install-deps.sh installs chromium');
  fs.mkdirSync(shots, { recursive: true });

  const args = ['--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
    '--disable-component-update', '--disable-sync'];
  if (process.getuid && process.getuid() === 0) args.push('--no-sandbox'); // chromium refuses root otherwise
  const browser = await chromium.launch({ executablePath: chromiumPath, headless: true, args });
  const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  context.setDefaultTimeout(GUARD);
  const problems = [];
  context.on('page', (p) => {
    p.on('pageerror', (e) => problems.push('page error: ' + e.message));
    p.on('console', (m) => {
      if (/Content Security Policy|Refused to/.test(m.text())) problems.push('console: ' + m.text());
    });
  });
  try {
    const page = await context.newPage();

    // 1. Sign in; the run waits for approval.
    await page.goto(base + '/');
    await page.locator('#login').waitFor({ state: 'visible' });
    await shot(page, 'sign-in');
    await page.fill('#token', token);
    await page.click('#login-form button[type=submit]');
    await page.locator(`#runs-body tr[data-run-id="${doneRunId}"][data-status="succeeded"]`).waitFor();
    await page.locator(`#runs-body tr[data-run-id="${runId}"]`).waitFor();
    await page.click('button[data-filter="waiting_approval"]');
    await page.locator('button[data-filter="waiting_approval"][aria-pressed="true"]').waitFor();
    const row = page.locator(`#runs-body tr[data-run-id="${runId}"][data-status="waiting_approval"]`);
    await row.waitFor();
    const shown = await page.locator('#runs-body tr[data-run-id]').evaluateAll((rs) => rs.map((r) => r.dataset.runId));
    check(shown.length === 1, 'the waiting_approval filter shows other runs: ' + shown.join(' '));
    await page.locator('#approvals-count:not([hidden])').waitFor();
    await shot(page, 'runs-waiting');

    await row.locator('a').click();
    await page.locator('#run-status[data-status="waiting_approval"]').waitFor();
    await page.locator('#timeline li[data-type="approval.requested"]').waitFor();
    await page.locator('#timeline li[data-type="llm.completed"]').first().waitFor();
    await page.locator('#run-live.on').waitFor();
    const firstCompletion = await page.locator('#timeline li[data-type="llm.completed"]').first().innerText();
    check(firstCompletion.includes('Let me look up the order first.') && firstCompletion.includes('lookup_order'),
      'the timeline does not show the model\'s message and tool call: ' + firstCompletion);
    check(await page.locator('#timeline li[data-type="tool.completed"]').count() >= 1, 'no tool result in the timeline');
    await shot(page, 'run-waiting');
    await page.evaluate(() => { window.__sameDocument = true; });

    // 2. The inbox, in a second tab opened from the first; approve there.
    const [inbox] = await Promise.all([
      context.waitForEvent('page'),
      page.evaluate(() => { window.open('/#/approvals', '_blank'); }),
    ]);
    const card = inbox.locator(`#approvals article[data-run-id="${runId}"]`);
    await card.waitFor();
    check((await card.innerText()).includes('issue_refund'), 'the approval card does not name the tool');
    await shot(inbox, 'approvals');
    await card.locator('input').fill('approved in the browser test');
    await card.locator('button.approve').click();
    await card.waitFor({ state: 'detached' });
    await inbox.close();

    // The first tab's timeline follows live to the end.
    await page.bringToFront();
    await page.locator('#timeline li[data-type="approval.decided"]').waitFor();
    await page.locator('#timeline li[data-type="run.succeeded"]').waitFor();
    await page.locator('#run-status[data-status="succeeded"]').waitFor();
    await page.locator('#run-live[data-state="ended"]').waitFor();
    check(await page.evaluate(() => window.__sameDocument === true), 'the run page was reloaded');
    check(!/\bnull\b|undefined/.test(await page.locator('#run-summary').innerText()), 'the run summary shows null');
    const done = await page.locator('#timeline li[data-type="run.succeeded"]').innerText();
    check(done.includes('Refund issued for order A-1234'), 'run.succeeded does not show the output: ' + done);
    check(/completion tokens/.test(await page.locator('#run-usage').innerText()), 'no usage shown');
    const seqs = await page.locator('#timeline li').evaluateAll((ls) => ls.map((l) => Number(l.dataset.seq)));
    check(seqs.every((s, i) => s === i + 1), 'timeline seqs are not 1..N: ' + seqs.join(','));
    await shot(page, 'run-succeeded');

    // 3. The kill switch, and the cluster panel.
    await page.click('a[data-tab="tools"]');
    page.once('dialog', (d) => d.accept());
    await page.click(`#tools-body button[data-tool="${toolName}"]`);
    await page.locator(`#tools-body tr[data-tool="${toolName}"][data-enabled="false"]`).waitFor();
    check((await api('GET', '/v1/tools/' + toolName)).enabled === false, 'the kill switch did not disable the tool');
    await shot(page, 'tools-disabled');
    await page.click(`#tools-body button[data-tool="${toolName}"]`);
    await page.locator(`#tools-body tr[data-tool="${toolName}"][data-enabled="true"]`).waitFor();
    check((await api('GET', '/v1/tools/' + toolName)).enabled === true, 'enable did not take');

    await page.click('a[data-tab="cluster"]');
    await page.locator('#nodes-body tr[data-node]').first().waitFor();
    check((await page.locator('#cluster-leader').innerText()).startsWith('node '), 'no leader shown');
    await shot(page, 'cluster');

    // 4. Thousands of runs, paged.
    const t0 = Date.now();
    const created = await createRuns(bulk);
    console.log(`created ${created.size} runs through the API in ${((Date.now() - t0) / 1000).toFixed(1)} s`);
    check(created.size === bulk, 'created ' + created.size + ' of ' + bulk);
    await page.click('a[data-tab="runs"]');
    await page.locator('#runs-page[data-page="1"]').waitFor();
    const seen = new Map();
    let pages = 0;
    for (;;) {
      pages++;
      const ids = await page.locator('#runs-body tr[data-run-id]').evaluateAll((rs) => rs.map((r) => r.dataset.runId));
      for (const id of ids) seen.set(id, (seen.get(id) || 0) + 1);
      if (pages === 2) await shot(page, 'runs-page-2');
      if (await page.locator('#runs-next').isDisabled()) break;
      await page.click('#runs-next');
      await page.locator(`#runs-page[data-page="${pages + 1}"]`).waitFor();
    }
    const dupes = [...seen.values()].filter((c) => c > 1).length;
    check(dupes === 0, dupes + ' runs shown on more than one page');
    for (const id of created) if (!seen.has(id)) fail('run ' + id + ' never shown while paging');
    check(seen.has(runId) && seen.has(doneRunId), 'a run created before is missing from the list');
    check(seen.size === bulk + 2, 'paging showed ' + seen.size + ' runs, expected ' + (bulk + 2));
    // And back: the previous page is the one before.
    await page.click('#runs-prev');
    await page.locator(`#runs-page[data-page="${pages - 1}"]`).waitFor();
    console.log(`paged through ${seen.size} runs in ${pages} pages of up to 50`);

    check(problems.length === 0, 'browser problems:\n  ' + problems.join('\n  '));
    console.log('dashboard.mjs: ok');
  } finally {
    await browser.close();
  }
}

main().catch((e) => {
  if (!process.exitCode) console.error('dashboard.mjs: FAIL: ' + (e && e.stack ? e.stack : e));
  process.exitCode = 1;
});
