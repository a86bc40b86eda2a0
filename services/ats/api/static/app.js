// ATS dashboard client: language (localStorage 'ats_lang'), account (localStorage 'ats_account'), number
// formats per locale, offline plotly charts, the periodic refresh (30 s) and the "Run backfill" buttons.
(function () {
  "use strict";
  var D = window.ATS_I18N, LOC = window.ATS_LOCALES, REFRESH_MS = 30000;
  function lang() { var l = localStorage.getItem("ats_lang"); return D[l] ? l : "en"; }
  function tr(key) { var d = D[lang()]; return (d && d[key]) || D.en[key] || key; }
  window.atsT = tr;

  function fmtNum(el, loc) {
    var v = parseFloat(el.getAttribute("data-num")), f = el.getAttribute("data-fmt");
    if (isNaN(v)) return;
    var o;
    if (f === "usd" || f === "money") o = {minimumFractionDigits: 2, maximumFractionDigits: 2};
    else if (f === "int") o = {maximumFractionDigits: 0};
    else if (f === "frac") o = {style: "percent", minimumFractionDigits: 1, maximumFractionDigits: 1};
    else if (f === "pct") { el.textContent = (v > 0 ? "+" : "") + new Intl.NumberFormat(loc, {minimumFractionDigits: 2, maximumFractionDigits: 2}).format(v) + "%"; return; }
    else o = {maximumSignificantDigits: 6};
    el.textContent = new Intl.NumberFormat(loc, o).format(v);
  }

  function applyLang() {
    var l = lang(), d = D[l], loc = LOC[l];
    document.documentElement.lang = l === "zh" ? "zh-CN" : "en";
    document.querySelectorAll("[data-i18n]").forEach(function (el) {
      var k = el.getAttribute("data-i18n"); if (d[k] !== undefined) el.textContent = d[k];
    });
    document.querySelectorAll("[data-num]").forEach(function (el) { fmtNum(el, loc); });
    document.cookie = "ats_lang=" + l + "; path=/; max-age=31536000; samesite=strict";
    drawCharts();
  }

  function chartLayout(titleKey, ytitle) {
    return {title: {text: tr(titleKey)}, margin: {t: 40, r: 20, b: 40, l: 60}, height: 320,
            separators: lang() === "zh" ? ".," : ".,", legend: {orientation: "h"},
            yaxis: {title: {text: ytitle || ""}}, font: {family: "WenQuanYi Micro Hei, sans-serif"}};
  }

  function drawCharts() {
    var el = document.getElementById("chart-data");
    if (!el || !window.Plotly) return;
    var data = JSON.parse(el.textContent), cfg = {displayModeBar: false, responsive: true, locale: lang()};
    if (document.getElementById("chart-pnl")) {
      Plotly.react("chart-pnl", [{x: data.hours, y: data.pnl_usd, type: "scatter", mode: "lines", name: tr("analytics.cum_net")}],
                   chartLayout("analytics.equity_chart", "USD"), cfg);
      var f = data.flow;
      Plotly.react("chart-flow", [
        {x: f.hours, y: f.buy_usd, type: "bar", name: tr("analytics.buy_volume")},
        {x: f.hours, y: f.sell_usd, type: "bar", name: tr("analytics.sell_volume")},
        {x: f.hours, y: f.fees_usd, type: "bar", name: tr("analytics.fees")},
        {x: data.hours, y: data.pnl_usd, type: "scatter", mode: "lines", name: tr("analytics.cum_net"), yaxis: "y2"}],
        Object.assign(chartLayout("analytics.flow_chart", "USD"), {barmode: "group",
          yaxis2: {overlaying: "y", side: "right"}}), cfg);
    }
    if (document.getElementById("chart-bt")) {
      Plotly.react("chart-bt", [{x: data.ts, y: data.equity_usd, type: "scatter", mode: "lines", name: tr("bt.equity")}],
                   chartLayout("bt.equity", "USD"), cfg);
    }
  }

  function withAccount(href) {
    var a = localStorage.getItem("ats_account");
    if (!a) return href;
    var u = new URL(href, location.href); u.searchParams.set("account", a); return u.pathname + u.search;
  }

  function setupAccount() {
    var params = new URLSearchParams(location.search), stored = localStorage.getItem("ats_account");
    if (document.body.getAttribute("data-accounts")) {
      if (params.get("account")) localStorage.setItem("ats_account", params.get("account"));
      else if (stored && stored !== "default" && document.querySelector('[data-account="' + stored + '"]')) {
        location.replace(withAccount(location.href)); return false;
      }
    }
    document.querySelectorAll("a.acct").forEach(function (a) { a.href = withAccount(a.getAttribute("href")); });
    return true;
  }

  function showMsg(html, cls) {
    var m = document.getElementById("backfill-msg"); if (!m) return;
    m.className = "msg " + (cls || ""); m.innerHTML = html;
  }
  function esc(s) { return String(s).replace(/[&<>"]/g, function (c) { return {"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;"}[c]; }); }
  function L(key) { return '<span data-i18n="' + key + '">' + esc(tr(key)) + "</span>"; }

  function pollJob(id) {
    fetch("/api/jobs/" + id).then(function (r) { return r.json(); }).then(function (j) {
      if (j.status === "running") { setTimeout(function () { pollJob(id); }, 1000); return; }
      var ok = j.status === "done";
      showMsg(L("hub.job") + " <code>" + esc(id) + "</code>: " + L(ok ? "hub.done" : "hub.failed") + " — " +
              esc(ok ? j.result.line : j.error), ok ? "ok" : "err");
    });
  }

  function onBackfill(ev) {
    var b = ev.target.closest("button.backfill"); if (!b) return;
    var body = {symbol: b.getAttribute("data-symbol"), timeframe: b.getAttribute("data-timeframe")};
    fetch("/api/backfill", {method: "POST", headers: {"Content-Type": "application/json"}, body: JSON.stringify(body)})
      .then(function (r) { return r.json().then(function (j) { return [r.status, j]; }); })
      .then(function (sj) {
        var s = sj[0], j = sj[1];
        if (s === 202) { showMsg(L("hub.job_started") + " <code id='job-id'>" + esc(j.job_id) + "</code> (" + L("hub.running") + ")", "ok"); pollJob(j.job_id); }
        else if (s === 409) showMsg("<strong>409</strong> " + L("hub.busy") + ": <span class='detail'>" + esc(j.detail) + "</span>", "err");
        else showMsg("<strong>" + s + "</strong> " + esc(j.detail), "err");
      });
  }

  function refresh() {
    if (document.hidden || document.querySelector("#backfill-msg.msg.ok, details[open]")) return;
    fetch(location.href, {headers: {"X-Refresh": "1"}}).then(function (r) { return r.ok ? r.text() : null; })
      .then(function (html) {
        if (!html) return;
        var doc = new DOMParser().parseFromString(html, "text/html"), n = doc.getElementById("content");
        if (!n) return;
        var msg = document.getElementById("backfill-msg"), keep = msg ? msg.innerHTML : null;
        document.getElementById("content").innerHTML = n.innerHTML;
        if (keep !== null && document.getElementById("backfill-msg")) document.getElementById("backfill-msg").innerHTML = keep;
        applyLang();
        document.body.setAttribute("data-refreshed", String(Date.now()));
      });
  }

  document.addEventListener("DOMContentLoaded", function () {
    if (!setupAccount()) return;
    document.getElementById("lang-toggle").addEventListener("click", function () {
      localStorage.setItem("ats_lang", lang() === "zh" ? "en" : "zh"); applyLang();
    });
    document.addEventListener("click", onBackfill);
    applyLang();
    setInterval(refresh, REFRESH_MS);
    window.atsRefresh = refresh;
  });
})();
