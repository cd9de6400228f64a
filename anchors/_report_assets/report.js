// The interactive part of report.html: the CoT as a heatmap, the rollouts panel, the graph and the matrix.
// Every text of the trace and the rollouts reaches the page through textContent, never as markup.
(() => {
  'use strict';
  const src = document.getElementById('report-data');
  if (!src) return;
  const D = JSON.parse(src.textContent);
  const S = D.sentences, K = S.length;
  const M = Object.fromEntries(D.metrics.map(m => [m.name, m]));
  const RAISE = [196, 78, 82], LOWER = [76, 114, 176], GREY = [235, 235, 235];
  const state = {metric: D.default_metric, scale: 'linear', sel: null, sel2: null};

  const el = (tag, cls, text) => {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined && text !== null) e.textContent = String(text);
    return e;
  };
  const svgEl = (tag, attrs) => {
    const e = document.createElementNS('http://www.w3.org/2000/svg', tag);
    for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
    return e;
  };
  const fmt = v => (v === null || v === undefined) ? '–'
    : (typeof v !== 'number') ? String(v) : (Math.abs(v) >= 100 ? v.toFixed(1) : v.toFixed(3));
  const clip = (t, n) => (t.length > n ? t.slice(0, n - 1) + '…' : t);
  const pct = (c, n) => (n ? (100 * c / n) : 0);

  // -- colour scale ------------------------------------------------------------------------------------------
  const vmaxOf = m => {
    let v = 0;
    for (const x of m.values) if (x !== null && Math.abs(x) > v) v = Math.abs(x);
    return v > 0 ? v : 1;
  };
  const mix = (rgb, a) => rgb.map(c => Math.round(255 + (c - 255) * a));
  const css = rgb => `rgb(${rgb[0]}, ${rgb[1]}, ${rgb[2]})`;
  const shade = (v, vmax, scale) => {
    let t = Math.min(1, Math.abs(v) / vmax);
    if (scale === 'sqrt') t = Math.sqrt(t);
    return mix(v < 0 ? LOWER : RAISE, 0.8 * t);
  };
  const colourOf = (m, i) => {
    const v = m.values[i];
    return v === null ? null : css(shade(v, vmaxOf(m), state.scale));
  };
  const nsAt = (m, i) => !!(m.significant && m.significant[i] === false);

  // -- controls ----------------------------------------------------------------------------------------------
  const select = document.getElementById('metric');
  for (const m of D.metrics) {
    const o = el('option', null, m.name + (m.defined ? '' : ' (undefined everywhere)'));
    o.value = m.name;
    select.appendChild(o);
  }
  if (state.metric) select.value = state.metric;
  const scaleSel = document.getElementById('scale');
  const tagsBox = document.getElementById('tags');

  const legend = () => {
    const box = document.getElementById('legend');
    box.replaceChildren();
    const m = M[state.metric];
    if (!m) return;
    const vmax = vmaxOf(m);
    const stops = [];
    const lo = m.signed ? -vmax : 0;
    for (let k = 0; k <= 10; k++) {
      const v = lo + (vmax - lo) * k / 10;
      stops.push(css(shade(v, vmax, state.scale)) + ` ${k * 10}%`);
    }
    const sc = el('div', 'scale');
    const bar = el('div', 'bar');
    bar.style.background = `linear-gradient(to right, ${stops.join(', ')})`;
    const ticks = el('div', 'ticks');
    ticks.append(el('span', null, fmt(lo)), el('span', null, m.signed ? '0' : ''), el('span', null, fmt(vmax)));
    sc.append(bar, ticks);
    box.append(sc);
    const item = (cls, label) => {
      const s = el('span');
      const sw = el('span', 'swatch ' + cls);
      s.append(sw, document.createTextNode(label));
      box.append(s);
      return sw;
    };
    item('undefsw', 'undefined (–)').style.cssText = 'border-style:dashed;background:#fff';
    if (m.significant) {
      const sw = item('nssw', `not distinguishable from noise (${m.significance_rule})`);
      sw.style.backgroundImage = 'repeating-linear-gradient(135deg,rgba(0,0,0,.3) 0 1px,transparent 1px 5px)';
    }
    document.getElementById('about').textContent = m.about + (m.signed
      ? ' Red: positive, blue: negative, white: 0.' : ' Darker red: larger.') +
      ` Colour ${state.scale === 'sqrt' ? '∝ √|value|' : '∝ |value|'}, full at |value| = ${fmt(vmax)}.`;
  };

  // -- the text ----------------------------------------------------------------------------------------------
  const prompt = document.getElementById('prompt');
  for (const msg of D.trace.prompt) {
    const box = el('div', 'msg');
    box.append(el('span', 'who', msg.role), document.createTextNode(msg.content));
    prompt.appendChild(box);
  }
  const cot = document.getElementById('cot');
  cot.append(el('span', 'think', '<think>'));
  const spans = S.map((s, i) => {
    if (s.gap) cot.append(document.createTextNode(s.gap));
    const span = el('span', 'sent');
    span.dataset.i = String(i);
    span.dataset.pos = String(s.pos);
    span.tabIndex = 0;
    const tag = el('span', 'tag', s.tag);
    tag.style.color = tag.style.borderColor = D.roles[s.role] || '#888';
    tag.title = s.role;
    span.append(tag, document.createTextNode(s.text));
    cot.append(span);
    return span;
  });
  if (D.trace.tail) cot.append(document.createTextNode(D.trace.tail));
  cot.append(el('span', 'think', '</think>'));
  if (D.trace.answer_text !== null || D.trace.gt_answer !== null) {
    const ans = document.getElementById('answer');
    if (D.trace.answer_text !== null) ans.append(el('div', 'msg', D.trace.answer_text));
    if (D.trace.gt_answer !== null) ans.append(el('div', 'meta', 'true answer: ' + D.trace.gt_answer));
  }

  const paint = () => {
    const m = M[state.metric];
    spans.forEach((span, i) => {
      const c = m ? colourOf(m, i) : null;
      span.style.backgroundColor = c || '';
      span.classList.toggle('undef', c === null);
      span.classList.toggle('ns', !!m && c !== null && nsAt(m, i));
      span.dataset.v = m && m.values[i] !== null ? String(m.values[i]) : '';
    });
    legend();
    drawGraph();
    drawMatrix();
  };

  // -- hover -------------------------------------------------------------------------------------------------
  const tip = document.getElementById('tip');
  const place = ev => {
    const w = tip.offsetWidth, h = tip.offsetHeight;
    let x = ev.clientX + 14, y = ev.clientY + 14;
    if (x + w > innerWidth - 4) x = Math.max(4, ev.clientX - w - 14);
    if (y + h > innerHeight - 4) y = Math.max(4, ev.clientY - h - 14);
    tip.style.left = x + 'px';
    tip.style.top = y + 'px';
  };
  const metricRows = (i, table) => {
    for (const m of D.metrics) {
      if (m.values[i] === null && m.name !== state.metric) continue;
      const tr = table.insertRow();
      if (m.name === state.metric) tr.className = 'cur';
      const ci = m.lo && m.hi && m.lo[i] !== null && m.hi[i] !== null ? `[${fmt(m.lo[i])}, ${fmt(m.hi[i])}]` : '';
      const n = m.n && m.n[i] !== null ? 'n=' + m.n[i] : '';
      const p = m.p && m.p[i] !== null ? 'p=' + m.p[i] + (nsAt(m, i) ? ' n.s.' : '') : (nsAt(m, i) ? 'n.s.' : '');
      for (const t of [m.name, fmt(m.values[i]), ci, n, p]) tr.insertCell().textContent = t;
    }
  };
  const sentenceTip = (i, ev) => {
    const s = S[i];
    tip.replaceChildren(el('div', null, `sentence ${s.pos} · ${s.role}`));
    tip.firstChild.style.fontWeight = '600';
    tip.append(el('div', 't', clip(s.text, 240)));
    const table = el('table');
    metricRows(i, table);
    tip.append(table);
    const counts = Object.entries(D.counts).filter(([, v]) => v[i] !== null).map(([k, v]) => `${k}=${v[i]}`);
    for (const [k, v] of Object.entries(D.other)) if (v[i] !== null) counts.push(`${k}=${fmt(v[i])}`);
    if (counts.length) tip.append(el('div', 'meta', counts.join('  ')));
    tip.hidden = false;
    place(ev);
  };
  const hideTip = () => { tip.hidden = true; };
  cot.addEventListener('mousemove', ev => {
    const span = ev.target.closest('.sent');
    if (span) sentenceTip(+span.dataset.i, ev); else hideTip();
  });
  cot.addEventListener('mouseleave', hideTip);
  cot.addEventListener('click', ev => {
    const span = ev.target.closest('.sent');
    if (span) choose(+span.dataset.i, null);
  });
  cot.addEventListener('keydown', ev => {
    const span = ev.target.closest('.sent');
    if (span && (ev.key === 'Enter' || ev.key === ' ')) { ev.preventDefault(); choose(+span.dataset.i, null); }
  });

  // -- the panel ---------------------------------------------------------------------------------------------
  const panel = document.getElementById('panel');
  const R = D.rollouts;
  const distChart = (title, d, hereLabel, nextLabel, set) => {
    const box = el('div');
    box.append(el('h4', null, title));
    const key = el('div', 'key');
    const k1 = el('i'), k2 = el('i');
    k1.style.background = '#e08a3c';
    k2.style.background = '#8c8c8c';
    key.append(k1, document.createTextNode(`${hereLabel} (n=${d.n})`), k2,
      document.createTextNode(d.n_next === null ? `${nextLabel}: none` : `${nextLabel} (n=${d.n_next})`));
    box.append(key);
    const grid = el('div', 'dist');
    grid.dataset.set = set;
    const rows = d.rows.slice();
    if (d.other[0] || d.other[1]) rows.push(['other answers', d.other[0], d.other[1], false]);
    for (const [a, here, next, ok] of rows) {
      const label = el('div', 'a' + (ok ? ' ok' : ''), (ok ? '✓ ' : '') + a);
      label.title = a;
      const bars = el('div', 'bars ans');
      bars.dataset.answer = a;
      bars.dataset.here = String(here);
      bars.dataset.next = String(next);
      const b1 = el('div', 'b here'), b2 = el('div', 'b next');
      b1.style.width = pct(here, d.n) + '%';
      b2.style.width = pct(next, d.n_next) + '%';
      const pc = el('div', 'pct');
      pc.append(el('span', null, `${here} (${pct(here, d.n).toFixed(0)}%)`),
        el('span', null, d.n_next === null ? '' : `${next} (${pct(next, d.n_next).toFixed(0)}%)`));
      bars.append(b1, b2, pc);
      grid.append(label, bars);
    }
    if (!rows.length) grid.append(el('div', 'hint', 'no rollouts'));
    box.append(grid);
    return box;
  };
  const valueLine = (m, i) => {
    const ci = m.lo && m.lo[i] !== null ? ` [${fmt(m.lo[i])}, ${fmt(m.hi[i])}]` : '';
    const n = m.n && m.n[i] !== null ? `, n=${m.n[i]}` : '';
    const p = m.p && m.p[i] !== null ? `, p=${m.p[i]}` : '';
    return fmt(m.values[i]) + ci + n + p;
  };
  const renderPanel = i => {
    panel.replaceChildren();
    if (i === null) {
      panel.removeAttribute('data-pos');
      panel.append(el('p', 'hint',
        'Click a sentence (or a graph node or matrix cell) to see the rollouts behind its numbers. ' +
        '← and → step through the sentences.'));
      return;
    }
    const s = S[i];
    panel.dataset.pos = String(s.pos);
    const h = el('h3');
    const t = el('span', null, `Sentence ${s.pos} `);
    const tag = el('span', 'tag', s.role);
    tag.style.color = tag.style.borderColor = D.roles[s.role] || '#888';
    t.append(tag);
    const close = el('button', null, 'close');
    close.addEventListener('click', () => choose(null, null));
    h.append(t, close);
    panel.append(h, el('div', 'quote', s.text));
    const kv = el('div', 'kv');
    const m = M[state.metric];
    for (const name of [state.metric, 'different_trajectories_fraction', 'accuracy']) {
      const mm = M[name];
      if (!mm) continue;
      if (kv.querySelector(`[data-m="${name}"]`)) continue;
      const k = el('span', 'k', name);
      k.dataset.m = name;
      kv.append(k, el('span', null, valueLine(mm, i)));
    }
    if (D.counts.n_different && D.counts.n_rollouts) {
      kv.append(el('span', 'k', 'different trajectories'),
        el('span', null, `${D.counts.n_different[i]} of ${D.counts.n_rollouts[i]} resampled sentences differ in meaning`));
    }
    if (s.source) kv.append(el('span', 'k', 'counterfactual source'), el('span', null, s.source));
    panel.append(kv);
    if (m && nsAt(m, i)) panel.append(el('p', 'nsnote', `${state.metric}: not distinguishable from noise (${m.significance_rule}).`));
    if (!R) {
      panel.append(el('p', 'hint', 'No rollouts were given to the report (rollouts.parquet holds them).'));
      return;
    }
    const here = R.by_position[String(s.pos)];
    const np = here.next;
    const nextName = np === null ? 'kept' : `kept: resampled from ${np} (R_${np})`;
    panel.append(distChart('Answers when sentence is resampled vs kept', here.resample,
      `resampled here (R_${s.pos})`, nextName, 'resample'));
    if (here.forced.n || here.forced.n_next) {
      panel.append(distChart('Forced answers (answer right after the prefix)', here.forced,
        `without it (F_${s.pos})`, np === null ? 'with it' : `with it (F_${np})`, 'forced'));
    }
    const conts = here.continuations;
    panel.append(el('h4', null, `Resampled continuations (${conts.length} of ${here.resample.n})`));
    panel.append(el('div', 'key', 'The model rewrote this sentence (highlighted) and went on from there; ' +
      'shown in turn from each answer. Stored: at most ' + D.max_continuations + ' per position.'));
    const list = el('div', 'conts');
    for (const c of conts) {
      const card = el('div', 'cont');
      card.dataset.answer = c.answer === null ? '' : c.answer;
      card.dataset.sample = String(c.sample);
      const hd = el('div', 'hd');
      const cls = c.answer === null ? 'none' : (c.correct ? 'ok' : 'bad');
      const badge = el('span', 'badge ' + cls, c.answer === null ? 'no answer' : (c.correct ? '✓ ' : '✗ ') + c.answer);
      hd.append(el('span', null, 'sample ' + c.sample), badge);
      const tx = el('div', 'tx');
      if (c.before) tx.append(document.createTextNode(c.before));
      if (c.first) tx.append(el('mark', 'first', c.first));
      tx.append(el('span', 'rest', c.rest));
      if (c.cut) tx.append(el('span', 'hint', ` … (${c.cut} more characters)`));
      card.append(hd, tx);
      list.append(card);
    }
    panel.append(list);
  };

  // -- selection ---------------------------------------------------------------------------------------------
  const tableRows = () => [...document.querySelectorAll('table.sortable tbody tr')];
  const choose = (i, j) => {
    state.sel = i;
    state.sel2 = j;
    spans.forEach((s, k) => {
      s.classList.toggle('sel', k === i);
      s.classList.toggle('sel2', k === j && j !== i);
    });
    for (const tr of tableRows()) tr.classList.toggle('sel', i !== null && tr.cells[0].textContent === String(S[i].pos));
    renderPanel(i);
    drawGraph();
    drawMatrix();
    if (i !== null) {
      const r = spans[i].getBoundingClientRect();
      if (r.top < 60 || r.bottom > innerHeight) spans[i].scrollIntoView({block: 'center'});
      history.replaceState(null, '', `#s${S[i].pos}&m=${encodeURIComponent(state.metric || '')}`);
    }
  };
  document.addEventListener('keydown', ev => {
    if (ev.target.closest && ev.target.closest('select,input,textarea')) return;
    if (ev.key === 'Escape') choose(null, null);
    if ((ev.key === 'ArrowRight' || ev.key === 'ArrowLeft') && K) {
      const d = ev.key === 'ArrowRight' ? 1 : -1;
      choose(state.sel === null ? 0 : Math.max(0, Math.min(K - 1, state.sel + d)), null);
      ev.preventDefault();
    }
  });
  const tbody = document.querySelector('table.sortable tbody');
  if (tbody) tbody.addEventListener('click', ev => {
    const tr = ev.target.closest('tr');
    const i = tr ? S.findIndex(s => String(s.pos) === tr.cells[0].textContent) : -1;
    if (i >= 0) { choose(i, null); document.getElementById('trace-view').scrollIntoView(); }
  });

  // -- graph -------------------------------------------------------------------------------------------------
  const graph = document.getElementById('graph');
  function drawGraph() {
    if (!graph) return;
    graph.replaceChildren();
    if (!K) return;
    const step = Math.max(8, Math.min(80, 1100 / K)), pad = 24, H = 230, base = H - 26;
    const W = pad * 2 + step * (K - 1);
    graph.setAttribute('width', String(W));
    graph.setAttribute('height', String(H));
    graph.setAttribute('viewBox', `0 0 ${W} ${H}`);
    const x = i => pad + step * i;
    const wmax = Math.max(1e-12, ...D.edges.map(e => Math.abs(e[2] || 0)));
    const span = Math.max(1, ...D.edges.map(e => Math.abs(e[1] - e[0])));
    const ry = r => (base - 12) * r / (step * span / 2);
    for (const [u, v, w] of D.edges) {
      if (w === null) continue;
      const rx = Math.abs(x(v) - x(u)) / 2;
      const on = state.sel !== null && (u === state.sel || v === state.sel);
      const p = svgEl('path', {
        d: `M ${x(Math.min(u, v))} ${base} A ${rx} ${ry(rx)} 0 0 1 ${x(Math.max(u, v))} ${base}`,
        stroke: css(w > 0 ? RAISE : LOWER),
        'stroke-opacity': String(state.sel === null ? 0.2 + 0.8 * Math.abs(w) / wmax : (on ? 0.95 : 0.08)),
        'stroke-width': on ? '2' : '1.2',
      });
      const title = svgEl('title');
      title.textContent = `M[${S[u].pos}, ${S[v].pos}] = ${fmt(w)}: keeping ${S[u].pos} ${w > 0 ? 'raises' : 'lowers'} ` +
        `the share of rollouts that contain ${S[v].pos}'s content`;
      p.append(title);
      p.addEventListener('click', () => choose(u, v));
      graph.append(p);
    }
    const m = M[state.metric];
    const vmax = m ? vmaxOf(m) : 1;
    const every = Math.max(1, Math.ceil(K / 25));
    S.forEach((s, i) => {
      const v = m ? m.values[i] : null;
      const r = v === null ? 3 : 3 + 8 * Math.sqrt(Math.min(1, Math.abs(v) / vmax));
      const c = svgEl('circle', {cx: x(i), cy: base, r: r.toFixed(1), fill: D.roles[s.role] || '#888'});
      c.dataset.i = String(i);
      if (i === state.sel || i === state.sel2) c.classList.add('sel');
      if (v === null) c.setAttribute('fill-opacity', '0.35');
      c.addEventListener('click', () => choose(i, null));
      c.addEventListener('mousemove', ev => sentenceTip(i, ev));
      c.addEventListener('mouseleave', hideTip);
      graph.append(c);
      if (i % every === 0) {
        const t = svgEl('text', {x: x(i), y: base + 20, 'text-anchor': 'middle'});
        t.textContent = String(s.pos);
        graph.append(t);
      }
    });
  }

  // -- matrix ------------------------------------------------------------------------------------------------
  const canvas = document.getElementById('matrix');
  const cell = K ? Math.max(2, Math.min(28, Math.floor(560 / K))) : 1;
  let mmax = 1e-12;
  if (D.matrix) for (const row of D.matrix) for (const v of row) if (v !== null && Math.abs(v) > mmax) mmax = Math.abs(v);
  const mAt = (i, j) => (D.matrix && j > i ? D.matrix[i][j - i - 1] : null);
  function drawMatrix() {
    if (!canvas || !D.matrix) return;
    const dpr = window.devicePixelRatio || 1, side = K * cell;
    canvas.width = side * dpr;
    canvas.height = side * dpr;
    canvas.style.width = canvas.style.height = side + 'px';
    const g = canvas.getContext('2d');
    g.setTransform(dpr, 0, 0, dpr, 0, 0);
    g.fillStyle = '#fff';
    g.fillRect(0, 0, side, side);
    for (let i = 0; i < K; i++) {
      for (let j = i + 1; j < K; j++) {
        const v = mAt(i, j);
        g.fillStyle = v === null ? css(GREY) : css(shade(v, mmax, 'linear'));
        g.fillRect(j * cell, i * cell, cell, cell);
      }
    }
    g.lineWidth = 1.5;
    g.strokeStyle = '#111';
    if (state.sel !== null) {
      g.strokeRect(0.5, state.sel * cell + 0.5, side - 1, cell - 1);
      g.setLineDash([3, 2]);
      g.strokeRect(state.sel * cell + 0.5, 0.5, cell - 1, side - 1);
      g.setLineDash([]);
    }
    if (state.sel !== null && state.sel2 !== null) {
      g.lineWidth = 2.5;
      g.strokeRect(state.sel2 * cell, state.sel * cell, cell, cell);
    }
  }
  if (canvas && D.matrix) {
    const at = ev => {
      const r = canvas.getBoundingClientRect();
      return [Math.floor((ev.clientY - r.top) / cell), Math.floor((ev.clientX - r.left) / cell)];
    };
    canvas.addEventListener('mousemove', ev => {
      const [i, j] = at(ev);
      if (i < 0 || j < 0 || i >= K || j >= K) return hideTip();
      const v = mAt(i, j);
      tip.replaceChildren(el('div', null, `M[${S[i].pos}, ${S[j].pos}] = ${j > i ? fmt(v) : 'not defined (j ≤ i)'}`));
      tip.firstChild.style.fontWeight = '600';
      tip.append(el('div', 't', `i = ${S[i].pos}: ${clip(S[i].text, 120)}`), el('div', 't', `j = ${S[j].pos}: ${clip(S[j].text, 120)}`));
      tip.hidden = false;
      place(ev);
    });
    canvas.addEventListener('mouseleave', hideTip);
    canvas.addEventListener('click', ev => {
      const [i, j] = at(ev);
      if (i >= 0 && j >= 0 && i < K && j < K) choose(i, j === i ? null : j);
    });
    const ml = document.getElementById('matrix-legend');
    if (ml) {
      const bar = el('div', 'bar');
      const stops = [];
      for (let k = 0; k <= 10; k++) stops.push(css(shade(-mmax + 2 * mmax * k / 10, mmax, 'linear')) + ` ${k * 10}%`);
      bar.style.background = `linear-gradient(to right, ${stops.join(', ')})`;
      const ticks = el('div', 'ticks');
      ticks.append(el('span', null, fmt(-mmax)), el('span', null, '0'), el('span', null, fmt(mmax)));
      const sc = el('div', 'scale');
      sc.append(bar, ticks);
      ml.append(sc);
    }
  }

  // -- wiring ------------------------------------------------------------------------------------------------
  select.addEventListener('change', () => {
    state.metric = select.value;
    paint();
    if (state.sel !== null) choose(state.sel, state.sel2);
  });
  scaleSel.addEventListener('change', () => { state.scale = scaleSel.value; paint(); });
  tagsBox.addEventListener('change', () => cot.classList.toggle('notags', !tagsBox.checked));
  const hash = new URLSearchParams(location.hash.slice(1).replace(/^s(\d+)/, 's=$1'));
  if (hash.get('m') && M[hash.get('m')]) { state.metric = hash.get('m'); select.value = state.metric; }
  paint();
  const start = hash.get('s') === null ? -1 : S.findIndex(s => String(s.pos) === hash.get('s'));
  choose(start >= 0 ? start : null, null);
  document.body.dataset.ready = '1';
})();
