/* Background saving of questionnaire answers, with an offline queue.
 *
 * The page works without this script (each answer is a form post). With it, choosing an
 * answer saves it at once; while the phone is offline the answer waits in a queue in the
 * browser (localStorage) and is sent when the connection returns. An answer leaves the
 * queue only after the server acknowledged it with a 2xx, so nothing is silently lost.
 */
(function () {
  "use strict";
  var form = document.getElementById("question-form");
  if (!form || !window.fetch || !window.Promise || !window.JSON) { return; }

  var saveUrl = form.getAttribute("data-save-url");
  var assessment = form.getAttribute("data-assessment");
  var item = form.getAttribute("data-item");
  var storageKey = "pro-app-queue-" + assessment;
  var state = document.getElementById("save-state");
  var csrf = document.querySelector('meta[name="csrf-token"]').getAttribute("content");
  var memoryQueue = [];
  var flushing = null;
  var retryDelay = 1000;
  var retryTimer = null;
  var pendingNavigation = null;

  function message(id) {
    var template = document.getElementById(id);
    if (!template) { return ""; }
    return template.content ? template.content.textContent : template.textContent;
  }

  function show(kind) {
    state.className = "save-state " + kind;
    state.textContent = message("msg-" + kind);
  }

  function readQueue() {
    try {
      var raw = window.localStorage.getItem(storageKey);
      return raw ? JSON.parse(raw) : [];
    } catch (e) {
      return memoryQueue;
    }
  }

  function writeQueue(queue) {
    memoryQueue = queue;
    try {
      if (queue.length) { window.localStorage.setItem(storageKey, JSON.stringify(queue)); }
      else { window.localStorage.removeItem(storageKey); }
    } catch (e) { /* storage unavailable (private mode): the in-memory queue still holds it */ }
  }

  function newKey() {
    if (window.crypto && window.crypto.getRandomValues) {
      var bytes = new Uint8Array(16);
      window.crypto.getRandomValues(bytes);
      return Array.prototype.map.call(bytes, function (b) { return ("0" + b.toString(16)).slice(-2); }).join("");
    }
    return String(Date.now()) + String(Math.random()).slice(2);
  }

  function enqueue(value) {
    // A newer answer to the same question replaces the queued one: only the latest counts.
    var queue = readQueue().filter(function (entry) { return entry.item !== item; });
    queue.push({ assessment: Number(assessment), item: item, value: Number(value), key: newKey() });
    writeQueue(queue);
  }

  function drop(entry) {
    writeQueue(readQueue().filter(function (other) { return other.key !== entry.key; }));
  }

  function send(entry) {
    return fetch(saveUrl, {
      method: "POST",
      credentials: "same-origin",
      headers: { "Content-Type": "application/json", "Accept": "application/json", "X-CSRFToken": csrf },
      body: JSON.stringify(entry)
    }).then(function (response) {
      if (response.ok) { drop(entry); return "saved"; }
      if (response.status >= 400 && response.status < 500 && response.status !== 408 && response.status !== 429) {
        // The server refused the answer for good (closed questionnaire, expired session):
        // keep it out of the queue and tell the patient; the page shows what to do.
        drop(entry);
        return response.json().then(function (body) {
          state.className = "save-state failed";
          state.textContent = message("msg-failed") + " " + ((body && body.error) || "");
          return "failed";
        }, function () { show("failed"); return "failed"; });
      }
      throw new Error("server busy");
    });
  }

  function flush() {
    if (flushing) { return flushing; }
    var queue = readQueue();
    if (!queue.length) { return Promise.resolve(true); }
    show("saving");
    flushing = queue.reduce(function (chain, entry) {
      return chain.then(function () { return send(entry); });
    }, Promise.resolve()).then(function (last) {
      flushing = null;
      retryDelay = 1000;
      if (last !== "failed") { show("saved"); }
      if (!readQueue().length && pendingNavigation) { var go = pendingNavigation; pendingNavigation = null; go(); }
      return true;
    }, function () {
      flushing = null;
      show("offline");
      clearTimeout(retryTimer);
      retryTimer = setTimeout(flush, retryDelay);
      retryDelay = Math.min(retryDelay * 2, 30000);
      return false;
    });
    return flushing;
  }

  form.addEventListener("change", function (event) {
    if (event.target && event.target.name === "value") {
      enqueue(event.target.value);
      flush();
    }
  });

  // Moving on while answers are still queued would post the form without a connection:
  // wait for the queue to empty, then continue where the patient wanted to go.
  form.addEventListener("submit", function (event) {
    if (!readQueue().length) { return; }
    event.preventDefault();
    var button = event.submitter;
    show(navigator.onLine === false ? "offline" : "saving");
    pendingNavigation = function () {
      if (button && button.name) {
        var hidden = document.createElement("input");
        hidden.type = "hidden"; hidden.name = button.name; hidden.value = button.value;
        form.appendChild(hidden);
      }
      form.submit();
    };
    flush();
  });

  window.addEventListener("online", flush);

  // A pending answer for this question (e.g. the page was reloaded offline) is shown again.
  var pending = false;
  readQueue().forEach(function (entry) {
    if (entry.item === item) {
      var radio = document.getElementById("v" + entry.value);
      if (radio) { radio.checked = true; pending = true; }
    }
  });
  // An answer chosen while this script was still loading on a slow phone is saved too.
  var checked = form.querySelector('input[name="value"]:checked');
  if (!pending && checked && checked.value !== form.getAttribute("data-saved")) { enqueue(checked.value); }
  flush();
})();
