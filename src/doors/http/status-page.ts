// The status page: one self-contained HTML document (inline CSS and JS, no framework, no CDN: it works
// in an air-gapped CI network). It polls /_relais/status and renders with textContent only (names of
// images and error messages come from clients and upstreams: never parsed as HTML).
// `?refresh=SECONDS` sets the polling interval (default 2, 0 stops it).

export const STATUS_PAGE_HTML = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>relais status</title>
<style>
  :root { --fg: #1d2330; --muted: #5d6778; --bg: #f5f6f8; --card: #fff; --line: #dde1e7; --ok: #1f8a4c; --warn: #b7791f; --bad: #c53030; --bar: #3b6fd8; }
  * { box-sizing: border-box; }
  body { margin: 0; font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: var(--fg); background: var(--bg); }
  header { display: flex; align-items: baseline; gap: 16px; padding: 14px 24px; background: #1d2330; color: #fff; }
  header h1 { margin: 0; font-size: 20px; letter-spacing: .5px; }
  header .meta { color: #b9c2d3; font-size: 13px; }
  header .live { margin-left: auto; font-size: 13px; color: #b9c2d3; }
  header .live.stale { color: #ffb4b4; }
  main { padding: 18px 24px 40px; display: grid; gap: 16px; grid-template-columns: repeat(auto-fit, minmax(420px, 1fr)); }
  section { background: var(--card); border: 1px solid var(--line); border-radius: 8px; padding: 14px 16px; min-width: 0; }
  section.wide { grid-column: 1 / -1; }
  h2 { margin: 0 0 10px; font-size: 15px; }
  .kpis { display: flex; flex-wrap: wrap; gap: 12px 28px; }
  .kpi .v { font-size: 24px; font-weight: 600; font-variant-numeric: tabular-nums; }
  .kpi .l { color: var(--muted); font-size: 12px; text-transform: uppercase; letter-spacing: .4px; }
  table { width: 100%; border-collapse: collapse; font-variant-numeric: tabular-nums; }
  th, td { text-align: left; padding: 5px 8px; border-bottom: 1px solid var(--line); vertical-align: top; }
  th { color: var(--muted); font-weight: 500; font-size: 12px; text-transform: uppercase; letter-spacing: .3px; }
  td.n, th.n { text-align: right; }
  td.mono { font-family: ui-monospace, SFMono-Regular, Menlo, monospace; font-size: 12px; word-break: break-all; }
  .bar { height: 10px; background: #e8ebf0; border-radius: 5px; overflow: hidden; min-width: 80px; }
  .bar > div { height: 100%; background: var(--bar); }
  .bar.big { height: 16px; border-radius: 8px; margin: 8px 0 4px; }
  .bar > div.warn { background: var(--warn); }
  .bar > div.bad { background: var(--bad); }
  .pill { display: inline-block; padding: 1px 8px; border-radius: 10px; font-size: 12px; color: #fff; }
  .pill.closed { background: var(--ok); } .pill.open { background: var(--bad); } .pill.half-open { background: var(--warn); }
  .muted { color: var(--muted); }
  .empty { color: var(--muted); font-style: italic; }
</style>
</head>
<body>
<header>
  <h1>relais</h1>
  <span class="meta" id="meta">loading…</span>
  <span class="live" id="live"></span>
</header>
<main>
  <section class="wide">
    <h2>Cache</h2>
    <div class="kpis">
      <div class="kpi"><div class="v" id="hit-ratio" data-value="">–</div><div class="l">hit ratio</div></div>
      <div class="kpi"><div class="v" id="requests" data-value="">–</div><div class="l">requests</div></div>
      <div class="kpi"><div class="v" id="saved" data-value="">–</div><div class="l">bytes served from cache</div></div>
      <div class="kpi"><div class="v" id="fetched" data-value="">–</div><div class="l">bytes fetched upstream</div></div>
      <div class="kpi"><div class="v" id="size" data-value="">–</div><div class="l" id="size-label">cache size</div></div>
      <div class="kpi"><div class="v" id="items" data-value="">–</div><div class="l">blobs · manifests · tags</div></div>
    </div>
    <div class="bar big" title="cache size against storage.maxSize"><div id="size-bar" style="width:0%"></div></div>
    <div class="muted" id="budget"></div>
  </section>
  <section class="wide">
    <h2>Upstreams</h2>
    <table>
      <thead><tr><th>upstream</th><th>health</th><th class="n">hits</th><th class="n">misses</th><th class="n">errors</th><th class="n">hit ratio</th><th class="n">served</th><th class="n">saved</th><th class="n">fetched</th><th>rate limit</th><th>pull budget</th></tr></thead>
      <tbody id="upstreams"></tbody>
    </table>
    <div class="muted" id="refresh-ahead"></div>
  </section>
  <section>
    <h2>Downloads in flight</h2>
    <table>
      <thead><tr><th>blob</th><th>progress</th><th class="n">done</th><th class="n">speed</th></tr></thead>
      <tbody id="downloads"></tbody>
    </table>
  </section>
  <section>
    <h2>Most pulled images</h2>
    <table>
      <thead><tr><th>image</th><th class="n">pulls</th><th class="n">last</th></tr></thead>
      <tbody id="top"></tbody>
    </table>
  </section>
  <section class="wide">
    <h2>Recent errors</h2>
    <table>
      <thead><tr><th>when</th><th>where</th><th>what</th><th>error</th></tr></thead>
      <tbody id="errors"></tbody>
    </table>
  </section>
  <section class="wide">
    <h2>Maintenance</h2>
    <div id="maintenance" class="muted"></div>
  </section>
</main>
<script>
(function () {
  'use strict';
  var params = new URLSearchParams(location.search);
  var refresh = params.has('refresh') ? Number(params.get('refresh')) : 2;
  function $(id) { return document.getElementById(id); }
  function bytes(n) {
    if (n === null || n === undefined) return '–';
    var u = ['B', 'KiB', 'MiB', 'GiB', 'TiB'], i = 0, v = n;
    while (v >= 1024 && i < u.length - 1) { v /= 1024; i++; }
    return (i === 0 ? String(v) : v.toFixed(1)) + ' ' + u[i];
  }
  function pct(x) { return x === null || x === undefined ? '–' : (x * 100).toFixed(1) + '%'; }
  function ago(t, now) {
    var s = Math.max(0, Math.round((now - t) / 1000));
    if (s < 60) return s + 's ago';
    if (s < 3600) return Math.round(s / 60) + 'm ago';
    if (s < 86400) return Math.round(s / 3600) + 'h ago';
    return Math.round(s / 86400) + 'd ago';
  }
  function until(t, now) {
    var s = Math.max(0, Math.round((t - now) / 1000));
    if (s < 60) return 'in ' + s + 's';
    if (s < 3600) return 'in ' + Math.round(s / 60) + 'm';
    if (s < 86400) return 'in ' + (s / 3600).toFixed(1) + 'h';
    return 'in ' + Math.round(s / 86400) + 'd';
  }
  function budgetText(b, now) {
    if (!b) return '–';
    var t = (b.underReserve ? 'UNDER RESERVE (' + b.reserve + '): no refresh, prefetch or revalidation GETs' : 'reserve ' + b.reserve);
    if (b.pullsPerHour !== null) t += ' · ' + b.pullsPerHour.toFixed(1) + ' pulls/h';
    t += b.exhaustsAt !== null ? ' · runs out ' + until(b.exhaustsAt, now) : ' · not spending';
    return t;
  }
  function set(id, text, value) {
    var el = $(id);
    el.textContent = text;
    if (value !== undefined) el.setAttribute('data-value', String(value));
  }
  function cell(tr, text, cls, value) {
    var td = document.createElement('td');
    td.textContent = text;
    if (cls) td.className = cls;
    if (value !== undefined) td.setAttribute('data-value', String(value));
    tr.appendChild(td);
    return td;
  }
  function bar(tr, share, cls) {
    var td = document.createElement('td');
    var b = document.createElement('div'); b.className = 'bar';
    var f = document.createElement('div');
    f.style.width = Math.max(0, Math.min(100, share * 100)).toFixed(1) + '%';
    if (cls) f.className = cls;
    b.appendChild(f); td.appendChild(b); tr.appendChild(td);
  }
  function fill(id, rows, cols, emptyText) {
    var tbody = $(id);
    tbody.textContent = '';
    if (rows.length === 0) {
      var tr = document.createElement('tr');
      var td = cell(tr, emptyText, 'empty'); td.colSpan = cols;
      tbody.appendChild(tr);
    }
    rows.forEach(function (tr) { tbody.appendChild(tr); });
  }
  function render(s) {
    var started = new Date(s.startedAt);
    $('meta').textContent = 'v' + s.version + ' · up since ' + started.toISOString().replace('T', ' ').slice(0, 19) + ' UTC';
    set('hit-ratio', pct(s.totals.hitRatio), s.totals.hitRatio === null ? '' : s.totals.hitRatio);
    set('requests', String(s.totals.requests), s.totals.requests);
    set('saved', bytes(s.totals.savedBytes), s.totals.savedBytes);
    set('fetched', bytes(s.totals.fetchedBytes), s.totals.fetchedBytes);
    set('size', bytes(s.cache.bytes), s.cache.bytes);
    set('items', s.cache.blobs + ' · ' + s.cache.manifests + ' · ' + s.cache.tags, s.cache.blobs);
    var share = s.cache.maxSize ? s.cache.bytes / s.cache.maxSize : 0;
    var sb = $('size-bar');
    sb.style.width = (s.cache.maxSize ? Math.min(100, share * 100) : 0).toFixed(1) + '%';
    sb.className = share > 1 ? 'bad' : share > s.cache.lowWatermark ? 'warn' : '';
    $('size-label').textContent = s.cache.maxSize ? 'cache size of ' + bytes(s.cache.maxSize) : 'cache size (no budget)';
    $('budget').textContent = s.cache.maxSize
      ? pct(share) + ' of the budget; eviction brings it down to ' + pct(s.cache.lowWatermark) + ' (' + bytes(Math.floor(s.cache.maxSize * s.cache.lowWatermark)) + ')' + (s.cache.pins.length ? ' · pinned: ' + s.cache.pins.join(', ') : '')
      : 'No storage.maxSize: the cache only grows.' + (s.cache.pins.length ? ' Pinned: ' + s.cache.pins.join(', ') : '');

    fill('upstreams', s.upstreams.map(function (u) {
      var tr = document.createElement('tr');
      tr.setAttribute('data-upstream', u.name);
      var name = cell(tr, u.name, 'mono');
      name.title = u.url;
      var h = document.createElement('td'); var p = document.createElement('span');
      p.className = 'pill ' + u.circuit; p.textContent = u.health;
      h.appendChild(p); tr.appendChild(h);
      cell(tr, String(u.hits), 'n hits', u.hits);
      cell(tr, String(u.misses), 'n misses', u.misses);
      cell(tr, String(u.errors), 'n errors', u.errors);
      cell(tr, pct(u.hitRatio), 'n ratio', u.hitRatio === null ? '' : u.hitRatio);
      cell(tr, bytes(u.servedBytes), 'n served', u.servedBytes);
      cell(tr, bytes(u.savedBytes), 'n saved', u.savedBytes);
      cell(tr, bytes(u.fetchedBytes), 'n fetched', u.fetchedBytes);
      cell(tr, u.rateLimit ? u.rateLimit.remaining + (u.rateLimit.limit !== null ? ' / ' + u.rateLimit.limit : '') + ' left (' + u.rateLimit.credential + ')' : '–', 'ratelimit', u.rateLimit ? u.rateLimit.remaining : '');
      cell(tr, budgetText(u.budget, s.now), u.budget && u.budget.underReserve ? 'pullbudget bad' : 'pullbudget', u.budget && u.budget.exhaustsAt !== null ? u.budget.exhaustsAt : '');
      return tr;
    }), 11, 'no upstreams');

    var ra = s.refreshAhead;
    $('refresh-ahead').textContent = !ra ? '' : !ra.enabled ? 'Refresh-ahead: off (refreshAhead.enabled)' :
      'Refresh-ahead: ' + ra.hotTags + ' hot tags, ' + ra.inFlight + ' refreshing, ' + bytes(ra.bytesLastHour) + ' of ' + bytes(ra.maxBytesPerHour) + ' in the last hour';

    fill('downloads', s.downloads.map(function (d) {
      var tr = document.createElement('tr');
      tr.setAttribute('data-digest', d.digest);
      cell(tr, d.upstream + '/' + d.repo + '@' + d.digest.slice(0, 19) + '…', 'mono');
      bar(tr, d.size ? d.written / d.size : 0);
      cell(tr, bytes(d.written) + (d.size ? ' / ' + bytes(d.size) : ''), 'n', d.written);
      cell(tr, bytes(d.bytesPerSecond) + '/s', 'n');
      return tr;
    }), 4, 'nothing downloading');

    fill('top', s.topImages.map(function (t) {
      var tr = document.createElement('tr');
      cell(tr, t.image, 'mono');
      cell(tr, String(t.pulls), 'n', t.pulls);
      cell(tr, ago(t.lastPull, s.now), 'n muted');
      return tr;
    }), 3, 'no pulls yet');

    fill('errors', s.recentErrors.map(function (e) {
      var tr = document.createElement('tr');
      cell(tr, ago(e.time, s.now), 'muted');
      cell(tr, e.source + (e.upstream ? ' · ' + e.upstream : ''));
      cell(tr, e.what, 'mono');
      cell(tr, (e.status ? e.status + ' ' : '') + e.message);
      return tr;
    }), 4, 'no errors');

    var ev = s.evictions, parts = [];
    parts.push('Evicted: ' + (ev.images.size || 0) + ' images over the budget (' + bytes(ev.bytes.size || 0) + '), ' + (ev.images.idle || 0) + ' idle (' + bytes(ev.bytes.idle || 0) + ').');
    if (ev.last) parts.push('Last eviction ' + ago(ev.last.at, s.now) + ': ' + ev.last.images + ' images, ' + bytes(ev.last.freedBytes) + '.');
    parts.push(s.gc ? 'Last gc ' + ago(s.gc.at, s.now) + ': ' + s.gc.orphanFiles + ' orphan files, ' + s.gc.missingFiles + ' missing, ' + s.gc.tempFiles + ' temp files, ' + bytes(s.gc.freedBytes) + ' freed.' : 'No gc run yet.');
    $('maintenance').textContent = parts.join(' ');
    document.body.setAttribute('data-updated', String(s.now));
  }
  var failures = 0;
  function tick() {
    fetch('/_relais/status', { cache: 'no-store', credentials: 'same-origin' })
      .then(function (r) { if (!r.ok) throw new Error('HTTP ' + r.status); return r.json(); })
      .then(function (s) {
        failures = 0;
        render(s);
        var live = $('live'); live.className = 'live';
        live.textContent = refresh > 0 ? 'live · every ' + refresh + 's · ' + new Date(s.now).toISOString().slice(11, 19) + ' UTC' : 'updated ' + new Date(s.now).toISOString().slice(11, 19) + ' UTC';
      })
      .catch(function (e) {
        failures++;
        var live = $('live'); live.className = 'live stale';
        live.textContent = 'cannot reach relais (' + e.message + ')';
      })
      .then(function () { if (refresh > 0) setTimeout(tick, refresh * 1000 * Math.min(8, Math.pow(2, failures))); });
  }
  tick();
})();
</script>
</body>
</html>
`;
