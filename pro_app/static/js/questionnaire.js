/* Background saving of answers, with an offline queue (the page also works without it).
 * Choosing an answer saves it at once; offline, it waits in localStorage and is sent when
 * the connection returns. It leaves the queue only after a 2xx, or when the server refused
 * it for good (FINAL), so nothing is silently lost. Each queued answer has its own request
 * id (a UUID, Idempotency-Key header and request_id field), the same on every retry: the
 * server saves it once and answers each repetition with the same receipt, so a late retry
 * never writes twice nor overwrites a newer answer. See docs/patient-questionnaire.md.
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
  var csrfMeta = document.querySelector('meta[name="csrf-token"]');
  var csrf = csrfMeta.getAttribute("content");
  var requestField = form.querySelector('input[name="request_id"]');
  var memoryQueue = [];
  var flushing = null;
  var again = false;
  var retryDelay = 1000;
  var retryTimer = null;
  var pendingNavigation = null;
  var sessionEnded = false;

  // Refused for good (invalid answer, closed questionnaire, id used for another answer):
  // dropped, and the patient told. Anything else (401, 400 "csrf", 408, 429, 5xx, offline) keeps it.
  var FINAL = { 400: true, 409: true, 410: true, 413: true, 422: true };

  function message(id) {
    var template = document.getElementById(id);
    if (!template) { return ""; }
    return template.content ? template.content.textContent : template.textContent;
  }

  function show(kind) {
    state.className = "save-state " + kind;
    state.textContent = message("msg-" + kind);
  }

  function showSessionEnded() {
    var template = document.getElementById("msg-session");
    state.className = "save-state failed";
    state.textContent = "";
    if (template && template.content) { state.appendChild(template.content.cloneNode(true)); }
    else { state.textContent = message("msg-session"); }
  }

  function newRequestId() {
    if (window.crypto && typeof window.crypto.randomUUID === "function") { return window.crypto.randomUUID(); }
    var bytes = [];
    var i;
    if (window.crypto && window.crypto.getRandomValues) {
      bytes = Array.prototype.slice.call(window.crypto.getRandomValues(new Uint8Array(16)));
    } else {
      for (i = 0; i < 16; i += 1) { bytes.push(Math.floor(Math.random() * 256)); }
    }
    bytes[6] = (bytes[6] & 0x0f) | 0x40; // version 4
    bytes[8] = (bytes[8] & 0x3f) | 0x80; // RFC 4122 variant
    var hex = bytes.map(function (b) { return ("0" + b.toString(16)).slice(-2); }).join("");
    return hex.slice(0, 8) + "-" + hex.slice(8, 12) + "-" + hex.slice(12, 16) + "-" + hex.slice(16, 20) + "-" + hex.slice(20);
  }

  function writeQueue(queue) {
    memoryQueue = queue;
    try {
      if (queue.length) { window.localStorage.setItem(storageKey, JSON.stringify(queue)); }
      else { window.localStorage.removeItem(storageKey); }
    } catch (e) { /* storage unavailable (private mode): the in-memory queue still holds it */ }
  }

  function readQueue() {
    var queue;
    try {
      var raw = window.localStorage.getItem(storageKey);
      queue = raw ? JSON.parse(raw) : [];
    } catch (e) {
      queue = memoryQueue;
    }
    // Entries queued by an earlier version of this script get their id now, once.
    var upgraded = false;
    queue.forEach(function (entry) {
      if (!entry.request_id) { entry.request_id = newRequestId(); upgraded = true; }
    });
    if (upgraded) { writeQueue(queue); }
    return queue;
  }

  function enqueue(value) {
    // A newer answer to the same question replaces the queued one: only the latest counts.
    var id = newRequestId();
    var queue = readQueue().filter(function (entry) { return entry.item !== item; });
    queue.push({ assessment: Number(assessment), item: item, value: Number(value), request_id: id });
    writeQueue(queue);
    // Moving on posts the same answer: under the same id it is a repetition, not a save.
    if (requestField) { requestField.value = id; }
  }

  function drop(entry) {
    writeQueue(readQueue().filter(function (other) { return other.request_id !== entry.request_id; }));
  }

  function useToken(token) {
    csrf = token;
    csrfMeta.setAttribute("content", token);
    var field = form.querySelector('input[name="csrf_token"]');
    if (field) { field.value = token; }
  }

  function send(entry, renewed) {
    return fetch(saveUrl, {
      method: "POST",
      credentials: "same-origin",
      headers: {
        "Content-Type": "application/json",
        "Accept": "application/json",
        "X-CSRFToken": csrf,
        "Idempotency-Key": entry.request_id
      },
      body: JSON.stringify({ assessment: entry.assessment, item: entry.item, value: entry.value, request_id: entry.request_id })
    }).then(function (response) {
      if (response.ok) {
        drop(entry);
        sessionEnded = false;
        // "Not saved yet" from the server no longer holds once this question's answer is.
        var notice = document.getElementById("unsaved-notice");
        if (notice && entry.item === item) { notice.hidden = true; }
        return "saved";
      }
      return response.json().then(function (body) { return body || {}; }, function () { return {}; }).then(function (body) {
        if (body.code === "csrf") {
          // The page's token expired: send the same request (same id) again with a fresh one.
          if (body.csrf_token && !renewed) { useToken(body.csrf_token); return send(entry, true); }
          throw new Error("token");
        }
        if (response.status === 401) { sessionEnded = true; showSessionEnded(); return "session"; }
        if (FINAL[response.status]) {
          drop(entry);
          state.className = "save-state failed";
          state.textContent = message("msg-failed") + " " + (body.error || "");
          return "failed";
        }
        throw new Error("retry later");
      });
    });
  }

  function sendQueued(outcome) {
    var queue = readQueue();
    if (!queue.length) { return Promise.resolve(outcome); }
    return send(queue[0]).then(function (result) {
      if (result === "session") { return result; }
      return sendQueued(outcome === "failed" ? outcome : result);
    });
  }

  function retryLater(delay) {
    clearTimeout(retryTimer);
    retryTimer = setTimeout(flush, delay);
  }

  function flush() {
    if (flushing) { again = true; return flushing; }
    if (!readQueue().length) { return Promise.resolve(true); }
    if (!sessionEnded) { show("saving"); }
    again = false;
    flushing = sendQueued(null).then(function (outcome) {
      flushing = null;
      if (outcome === "session") {
        // Kept until the patient has opened their link again (here or in another tab).
        retryLater(30000);
        return false;
      }
      retryDelay = 1000;
      if (outcome !== "failed") { show("saved"); }
      if (again && readQueue().length) { return flush(); }
      if (!readQueue().length && pendingNavigation) { var go = pendingNavigation; pendingNavigation = null; go(); }
      return true;
    }, function () {
      flushing = null;
      show("offline");
      retryLater(retryDelay);
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
  // wait for the queue to empty, then continue where the patient wanted to go. After the
  // session ended the form is posted anyway: the server keeps the answer and explains.
  form.addEventListener("submit", function (event) {
    if (!readQueue().length || sessionEnded) { return; }
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
  document.addEventListener("visibilitychange", function () {
    if (document.visibilityState === "visible") { flush(); }
  });

  // A pending answer for this question (e.g. the page was reloaded offline) is shown again.
  var pending = false;
  readQueue().forEach(function (entry) {
    if (entry.item === item) {
      var radio = document.getElementById("v" + entry.value);
      if (radio) { radio.checked = true; pending = true; }
      if (requestField) { requestField.value = entry.request_id; }
    }
  });
  // An answer chosen while this script was still loading on a slow phone is saved too.
  var checked = form.querySelector('input[name="value"]:checked');
  if (!pending && checked && checked.value !== form.getAttribute("data-saved")) { enqueue(checked.value); }
  flush();
})();
