// KATO console. Everything from the node is put in the page as text
// (textContent, or attributes that cannot run code): never as HTML.
'use strict';
(() => {
  const TOKEN_KEY = 'kato.console.token';
  const $ = (id) => document.getElementById(id);
  const state = {}; // section name -> {at, recv, self, data}
  let ctrl = null;
  let retry = 1000;

  // el builds an element; strings among the children become text nodes.
  function el(tag, attrs, ...kids) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === undefined || v === null || v === false) continue;
      if (k === 'class') e.className = v;
      else if (k === 'onclick') e.addEventListener('click', v);
      else e.setAttribute(k, v === true ? '' : String(v));
    }
    for (const k of kids) if (k !== null && k !== undefined) e.append(k);
    return e;
  }
  function setText(node, s) { s = String(s); if (node.textContent !== s) node.textContent = s; }

  // --- token ---------------------------------------------------------------
  const token = () => sessionStorage.getItem(TOKEN_KEY) || '';
  function authHeaders(extra) {
    const h = Object.assign({}, extra);
    if (token()) h.Authorization = 'Bearer ' + token();
    return h;
  }
  function askToken(refused) {
    const msg = $('token-msg');
    if (refused) {
      sessionStorage.removeItem(TOKEN_KEY);
      msg.className = 'error';
      setText(msg, 'The token was not accepted by this node (401 UNAUTHORIZED). ' +
        "Check the node's --api-token (or KATO_API_TOKEN) and enter it again.");
    } else {
      msg.className = '';
      setText(msg, 'This node asks for its API token (--api-token or KATO_API_TOKEN). ' +
        'It is kept in this tab\'s session storage only.');
    }
    $('main').hidden = true;
    $('token').hidden = false;
    setConn('Waiting for the API token.', true);
    $('token-input').focus();
  }
  $('token-form').addEventListener('submit', (ev) => {
    ev.preventDefault();
    sessionStorage.setItem(TOKEN_KEY, $('token-input').value);
    $('token-input').value = '';
    connect();
  });

  // --- the event stream ----------------------------------------------------
  function setConn(msg, problem) {
    const c = $('conn');
    setText(c, msg);
    c.className = problem ? 'problem' : '';
    document.body.classList.toggle('stale', !!problem);
  }

  async function connect() {
    if (ctrl) ctrl.abort();
    ctrl = new AbortController();
    const signal = ctrl.signal;
    setConn('Connecting…', false);
    let resp;
    try {
      resp = await fetch('api/events', { headers: authHeaders(), signal, cache: 'no-store' });
    } catch (e) {
      if (signal.aborted) return;
      return later('Cannot reach this node (' + e.message + '); retrying…');
    }
    if (resp.status === 401) { askToken(token() !== ''); return; }
    if (!resp.ok || !resp.body) return later('The node answered ' + resp.status + '; retrying…');
    $('token').hidden = true;
    $('main').hidden = false;
    setConn('Live: the page changes as the cluster does.', false);
    retry = 1000;
    const reader = resp.body.pipeThrough(new TextDecoderStream()).getReader();
    let buf = '';
    try {
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buf += value;
        let i;
        while ((i = buf.indexOf('\n\n')) >= 0) {
          dispatch(buf.slice(0, i));
          buf = buf.slice(i + 2);
        }
      }
    } catch (e) {
      if (signal.aborted) return;
    }
    if (!signal.aborted) later('The stream from this node ended; reconnecting…');
  }
  function later(msg) {
    setConn(msg, true);
    setTimeout(connect, retry);
    retry = Math.min(retry * 2, 10000);
  }
  function dispatch(chunk) {
    let name = 'message', data = '';
    for (const line of chunk.split('\n')) {
      if (line.startsWith('event: ')) name = line.slice(7);
      else if (line.startsWith('data: ')) data += line.slice(6);
    }
    if (!data || !renderers[name]) return;
    let env;
    try { env = JSON.parse(data); } catch (e) { return; }
    state[name] = { at: Date.parse(env.at), recv: Date.now(), self: env.self, data: env.data };
    setText($('self'), 'on ' + env.self);
    renderers[name]();
  }

  // --- formatting ----------------------------------------------------------
  // serverNow is the node's clock now, from when a section was sent.
  const serverNow = (s) => s.at + (Date.now() - s.recv);
  function dur(ms) {
    let s = Math.max(0, Math.floor(ms / 1000));
    const d = Math.floor(s / 86400); s -= d * 86400;
    const h = Math.floor(s / 3600); s -= h * 3600;
    const m = Math.floor(s / 60); s -= m * 60;
    if (d) return d + 'd ' + h + 'h';
    if (h) return h + 'h ' + m + 'm';
    if (m) return m + 'm ' + s + 's';
    return s + 's';
  }
  function bytes(n) {
    if (n < 0) return '—';
    const u = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
    let i = 0;
    while (n >= 1024 && i < u.length - 1) { n /= 1024; i++; }
    return (i ? n.toFixed(1) : n) + ' ' + u[i];
  }
  const isHTTP = (u) => /^https?:\/\/[^\s]+$/i.test(u || '');

  // sync makes tbody's rows match items, reusing rows by key so that focus
  // stays on a button while the table changes. cols fill one cell each.
  function sync(tbody, items, key, cols, rowClass) {
    const old = new Map();
    for (const tr of Array.from(tbody.rows)) old.set(tr.dataset.key, tr);
    let prev = null;
    for (const it of items) {
      const k = key(it);
      let tr = old.get(k);
      if (tr) old.delete(k);
      else {
        tr = document.createElement('tr');
        tr.dataset.key = k;
        cols.forEach((c) => {
          const cell = document.createElement(c.th ? 'th' : 'td');
          if (c.th) cell.scope = 'row';
          if (c.cls) cell.className = c.cls;
          tr.append(cell);
        });
      }
      tr.item = it;
      cols.forEach((c, i) => c.fill(tr.cells[i], it, tr));
      tr.className = rowClass ? rowClass(it) : '';
      const want = prev ? prev.nextSibling : tbody.firstChild;
      if (want !== tr) tbody.insertBefore(tr, want);
      prev = tr;
    }
    for (const tr of old.values()) tr.remove();
  }
  const text = (f) => ({ fill: (td, it) => setText(td, f(it)) });
  const num = (f) => ({ cls: 'num', fill: (td, it) => setText(td, f(it)) });
  // button makes a cell's one button once; label and disabled follow the item.
  function button(label, onClick, opts) {
    opts = opts || {};
    return {
      fill: (td, it, tr) => {
        let b = td.firstChild;
        if (!b) { b = el('button', { type: 'button', class: 'danger', onclick: () => onClick(tr.item) }); td.append(b); }
        setText(b, label(it));
        b.disabled = !!(opts.disabled && opts.disabled(it));
        const why = opts.title ? opts.title(it) : '';
        if (why) b.title = why; else b.removeAttribute('title');
      },
    };
  }

  // --- sections ------------------------------------------------------------
  const renderers = {};
  const idCell = { th: true, fill: (td, it) => setText(td, it.id) };

  renderers.instances = () => {
    const s = state.instances;
    if (!s) return;
    const now = serverNow(s);
    const rows = s.data;
    const ids = $('ids'), current = rows.filter((r) => !r.gone_at).map((r) => r.id);
    if (ids.dataset.ids !== current.join(' ')) {
      ids.dataset.ids = current.join(' ');
      ids.replaceChildren(...current.map((id) => el('option', { value: id })));
    }
    sync($('instances'), rows, (r) => r.id, [
      { fill: (td, r) => {
        const st = live(r, now);
        td.replaceChildren(el('span', { class: 'dot ' + st.cls, 'aria-hidden': 'true' }), el('span', { class: 'sr' }, st.label));
        td.title = st.label;
      } },
      idCell,
      text((r) => r.name),
      text((r) => r.model),
      { cls: 'status', fill: (td, r) => { setText(td, r.gone_at ? 'gone (' + dur(now - Date.parse(r.gone_at)) + ' ago)' : r.status); td.className = 'status status-' + (r.gone_at ? 'gone' : r.status); } },
      text((r) => r.host),
      { fill: (td, r) => {
        if (td.dataset.url === r.api_url) return;
        td.dataset.url = r.api_url;
        td.replaceChildren(isHTTP(r.api_url) ? el('a', { href: r.api_url + '/ui/', rel: 'noreferrer' }, r.api_url) : r.api_url);
      } },
      num((r) => r.gone_at ? '—' : dur(now - Date.parse(r.started_at))),
      num((r) => ttlLeft(r, now)),
      button(() => 'Stop…', stopInstance, { disabled: (r) => !!r.gone_at }),
    ], (r) => (r.gone_at ? 'gone' : 'alive') + (r.self ? ' self' : ''));
  };
  function leaseLeft(r, now) {
    if (r.ttl_left_s < 0 || !r.lease_read_at) return null;
    return r.ttl_left_s - (now - Date.parse(r.lease_read_at)) / 1000;
  }
  function ttlLeft(r, now) {
    if (r.gone_at) return 'expired';
    const left = leaseLeft(r, now);
    if (left === null) return '…';
    return Math.max(0, Math.round(left)) + 's of ' + r.ttl_s + 's';
  }
  // live: green while the lease is renewed, amber when it is running out
  // (renewals come every TTL/3), grey once the instance left the registry.
  function live(r, now) {
    if (r.gone_at) return { cls: 'gone', label: 'gone: lease expired or stopped' };
    const left = leaseLeft(r, now);
    if (left !== null && r.ttl_s > 0 && left < r.ttl_s / 2) return { cls: 'late', label: 'lease not renewed lately' };
    return { cls: 'ok', label: 'live' };
  }

  renderers.models = () => {
    const s = state.models;
    if (!s) return;
    const now = serverNow(s);
    sync($('models'), s.data, (m) => m.model, [
      { th: true, fill: (td, m) => setText(td, m.model) },
      num((m) => m.stats_known ? m.patterns : '…'),
      num((m) => m.stats_known ? m.vectors : '…'),
      { cls: 'num', fill: (td, m) => {
        setText(td, m.stats_known ? bytes(m.size_bytes) : '…');
        td.title = m.stats_known && m.size_bytes < 0 ? 'too large to measure here: katoctl models ls' : '';
      } },
      text((m) => m.holder ? m.holder + (m.lock && m.lock.host ? ' on ' + m.lock.host : '') : 'nobody'),
      num((m) => m.lock ? m.lock.rev : '—'),
      { fill: (td, m) => {
        const names = (m.waiters || []).map((w) => w.id || ('lease ' + w.lease));
        if (td.dataset.q === names.join('\n')) return;
        td.dataset.q = names.join('\n');
        td.replaceChildren(names.length ? el('ol', { class: 'queue' }, ...names.map((n) => el('li', null, n))) : 'none');
      } },
      text((m) => m.last_write ? m.last_write.writer + ', ' + dur(now - Date.parse(m.last_write.at)) + ' ago, fence ' + m.last_write.fence : '—'),
      { fill: (td, m) => td.replaceChildren(m.learns_per_min ? spark(m.learns_per_min) : '') },
      button(() => 'Break lock…', breakLock, { disabled: (m) => !m.lock, title: (m) => m.lock ? '' : 'nobody holds this lock' }),
    ]);
  };
  // spark draws learns per minute as bars, the newest on the right, on a
  // fixed 30-minute axis (the sparkline).
  function spark(v) {
    const w = 120, h = 24, slots = 30, bw = w / slots, n = v.length, max = Math.max(1, ...v);
    const ns = 'http://www.w3.org/2000/svg';
    const svg = document.createElementNS(ns, 'svg');
    svg.setAttribute('class', 'spark');
    svg.setAttribute('viewBox', '0 0 ' + w + ' ' + h);
    svg.setAttribute('role', 'img');
    const total = v.reduce((a, b) => a + b, 0);
    const label = 'learns per minute over the last ' + n + ' minutes: now ' + v[n - 1] + ', most ' + max + ', ' + total + ' in all';
    svg.setAttribute('aria-label', label);
    const t = document.createElementNS(ns, 'title');
    t.textContent = label;
    const axis = document.createElementNS(ns, 'line');
    axis.setAttribute('x1', '0'); axis.setAttribute('x2', String(w));
    axis.setAttribute('y1', String(h - 0.5)); axis.setAttribute('y2', String(h - 0.5));
    svg.append(t, axis);
    v.slice(-slots).forEach((x, i, a) => {
      if (!x) return;
      const bh = Math.max(1, (x / max) * (h - 2));
      const r = document.createElementNS(ns, 'rect');
      r.setAttribute('x', ((slots - a.length + i) * bw + 0.5).toFixed(1));
      r.setAttribute('y', (h - 1 - bh).toFixed(1));
      r.setAttribute('width', (bw - 1).toFixed(1));
      r.setAttribute('height', bh.toFixed(1));
      svg.append(r);
    });
    return el('span', null, svg, el('span', { class: 'num' }, ' ' + v[n - 1] + '/min'));
  }

  renderers.messages = () => {
    const s = state.messages;
    if (!s) return;
    const now = serverNow(s);
    const age = (t) => dur(now - Date.parse(t)) + ' ago';
    sync($('inboxes'), s.data.inboxes, (b) => b.id, [
      { th: true, fill: (td, b) => setText(td, b.id) },
      text((b) => b.registered ? 'registered' : 'not registered'),
      num((b) => b.pending),
      num((b) => age(b.oldest)),
      num((b) => age(b.newest)),
      num((b) => b.expires_in_s < 0 ? '—' : 'in ' + dur(b.expires_in_s * 1000 - (now - s.at))),
      button(() => 'Remove inbox…', removeInbox, {
        disabled: (b) => b.registered,
        title: (b) => b.registered ? 'the instance is registered and reads its own messages' : '',
      }),
    ]);
    let note = s.data.inboxes.length ? '' : 'No messages are waiting.';
    if (s.data.more) note = 'Only the first keys were read: there are more messages than shown.';
    if (s.data.error) note = 'Cannot list the inboxes: ' + s.data.error;
    setText($('inbox-note'), note);
  };

  renderers.sessions = () => {
    const s = state.sessions;
    if (!s) return;
    const now = serverNow(s);
    const age = (t) => t ? dur(now - Date.parse(t)) + ' ago' : '—';
    sync($('sessions'), s.data.models, (m) => m.model, [
      { th: true, fill: (td, m) => setText(td, m.model) },
      num((m) => m.count),
      num((m) => age(m.oldest)),
      num((m) => age(m.newest)),
    ]);
    let note = s.data.models.length ? '' : 'No KATO 3 sessions.';
    if (s.data.more) note = 'Only the first keys were read: there are more sessions than counted.';
    if (s.data.error) note = 'Cannot list the sessions: ' + s.data.error;
    setText($('session-note'), note);
  };

  renderers.etcd = () => {
    const s = state.etcd;
    if (!s) return;
    const v = s.data;
    sync($('members'), v.members, (m) => m.id, [
      { th: true, fill: (td, m) => setText(td, m.name || '(unstarted)') },
      text((m) => m.id),
      text((m) => m.endpoint || '—'),
      text((m) => m.learner ? 'learner' : m.leader ? 'leader' : m.error ? '—' : 'follower'),
      text((m) => m.version || '—'),
      num((m) => m.error && !m.db_size ? '—' : bytes(m.db_size) + ' / ' + (m.quota ? bytes(m.quota) + ' (' + Math.round((100 * m.db_size) / m.quota) + '%)' : '?')),
      num((m) => m.db_in_use ? bytes(m.db_in_use) : '—'),
      { fill: (td, m) => { setText(td, m.error || 'none'); td.className = m.error ? 'error' : ''; } },
    ]);
    const sum = v.error ? 'Cannot read the members: ' + v.error :
      v.members.length + ' members; leader: ' + (v.leader || 'none');
    setText($('etcd-summary'), sum);
    const al = v.alarms.length ? v.alarms.map((a) => el('li', { class: 'error' }, a)) : [el('li', null, 'no alarms')];
    $('alarms').replaceChildren(...al);
  };

  // The ages and TTLs count on between events.
  setInterval(() => { renderers.instances(); renderers.models(); renderers.sessions(); renderers.messages(); if (state.etcd) renderers.etcd(); }, 1000);

  // --- actions -------------------------------------------------------------
  function confirmAction(message, ok) {
    const d = $('confirm');
    setText($('confirm-text'), message);
    setText($('confirm-ok'), ok);
    const back = document.activeElement;
    return new Promise((resolve) => {
      const done = (v) => {
        $('confirm-ok').onclick = $('confirm-cancel').onclick = d.oncancel = null;
        d.close();
        if (back && back.focus) back.focus();
        resolve(v);
      };
      $('confirm-ok').onclick = () => done(true);
      $('confirm-cancel').onclick = () => done(false);
      d.oncancel = (ev) => { ev.preventDefault(); done(false); };
      d.showModal();
      $('confirm-cancel').focus();
    });
  }
  function notice(msg, bad) {
    const n = $('notice');
    setText(n, msg);
    n.className = bad ? 'error' : '';
  }
  async function act(path, body) {
    let resp;
    try {
      resp = await fetch('api/' + path, {
        method: 'POST', cache: 'no-store', body: JSON.stringify(body),
        headers: authHeaders({ 'Content-Type': 'application/json' }),
      });
    } catch (e) { notice('The node did not answer: ' + e.message, true); return false; }
    if (resp.status === 401) { askToken(true); return false; }
    let ans = {};
    try { ans = await resp.json(); } catch (e) { /* not JSON */ }
    notice(ans.message || ('The node answered ' + resp.status), !resp.ok);
    return resp.ok;
  }
  async function stopInstance(r) {
    if (await confirmAction('Stop instance ' + r.id + ' (' + r.name + ') on ' + r.host + '? It drains, releases its model lock and leaves.', 'Stop ' + r.id)) {
      act('stop', { id: r.id });
    }
  }
  async function breakLock(m) {
    const next = (m.waiters || [])[0];
    if (await confirmAction('Break the lock of model ' + m.model + ' held by ' + (m.holder || 'lease ' + m.lock.lease) +
      '? Its fenced writes fail from now on; ' + (next ? (next.id || 'lease ' + next.lease) + ' takes the lock next.' : 'nobody waits.'), 'Break lock')) {
      act('break', { model: m.model });
    }
  }
  async function removeInbox(b) {
    if (await confirmAction('Delete the ' + b.pending + ' messages waiting for ' + b.id + '? No registered instance reads them.', 'Remove inbox')) {
      act('inbox/remove', { id: b.id });
    }
  }
  $('send-form').addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const f = ev.target;
    const msg = { to: f.to.value.trim(), kind: f.kind.value.trim(), ttl: f.ttl.value.trim(), body: f.body.value };
    if (await confirmAction('Send a ' + (msg.kind || 'text') + ' message to ' + msg.to + '?', 'Send')) {
      if (await act('send', msg)) f.body.value = '';
    }
  });

  connect();
})();
