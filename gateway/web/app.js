/* The Troupe dashboard: a single page over the node's JSON API (API.md,
 * docs/HTTP.md). No framework and no build step.
 *
 * Views (hash routes): #/runs (paged list, filtered by status), #/runs/<id>
 * (one run and its live timeline), #/approvals (inbox with approve and
 * deny), #/tools (kill switch), #/cluster (nodes, leader, raft indexes).
 *
 * Auth: the API key is asked for once, when the node answers 401, and kept
 * in sessionStorage (this tab only); every call sends it as
 * `Authorization: Bearer`. The run's event stream is read with fetch() and
 * parsed as Server-Sent Events here, because EventSource cannot send that
 * header; it resumes from the last seq it saw when the connection drops.
 *
 * Safety: text from the server is only ever put into the page as text nodes
 * (el() below, textContent); no innerHTML anywhere. Lists are paged on the
 * server (50 a page), so the page stays fast with any number of runs.
 */
'use strict';

const TOKEN_KEY = 'troupe.token';
const PAGE = 50;
const STATUSES = ['queued', 'running', 'waiting_approval', 'succeeded', 'failed', 'cancelled'];
const TERMINAL = new Set(['succeeded', 'failed', 'cancelled']);

/* ---- small helpers ---------------------------------------------------------- */

/* el('td', {class: 'num', onclick: f}, 'text', child, ...): children are
 * nodes or strings (as text); null/undefined/false children are skipped. */
function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith('on')) e.addEventListener(k.slice(2), v);
    else if (k === 'dataset') Object.assign(e.dataset, v);
    else e.setAttribute(k, v === true ? '' : String(v));
  }
  for (const c of children.flat(Infinity)) {
    if (c === null || c === undefined || c === false) continue;
    e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return e;
}
const $ = (sel) => document.querySelector(sel);
function clear(node) { while (node.firstChild) node.removeChild(node.firstChild); return node; }

function fmtTime(t) {
  if (!t) return '—';
  const d = new Date(t);
  return isNaN(d) ? String(t) : d.toLocaleString();
}
function fmtCost(u) { return u === null || u === undefined ? '—' : '$' + Number(u).toFixed(6); }
function fmtInt(n) { return n === null || n === undefined ? '—' : Number(n).toLocaleString(); }
function pretty(v) {
  if (typeof v === 'string') {
    try { return JSON.stringify(JSON.parse(v), null, 2); } catch (_) { return v; }
  }
  return JSON.stringify(v, null, 2);
}
function badge(status) { return el('span', { class: 'badge st-' + status, dataset: { status } }, status); }

let toastTimer = null;
function toast(msg) {
  const t = $('#toast');
  t.textContent = msg;
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => { t.textContent = ''; }, 5000);
}

/* ---- the API ------------------------------------------------------------------ */

class ApiError extends Error {
  constructor(status, code, message) { super(message); this.status = status; this.code = code; }
}

function authHeaders(extra) {
  const h = Object.assign({}, extra || {});
  const tok = sessionStorage.getItem(TOKEN_KEY);
  if (tok) h.Authorization = 'Bearer ' + tok;
  return h;
}

async function api(method, path, body) {
  const opts = { method, headers: authHeaders(body !== undefined ? { 'Content-Type': 'application/json' } : {}) };
  if (body !== undefined) opts.body = JSON.stringify(body);
  let r;
  try {
    r = await fetch(path, opts);
  } catch (e) {
    throw new ApiError(0, 'network', 'the node did not answer (' + e.message + ')');
  }
  let j = null;
  try { j = await r.json(); } catch (_) { /* not JSON */ }
  if (r.status === 401) {
    showLogin(j && j.error ? j.error.message : 'unauthorized');
    throw new ApiError(401, 'unauthorized', 'an API key is needed');
  }
  if (!r.ok) {
    const e = j && j.error ? j.error : { code: 'http_' + r.status, message: r.statusText };
    throw new ApiError(r.status, e.code, e.message);
  }
  return j;
}

/* ---- login --------------------------------------------------------------------- */

function showLogin(msg) {
  $('#login').hidden = false;
  $('#main').hidden = true;
  $('#login-error').textContent = sessionStorage.getItem(TOKEN_KEY) ? msg : '';
  $('#token').focus();
}

function setupLogin() {
  $('#login-form').addEventListener('submit', (ev) => {
    ev.preventDefault();
    sessionStorage.setItem(TOKEN_KEY, $('#token').value.trim());
    $('#token').value = '';
    $('#login').hidden = true;
    $('#main').hidden = false;
    $('#sign-out').hidden = false;
    route();
  });
  $('#sign-out').addEventListener('click', () => {
    sessionStorage.removeItem(TOKEN_KEY);
    $('#sign-out').hidden = true;
    stopView();
    clear($('#main'));
    showLogin('');
  });
  $('#sign-out').hidden = !sessionStorage.getItem(TOKEN_KEY);
}

/* ---- views ----------------------------------------------------------------------
 * Each view renders into <main> and may register a cleanup (timers, streams)
 * that runs when another view replaces it. */

let cleanups = [];
let viewGen = 0;
function onStop(fn) { cleanups.push(fn); }
function stopView() {
  viewGen++;
  for (const f of cleanups.splice(0)) { try { f(); } catch (_) { /* ignore */ } }
}
/* Poll fn every ms while the view lives (not overlapping itself). */
function every(ms, fn) {
  let t = null, gen = viewGen;
  const tick = async () => {
    try { await fn(); } catch (e) { if (!(e instanceof ApiError && e.status === 401)) console.warn(e); }
    if (gen === viewGen) t = setTimeout(tick, ms);
  };
  t = setTimeout(tick, ms);
  onStop(() => clearTimeout(t));
}

function showError(where, e) {
  if (e instanceof ApiError && e.status === 401) return;
  clear(where).append(el('p', { class: 'error', role: 'alert' }, 'Error: ' + (e.code ? e.code + ': ' : '') + e.message));
}

function parseHash() {
  const h = location.hash.replace(/^#\/?/, '');
  const [path, query] = h.split('?');
  return { parts: path.split('/').filter(Boolean).map(decodeURIComponent), q: new URLSearchParams(query || '') };
}

function route() {
  stopView();
  refreshHeader();
  const { parts, q } = parseHash();
  const tab = parts[0] || 'runs';
  for (const a of document.querySelectorAll('.tabs a')) {
    if (a.dataset.tab === tab) a.setAttribute('aria-current', 'page');
    else a.removeAttribute('aria-current');
  }
  const main = clear($('#main'));
  if (!$('#login').hidden) return;
  if (tab === 'runs' && parts[1]) viewRun(main, parts[1]);
  else if (tab === 'runs') viewRuns(main, q);
  else if (tab === 'approvals') viewApprovals(main, q);
  else if (tab === 'tools') viewTools(main);
  else if (tab === 'cluster') viewCluster(main);
  else main.append(el('p', {}, 'No such page. ', el('a', { href: '#/runs' }, 'Runs')));
}

/* ---- runs list -------------------------------------------------------------------- */

/* Run counts by status from /metrics (troupe_runs{status="..."} N). */
async function runCounts() {
  const r = await fetch('/metrics');
  if (!r.ok) return null;
  const text = await r.text();
  const out = {};
  for (const m of text.matchAll(/^troupe_runs\{status="([a-z_]+)"\} (\d+)/gm)) out[m[1]] = Number(m[2]);
  return out;
}

function viewRuns(main, q) {
  const status = STATUSES.includes(q.get('status')) ? q.get('status') : '';
  const cursors = [null]; /* cursors[i]: where page i starts */
  let page = 0;

  const title = el('h1', {}, 'Runs');
  const chips = el('div', { class: 'chips', role: 'group', 'aria-label': 'Filter by status' });
  const counts = {};
  for (const s of [''].concat(STATUSES)) {
    const b = el('button', { type: 'button', 'aria-pressed': String(s === status), dataset: { filter: s || 'all' },
      onclick: () => { location.hash = s ? '#/runs?status=' + s : '#/runs'; } }, s || 'all');
    counts[s] = el('span', { class: 'muted' });
    b.append(' ', counts[s]);
    chips.append(b);
  }
  const prev = el('button', { type: 'button', id: 'runs-prev', onclick: () => load(page - 1) }, '← Previous');
  const next = el('button', { type: 'button', id: 'runs-next', onclick: () => load(page + 1) }, 'Next →');
  const where = el('span', { id: 'runs-page', class: 'muted', 'aria-live': 'polite' });
  const tbody = el('tbody', { id: 'runs-body' });
  const table = el('table', { 'aria-label': 'Runs' },
    el('thead', {}, el('tr', {},
      el('th', { scope: 'col' }, 'Run'), el('th', { scope: 'col' }, 'Status'), el('th', { scope: 'col' }, 'Goal'),
      el('th', { scope: 'col', class: 'num' }, 'Step'), el('th', { scope: 'col', class: 'num' }, 'Tokens'),
      el('th', { scope: 'col', class: 'num' }, 'Cost'), el('th', { scope: 'col' }, 'Updated'))),
    tbody);
  const msg = el('div');
  main.append(title, el('div', { class: 'toolbar' }, chips, el('span', { class: 'spacer' }),
    el('div', { class: 'pager', role: 'group', 'aria-label': 'Pages' }, prev, where, next)), msg, table);

  async function load(i) {
    if (i < 0 || i >= cursors.length) return;
    const qs = new URLSearchParams({ limit: String(PAGE) });
    if (status) qs.set('status', status);
    if (cursors[i]) qs.set('cursor', cursors[i]);
    prev.disabled = next.disabled = true;
    let j;
    try {
      j = await api('GET', '/v1/runs?' + qs);
    } catch (e) { showError(msg, e); return; }
    clear(msg);
    page = i;
    if (j.next_cursor && cursors.length === i + 1) cursors.push(j.next_cursor);
    clear(tbody);
    for (const r of j.runs) {
      const u = r.usage || {};
      tbody.append(el('tr', { dataset: { runId: r.id, status: r.status } },
        el('td', { class: 'mono' }, el('a', { href: '#/runs/' + encodeURIComponent(r.id) }, r.id)),
        el('td', {}, badge(r.status)),
        el('td', { class: 'goal', title: r.goal }, r.goal),
        el('td', { class: 'num' }, fmtInt(r.step)),
        el('td', { class: 'num' }, fmtInt((u.prompt_tokens || 0) + (u.completion_tokens || 0))),
        el('td', { class: 'num' }, fmtCost(u.cost_usd)),
        el('td', {}, fmtTime(r.updated_at))));
    }
    if (j.runs.length === 0)
      tbody.append(el('tr', {}, el('td', { colspan: 7, class: 'muted' }, j.next_cursor ? 'Nothing on this page; try the next one.' : 'No runs.')));
    where.textContent = 'page ' + (page + 1) + (j.runs.length ? ' · ' + j.runs.length + ' runs' : '');
    where.dataset.page = String(page + 1);
    prev.disabled = page === 0;
    next.disabled = !(cursors.length > page + 1);
  }
  async function refreshCounts() {
    const c = await runCounts();
    if (!c) return;
    let total = 0;
    for (const s of STATUSES) { total += c[s] || 0; counts[s].textContent = fmtInt(c[s] || 0); }
    counts[''].textContent = fmtInt(total);
  }
  load(0);
  refreshCounts().catch(() => {});
  every(3000, refreshCounts);
}

/* ---- one run ------------------------------------------------------------------------ */

function usageText(u) {
  if (!u) return '—';
  return fmtInt(u.prompt_tokens) + ' prompt + ' + fmtInt(u.completion_tokens) + ' completion tokens · ' + fmtCost(u.cost_usd);
}

/* Decide an approval; returns true on success. */
async function decide(id, decision, reason) {
  const body = { decision };
  if (reason) body.reason = reason;
  try {
    await api('POST', '/v1/approvals/' + encodeURIComponent(id), body);
    toast((decision === 'approve' ? 'Approved ' : 'Denied ') + id);
    refreshHeader();
    return true;
  } catch (e) {
    if (e.status !== 401) toast('Could not ' + decision + ' ' + id + ': ' + e.message);
    return false;
  }
}

function decisionControls(id, onDone) {
  const reason = el('input', { type: 'text', placeholder: 'Reason (optional)', 'aria-label': 'Reason for ' + id, maxlength: 4096 });
  const go = async (d, btns) => {
    for (const b of btns) b.disabled = true;
    if (await decide(id, d, reason.value.trim())) onDone && onDone(d);
    else for (const b of btns) b.disabled = false;
  };
  const approve = el('button', { type: 'button', class: 'approve', dataset: { approve: id } }, 'Approve');
  const deny = el('button', { type: 'button', class: 'deny', dataset: { deny: id } }, 'Deny');
  approve.addEventListener('click', () => go('approve', [approve, deny]));
  deny.addEventListener('click', () => go('deny', [approve, deny]));
  return el('div', { class: 'actions' }, reason, approve, deny);
}

function argsBlock(label, v) {
  if (v === null || v === undefined) return null;
  return el('div', {}, el('span', { class: 'muted' }, label), el('pre', {}, pretty(v)));
}

/* The body of one journal event, readable. Unknown types show their data. */
function eventBody(ev, ctx) {
  const d = ev.data || {};
  switch (ev.type) {
  case 'run.created':
    return [el('div', { class: 'message' }, d.goal),
      d.agent ? el('div', { class: 'muted' }, 'model ' + (d.agent.model || 'default') +
        (d.agent.tools && d.agent.tools.length ? ' · tools: ' + d.agent.tools.join(', ') : '')) : null];
  case 'run.assigned':
    return [el('div', { class: 'muted' }, 'owner node ' + d.owner_node +
      (d.previous_owner ? ' (was ' + d.previous_owner + ')' : '') + (d.reason ? ' · ' + d.reason : ''))];
  case 'llm.requested':
    return [el('div', { class: 'muted' }, 'step ' + d.step + ' · ' + (d.model || '') + ' · ' + fmtInt(d.message_count) +
      ' messages · ~' + fmtInt(d.prompt_tokens_est) + ' tokens' + (d.attempt > 1 ? ' · attempt ' + d.attempt : ''))];
  case 'llm.completed':
    return [
      d.content ? el('div', { class: 'message' }, d.content) : null,
      (d.tool_calls || []).map((c) => el('div', { class: 'call' },
        el('strong', {}, 'calls ' + c.name), ' ', el('span', { class: 'muted mono' }, c.id || ''),
        el('pre', {}, pretty(c.arguments)))),
      el('div', { class: 'muted' }, 'step ' + d.step + ' · ' + (d.finish_reason || '') + ' · ' + usageText(d.usage) +
        ' · ' + fmtInt(d.latency_ms) + ' ms'),
    ];
  case 'tool.requested':
    return [el('div', {}, el('strong', {}, d.tool), ' ', el('span', { class: 'badge' }, d.risk)),
      argsBlock('arguments', d.arguments)];
  case 'tool.started':
    return [el('div', {}, el('strong', {}, d.tool), ' v' + d.version + (d.attempt > 1 ? ' · attempt ' + d.attempt : ''))];
  case 'tool.completed': {
    const name = ctx.callTools[d.call_id] || 'tool';
    return [el('div', {}, el('strong', {}, name), ' ',
      d.is_error ? el('span', { class: 'bad' }, 'error') : el('span', { class: 'ok' }, 'ok'),
      el('span', { class: 'muted' }, ' · ' + fmtInt(d.duration_ms) + ' ms')),
      d.error ? el('pre', { class: 'bad' }, d.error) : null,
      d.result !== null && d.result !== undefined ? argsBlock('result', d.result) : null,
      d.result_digest ? el('div', { class: 'muted' }, 'result of ' + fmtInt(d.result_size) + ' bytes, digest ' + d.result_digest) : null];
  }
  case 'approval.requested': {
    const out = [el('div', {}, el('strong', {}, d.tool), ' ', el('span', { class: 'badge warn' }, d.risk),
      ' needs a decision', d.reason ? ' — ' + d.reason : ''),
    argsBlock('arguments', d.arguments),
    el('div', { class: 'muted' }, 'approval ' + d.approval_id + (d.expires_at ? ' · expires ' + fmtTime(d.expires_at) : ''))];
    if (ctx.pending === d.approval_id && !ctx.decided.has(d.approval_id))
      out.push(decisionControls(d.approval_id, () => ctx.refresh()));
    return out;
  }
  case 'approval.decided':
    return [el('div', {}, el('strong', { class: d.decision === 'approve' ? 'ok' : 'bad' }, d.decision === 'approve' ? 'Approved' : 'Denied'),
      ' by ' + (d.decided_by || '?') + (d.reason ? ': ' + d.reason : ''))];
  case 'memory.written':
    return [el('div', {}, (d.scope ? d.scope + ' / ' : '') + (d.key || '')), el('div', { class: 'message' }, d.content)];
  case 'run.succeeded':
    return [el('div', { class: 'message' }, d.output), el('div', { class: 'muted' }, fmtInt(d.steps) + ' steps · ' + usageText(d.usage))];
  case 'run.failed':
    return [el('div', { class: 'bad' }, (d.error_code ? d.error_code + ': ' : '') + (d.error || '')),
      el('div', { class: 'muted' }, fmtInt(d.steps) + ' steps · ' + usageText(d.usage))];
  case 'run.cancelled':
    return [el('div', {}, 'by ' + (d.cancelled_by || '?') + (d.reason ? ': ' + d.reason : ''))];
  case 'budget.exceeded':
    return [el('div', { class: 'bad' }, d.cap + ': used ' + d.used + ' of ' + d.limit)];
  case 'loop.detected':
    return [el('div', { class: 'bad' }, 'step ' + d.step + ': repeated ' + d.repeats + ' times'), d.detail ? el('pre', {}, d.detail) : null];
  default:
    return [el('pre', {}, pretty(d))];
  }
}

function eventClass(type) {
  if (type.startsWith('llm.')) return 'ev-llm';
  if (type.startsWith('tool.')) return 'ev-tool';
  if (type.startsWith('approval.')) return 'ev-approval';
  if (type === 'run.succeeded') return 'ev-ok';
  if (type === 'run.failed' || type === 'run.cancelled' || type === 'budget.exceeded' || type === 'loop.detected') return 'ev-bad';
  return '';
}

/* Read a run's events as Server-Sent Events over fetch (so that the
 * Authorization header goes along), calling onEvent for each, resuming
 * after the last seq when the connection drops, until the server ends the
 * stream for a terminal run or stop() is called. onState('live' | 'ended' |
 * 'reconnecting' | 'off') follows the connection. */
function streamEvents(runId, onEvent, onState) {
  let after = 0, stopped = false, ctrl = null, delay = 500;
  async function once() {
    ctrl = new AbortController();
    const r = await fetch('/v1/runs/' + encodeURIComponent(runId) + '/events?after=' + after,
      { headers: authHeaders({ Accept: 'text/event-stream' }), signal: ctrl.signal });
    if (r.status === 401) { showLogin('unauthorized'); stopped = true; return true; }
    if (!r.ok) throw new Error('events: HTTP ' + r.status);
    onState('live');
    delay = 500;
    const reader = r.body.getReader();
    const dec = new TextDecoder();
    let buf = '';
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buf += dec.decode(value, { stream: true }).replace(/\r\n?/g, '\n');
      let cut;
      while ((cut = buf.indexOf('\n\n')) >= 0) {
        const block = buf.slice(0, cut);
        buf = buf.slice(cut + 2);
        let data = '', id = null;
        for (const line of block.split('\n')) {
          if (line.startsWith('data:')) data += (data ? '\n' : '') + line.slice(5).replace(/^ /, '');
          else if (line.startsWith('id:')) id = line.slice(3).trim();
        }
        if (!data) continue;
        let ev;
        try { ev = JSON.parse(data); } catch (_) { continue; }
        if (id !== null && /^\d+$/.test(id)) after = Math.max(after, Number(id));
        else if (typeof ev.seq === 'number') after = Math.max(after, ev.seq);
        onEvent(ev);
      }
    }
    return false; /* the server ended the stream: the run is terminal */
  }
  (async () => {
    while (!stopped) {
      try {
        const stop = await once();
        if (stop || stopped) { onState('off'); return; }
        const done = await onEnded();
        onState(done ? 'ended' : 'reconnecting');
        if (done) return;
      } catch (e) {
        if (stopped) return;
        onState('reconnecting');
      }
      await new Promise((res) => setTimeout(res, delay));
      delay = Math.min(delay * 2, 8000);
    }
  })();
  async function onEnded() {
    try {
      const run = await api('GET', '/v1/runs/' + encodeURIComponent(runId));
      return TERMINAL.has(run.status);
    } catch (_) { return false; }
  }
  return () => { stopped = true; if (ctrl) ctrl.abort(); };
}

function viewRun(main, id) {
  const head = el('div', { class: 'card', id: 'run-summary' }, el('p', { class: 'muted' }, 'Loading…'));
  const live = el('span', { class: 'live', id: 'run-live' });
  const list = el('ol', { class: 'timeline', id: 'timeline', 'aria-live': 'polite', 'aria-label': 'Timeline' });
  main.append(el('p', {}, el('a', { href: '#/runs' }, '← Runs')),
    el('h1', {}, 'Run ', el('span', { class: 'mono' }, id)), head,
    el('div', { class: 'toolbar' }, el('h2', {}, 'Timeline'), el('span', { class: 'spacer' }), live), list);

  const ctx = { pending: null, decided: new Set(), callTools: {}, events: [], refresh: null, run: null };
  let refreshing = false, again = false;
  async function refresh() {
    if (refreshing) { again = true; return; }
    refreshing = true;
    try {
      const r = await api('GET', '/v1/runs/' + encodeURIComponent(id));
      ctx.run = r;
      const prevPending = ctx.pending;
      ctx.pending = r.pending_approval || null;
      renderHead(r);
      if (prevPending !== ctx.pending) rerender();
    } catch (e) { showError(head, e); }
    refreshing = false;
    if (again) { again = false; refresh(); }
  }
  ctx.refresh = refresh;

  function renderHead(r) {
    const cancel = el('button', { type: 'button', class: 'danger', id: 'run-cancel' }, 'Cancel run');
    cancel.addEventListener('click', async () => {
      if (!confirm('Cancel run ' + id + '?')) return;
      cancel.disabled = true;
      try { await api('POST', '/v1/runs/' + encodeURIComponent(id) + '/cancel', {}); toast('Cancel requested'); }
      catch (e) { if (e.status !== 401) toast('Could not cancel: ' + e.message); cancel.disabled = false; }
      refresh();
    });
    clear(head).append(el('dl', { class: 'facts' },
      el('dt', {}, 'Status'), el('dd', { id: 'run-status', dataset: { status: r.status } }, badge(r.status)),
      el('dt', {}, 'Goal'), el('dd', { class: 'message' }, r.goal),
      el('dt', {}, 'Agent'), el('dd', {}, r.agent ? (r.agent.model || 'default model') +
        (r.agent.tools && r.agent.tools.length ? ' · tools: ' + r.agent.tools.join(', ') : '') : '—'),
      el('dt', {}, 'Step'), el('dd', {}, fmtInt(r.step)),
      el('dt', {}, 'Usage'), el('dd', { id: 'run-usage' }, usageText(r.usage)),
      el('dt', {}, 'Owner node'), el('dd', {}, String(r.owner_node)),
      el('dt', {}, 'Created'), el('dd', {}, fmtTime(r.created_at)),
      el('dt', {}, 'Updated'), el('dd', {}, fmtTime(r.updated_at)),
      r.output ? el('dt', {}, 'Output') : null, r.output ? el('dd', { class: 'message' }, r.output) : null,
      r.error ? el('dt', {}, 'Error') : null, r.error ? el('dd', { class: 'bad' }, (r.error_code ? r.error_code + ': ' : '') + r.error) : null),
    el('div', { class: 'actions' }, TERMINAL.has(r.status) ? null : cancel));
  }

  function item(ev) {
    return el('li', { class: eventClass(ev.type), dataset: { seq: ev.seq, type: ev.type } },
      el('div', { class: 'ev-head' }, el('span', { class: 'muted mono' }, '#' + ev.seq),
        el('span', { class: 'ev-type' }, ev.type), el('time', { class: 'ev-time', datetime: ev.time || '' }, fmtTime(ev.time))),
      eventBody(ev, ctx));
  }
  function rerender() {
    clear(list);
    for (const ev of ctx.events) list.append(item(ev));
  }
  function onEvent(ev) {
    if (ctx.events.length && ev.seq <= ctx.events[ctx.events.length - 1].seq) return; /* a resumed duplicate */
    ctx.events.push(ev);
    const d = ev.data || {};
    if (ev.type === 'tool.requested' && d.call_id) ctx.callTools[d.call_id] = d.tool;
    if (ev.type === 'approval.requested') ctx.pending = d.approval_id;
    if (ev.type === 'approval.decided') { ctx.decided.add(d.approval_id); rerender(); }
    else list.append(item(ev));
    refresh();
  }
  refresh();
  const stop = streamEvents(id, onEvent, (state) => {
    live.textContent = { live: 'live', ended: 'ended', reconnecting: 'reconnecting…', off: '' }[state];
    live.classList.toggle('on', state === 'live');
    live.dataset.state = state;
    if (state === 'ended') refresh();
  });
  onStop(stop);
}

/* ---- approvals ------------------------------------------------------------------------ */

function viewApprovals(main, q) {
  const wanted = ['pending', 'approved', 'denied', 'expired', 'all'];
  const status = wanted.includes(q.get('status')) ? q.get('status') : 'pending';
  const sel = el('select', { id: 'approvals-status', 'aria-label': 'Show approvals' },
    wanted.map((s) => el('option', { value: s, selected: s === status }, s)));
  sel.addEventListener('change', () => { location.hash = '#/approvals?status=' + sel.value; });
  const box = el('div', { id: 'approvals', class: 'grid2' });
  const msg = el('div');
  main.append(el('h1', {}, 'Approvals'), el('div', { class: 'toolbar' }, el('label', { for: 'approvals-status' }, 'Show'), sel), msg, box);
  const shown = new Map(); /* id -> card, kept across refreshes so typing a reason is not lost */

  async function load() {
    let j;
    try { j = await api('GET', '/v1/approvals?status=' + status + '&limit=100'); }
    catch (e) { showError(msg, e); return; }
    clear(msg);
    const ids = new Set(j.approvals.map((a) => a.id));
    for (const [id, card] of shown) if (!ids.has(id)) { card.remove(); shown.delete(id); }
    for (const a of j.approvals) {
      if (shown.has(a.id)) continue;
      const card = el('article', { class: 'card', dataset: { approvalId: a.id, runId: a.run_id }, 'aria-label': 'Approval ' + a.id },
        el('div', { class: 'ev-head' }, el('strong', {}, a.tool), el('span', { class: 'badge warn' }, a.risk),
          el('span', { class: 'badge' }, a.status)),
        el('p', {}, 'Run ', el('a', { class: 'mono', href: '#/runs/' + encodeURIComponent(a.run_id) }, a.run_id),
          ' · step ' + a.step),
        argsBlock('arguments', a.arguments),
        el('p', { class: 'muted' }, 'requested ' + fmtTime(a.requested_at) + (a.expires_at ? ' · expires ' + fmtTime(a.expires_at) : '')),
        a.status === 'pending' ? decisionControls(a.id, () => load()) :
          el('p', {}, 'Decided by ' + (a.decided_by || '?') + ' at ' + fmtTime(a.decided_at) + (a.reason ? ': ' + a.reason : '')));
      shown.set(a.id, card);
      box.append(card);
    }
    if (!j.approvals.length && !box.querySelector('.empty'))
      box.append(el('p', { class: 'muted empty' }, status === 'pending' ? 'Nothing waits for a decision.' : 'None.'));
    else if (j.approvals.length) { const e = box.querySelector('.empty'); if (e) e.remove(); }
  }
  load();
  every(2000, load);
}

/* ---- tools -------------------------------------------------------------------------------- */

function viewTools(main) {
  const tbody = el('tbody', { id: 'tools-body' });
  const msg = el('div');
  main.append(el('h1', {}, 'Tools'),
    el('p', { class: 'muted' }, 'Disabling a tool stops it in every run at once (the kill switch); runs that call it get an error result.'),
    msg, el('table', { 'aria-label': 'Tools' },
      el('thead', {}, el('tr', {}, el('th', { scope: 'col' }, 'Name'), el('th', { scope: 'col' }, 'Version'),
        el('th', { scope: 'col' }, 'Kind'), el('th', { scope: 'col' }, 'Risk'), el('th', { scope: 'col' }, 'Description'),
        el('th', { scope: 'col' }, 'State'))), tbody));
  async function load() {
    let j;
    try { j = await api('GET', '/v1/tools'); } catch (e) { showError(msg, e); return; }
    clear(msg);
    const tools = Array.isArray(j) ? j : (j.tools || []);
    clear(tbody);
    for (const t of tools) {
      const btn = el('button', { type: 'button', class: t.enabled ? 'danger' : 'primary', dataset: { tool: t.name } },
        t.enabled ? 'Disable' : 'Enable');
      btn.addEventListener('click', async () => {
        if (t.enabled && !confirm('Disable ' + t.name + ' for every run?')) return;
        btn.disabled = true;
        try {
          await api('POST', '/v1/tools/' + encodeURIComponent(t.name) + (t.enabled ? '/disable' : '/enable'));
          toast(t.name + (t.enabled ? ' disabled' : ' enabled'));
        } catch (e) { if (e.status !== 401) toast('Could not change ' + t.name + ': ' + e.message); }
        load();
      });
      tbody.append(el('tr', { dataset: { tool: t.name, enabled: String(t.enabled) } },
        el('td', { class: 'mono' }, t.name), el('td', { class: 'num' }, String(t.version)), el('td', {}, t.kind),
        el('td', {}, el('span', { class: 'badge ' + (t.risk === 'irreversible' ? 'bad' : t.risk === 'write' ? 'warn' : '') }, t.risk)),
        el('td', {}, t.description || ''),
        el('td', {}, el('span', { class: t.enabled ? 'ok' : 'bad' }, t.enabled ? 'enabled ' : 'disabled '), btn)));
    }
    if (!tools.length) tbody.append(el('tr', {}, el('td', { colspan: 6, class: 'muted' }, 'No tools registered.')));
  }
  load();
}

/* ---- cluster --------------------------------------------------------------------------------- */

function viewCluster(main) {
  const facts = el('div', { class: 'card', id: 'cluster-facts' });
  const tbody = el('tbody', { id: 'nodes-body' });
  const msg = el('div');
  main.append(el('h1', {}, 'Cluster'), msg, facts,
    el('table', { 'aria-label': 'Nodes' }, el('thead', {}, el('tr', {}, el('th', { scope: 'col' }, 'Node'),
      el('th', { scope: 'col' }, 'Raft address'), el('th', { scope: 'col' }, 'Role'), el('th', { scope: 'col' }, 'Health'),
      el('th', { scope: 'col', class: 'num' }, 'Runs owned'))), tbody));
  async function load() {
    let c, h = null;
    try { c = await api('GET', '/v1/cluster'); } catch (e) { showError(msg, e); return; }
    try { const r = await fetch('/healthz'); h = await r.json(); } catch (_) { /* shown as unknown */ }
    clear(msg);
    clear(facts).append(el('dl', { class: 'facts' },
      el('dt', {}, 'Leader'), el('dd', { id: 'cluster-leader' }, c.leader === null ? 'none known' : 'node ' + c.leader),
      el('dt', {}, 'Term'), el('dd', {}, fmtInt(c.term)),
      el('dt', {}, 'Commit index'), el('dd', {}, fmtInt(c.commit_index)),
      el('dt', {}, 'Last applied'), el('dd', {}, fmtInt(c.last_applied)),
      el('dt', {}, 'This node'), el('dd', {}, 'node ' + c.node + (h ? ' · ' + h.status + (h.ready ? ', ready' : ', not ready') + ' · ' + h.role : ''))));
    clear(tbody);
    for (const n of c.nodes) {
      const health = n.alive === true ? el('span', { class: 'ok' }, 'up') : n.alive === false ? el('span', { class: 'bad' }, 'down')
        : el('span', { class: 'muted' }, 'unknown');
      tbody.append(el('tr', { dataset: { node: n.id } }, el('td', {}, 'node ' + n.id + (n.id === c.node ? ' (this one)' : '')),
        el('td', { class: 'mono' }, n.raft_address || '—'), el('td', {}, n.role + (n.id === c.leader ? ' ★' : '')),
        el('td', {}, health), el('td', { class: 'num' }, fmtInt(n.runs))));
    }
  }
  load();
  every(2000, load);
}

/* ---- header: this node, pending approvals ------------------------------------------------------- */

async function refreshHeader() {
  try {
    const r = await fetch('/healthz');
    const h = await r.json();
    $('#node-summary').textContent = 'node ' + h.node + ' · ' + h.role + (h.ready ? '' : ' · not ready');
  } catch (_) { $('#node-summary').textContent = 'node unreachable'; }
  if (!$('#login').hidden) return;
  try {
    const j = await api('GET', '/v1/approvals?status=pending&limit=100');
    const n = j.approvals.length;
    const c = $('#approvals-count');
    c.hidden = n === 0;
    c.textContent = n >= 100 ? '100+' : String(n);
    c.setAttribute('aria-label', n + ' pending');
  } catch (_) { /* shown by the views */ }
}

function start() {
  setupLogin();
  window.addEventListener('hashchange', route);
  if (!location.hash) history.replaceState(null, '', '#/runs');
  route();
  refreshHeader();
  setInterval(refreshHeader, 3000);
}

document.addEventListener('DOMContentLoaded', start);
