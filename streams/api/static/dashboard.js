// driftline dashboard: refresh the page's #content from its fragment URL without reloading the page.
(function () {
  "use strict";
  var content = document.getElementById("content");
  var stamp = document.getElementById("stamp");
  if (!content) { return; }
  var url = content.getAttribute("data-fragment");
  var every = 1000 * Number(content.getAttribute("data-refresh") || "5");
  var open = function () {  // keep the evidence panels a reader opened across refreshes
    return Array.prototype.map.call(content.querySelectorAll("details[open]"), function (d) {
      return d.parentElement ? Array.prototype.indexOf.call(content.querySelectorAll("details"), d) : -1;
    });
  };
  var say = function (text, failed) {
    if (stamp) { stamp.textContent = text; stamp.className = failed ? "stamp stale" : "stamp"; }
  };
  var refresh = function () {
    fetch(url, { credentials: "same-origin", headers: { "Accept": "text/html" } })
      .then(function (response) {
        if (!response.ok) { throw new Error("HTTP " + response.status); }
        return response.text();
      })
      .then(function (html) {
        var kept = open();
        if (html !== content.innerHTML) { content.innerHTML = html; }
        var all = content.querySelectorAll("details");
        kept.forEach(function (i) { if (all[i]) { all[i].open = true; } });
        say("updated " + new Date().toLocaleTimeString(), false);
      })
      .catch(function (error) { say("refresh failed (" + error.message + "), retrying", true); })
      .then(function () { window.setTimeout(refresh, every); });
  };
  say("updated " + new Date().toLocaleTimeString(), false);
  window.setTimeout(refresh, every);
}());
