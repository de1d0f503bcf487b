/* The run page follows its run: it polls the run's progress (counts and words, never a
   contact) and, once the run has ended, puts the report where the progress was,
   without reloading the page. Without this script the page works the same, a
   Refresh link away. Loaded with defer; no inline script (the console's
   Content-Security-Policy allows none). */
(function () {
  "use strict";

  var EVERY_MS = 2000;
  var GIVE_UP_AFTER = 5;
  var live = document.getElementById("live");
  var statusLine = document.getElementById("run-status");
  if (!live || !statusLine) {
    return;
  }
  var progressUrl = live.getAttribute("data-progress");
  var pageUrl = live.getAttribute("data-page");
  var failures = 0;

  function show(progress) {
    Object.keys(progress.fields).forEach(function (name) {
      var cell = live.querySelector('[data-field="' + name + '"]');
      if (cell) {
        cell.textContent = progress.fields[name];
      }
    });
    var bar = live.querySelector("progress");
    if (bar) {
      bar.value = progress.percent;
      bar.textContent = progress.percent + "%";
    }
    if (!progress.ended) {
      statusLine.textContent = progress.title + ".";
      statusLine.className = "status " + progress.status;
    }
  }

  function stalled() {
    var hint = document.getElementById("live-hint");
    if (hint) {
      hint.textContent = "The run's progress could not be read just now. ";
      var again = document.createElement("a");
      again.href = pageUrl;
      again.textContent = "Refresh";
      hint.appendChild(again);
      hint.appendChild(document.createTextNode(" to see the run as it is now."));
    }
    document.body.setAttribute("data-run", "stalled");
  }

  function ended() {
    fetch(pageUrl, { credentials: "same-origin", cache: "no-store" })
      .then(function (answer) {
        if (!answer.ok) {
          throw new Error("the run's page answered " + answer.status);
        }
        return answer.text();
      })
      .then(function (html) {
        var fresh = new DOMParser().parseFromString(html, "text/html");
        var run = fresh.getElementById("run");
        var status = fresh.getElementById("run-status");
        if (!run || !status) {
          throw new Error("the run's page has no report");
        }
        document.getElementById("run").replaceWith(document.adoptNode(run));
        statusLine.className = status.className;
        statusLine.textContent = status.textContent;
        document.body.setAttribute("data-run", "ended");
      })
      .catch(stalled);
  }

  function poll() {
    fetch(progressUrl, {
      credentials: "same-origin",
      cache: "no-store",
      headers: { Accept: "application/json" },
    })
      .then(function (answer) {
        if (!answer.ok) {
          throw new Error("the progress answered " + answer.status);
        }
        return answer.json();
      })
      .then(function (progress) {
        failures = 0;
        show(progress);
        if (progress.ended) {
          ended();
        } else {
          window.setTimeout(poll, EVERY_MS);
        }
      })
      .catch(function () {
        failures += 1;
        if (failures >= GIVE_UP_AFTER) {
          stalled();
        } else {
          window.setTimeout(poll, EVERY_MS * (failures + 1));
        }
      });
  }

  document.body.setAttribute("data-run", "following");
  window.setTimeout(poll, EVERY_MS);
})();
