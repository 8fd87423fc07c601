// relay chat page: the socket.io tutorial chat (server delivery + client
// delivery steps), with the client's default transports (HTTP long-polling
// first, then WebSocket where the network allows it).
//
// A first visit shows the newest HISTORY_PAGE messages; "Load earlier messages"
// (or scrolling to the top) pages back through the rest, in order, with no
// duplicate at the seam, while live messages keep arriving below. A reconnect
// asks for everything after the last message on screen (and the stock client's
// connection-state recovery, which relay keeps across restarts, does the same).
//
// Your own messages show at once, marked: "sending…" (pending) until the
// server acknowledges them, then "sent"; "not sent: <reason>" when the server
// refuses one (its error text) or the client gives up after its retries.
(function () {
  "use strict";

  // The server's default MAX_MESSAGE_BYTES (UTF-8 bytes, not characters). A
  // server configured lower refuses with its own error, shown on the message.
  var MAX_MESSAGE_BYTES = 65535;
  // Messages a first visit shows, and each "load earlier" adds.
  var HISTORY_PAGE = 100;

  var form = document.getElementById("form");
  var input = document.getElementById("input");
  var messages = document.getElementById("messages");
  var toggleButton = document.getElementById("toggle-btn");
  var notice = document.getElementById("notice");
  var statusBadge = document.getElementById("status");
  var earlierButton = document.getElementById("earlier");
  // Whether older messages may remain, and whether a page of them is on its way.
  var earlierMayExist = true;
  var loadingEarlier = false;

  // A random id for this page load; every message gets "<pageId>-<n>" as its
  // clientOffset so the server can drop a retried emit it already stored.
  // (socket.id is undefined while offline, so it cannot be used for this.)
  var pageId = randomId();
  var counter = 0;
  var lastQueuedId = 0;
  var noticeTimer = null;
  var lengthNotice = false;
  // Messages received but not yet on screen: a long history arrives as thousands of events, and
  // appending them one by one (a layout and a scroll each) would freeze the page.
  var pending = [];
  var frameRequest = null;
  var fallbackTimer = null;
  // Own messages emitted and not yet acknowledged, oldest first: {text, li, after}. Their rows
  // stay at the end of the list; messages from the server go above them.
  var outbox = [];

  var socket = io({
    // historyLimit: a first visit gets the newest page, not the whole history.
    auth: { serverOffset: 0, historyLimit: HISTORY_PAGE },
    ackTimeout: 10000,
    retries: 3,
  });

  function randomId() {
    if (window.crypto && typeof window.crypto.randomUUID === "function") {
      return window.crypto.randomUUID();
    }
    var bytes = new Uint8Array(16);
    window.crypto.getRandomValues(bytes);
    var hex = "";
    for (var i = 0; i < bytes.length; i++) {
      hex += (bytes[i] < 16 ? "0" : "") + bytes[i].toString(16);
    }
    return hex;
  }

  function showNotice(text, sticky) {
    clearTimeout(noticeTimer);
    notice.textContent = text;
    notice.hidden = false;
    if (!sticky) {
      noticeTimer = setTimeout(hideNotice, 5000);
    }
    scrollToEnd();
  }

  function hideNotice() {
    clearTimeout(noticeTimer);
    notice.hidden = true;
    notice.textContent = "";
    lengthNotice = false;
  }

  function scrollToEnd() {
    window.scrollTo(0, document.body.scrollHeight);
  }

  function utf8Length(text) {
    return new TextEncoder().encode(text).length;
  }

  function thousands(n) {
    return String(n).replace(/\B(?=(\d{3})+(?!\d))/g, ",");
  }

  /** The UTF-8 size of `text` when it is over the limit, else 0. */
  function bytesOverLimit(text) {
    // A UTF-16 unit is at most 3 UTF-8 bytes: short texts need no count.
    if (text.length * 3 <= MAX_MESSAGE_BYTES) {
      return 0;
    }
    var bytes = utf8Length(text);
    return bytes > MAX_MESSAGE_BYTES ? bytes : 0;
  }

  function tooLong(bytes) {
    return (
      "Too long to send: " + thousands(bytes) + " bytes in UTF-8, the limit is " +
      thousands(MAX_MESSAGE_BYTES) + " bytes."
    );
  }

  function updateToggle() {
    // `active` stays true while the client is reconnecting on its own, so the
    // button only says "Connect" after the user disconnected on purpose.
    toggleButton.textContent = socket.active ? "Disconnect" : "Connect";
  }

  function render() {
    cancelAnimationFrame(frameRequest);
    clearTimeout(fallbackTimer);
    frameRequest = fallbackTimer = null;
    if (pending.length === 0) {
      return;
    }
    var fragment = document.createDocumentFragment();
    for (var i = 0; i < pending.length; i++) {
      var item = document.createElement("li");
      item.dir = "auto"; // right-to-left messages align on their own side
      item.textContent = pending[i].text;
      item.dataset.id = pending[i].id;
      fragment.appendChild(item);
    }
    // The offset a reconnect asks from is the last message on screen.
    socket.auth.serverOffset = pending[pending.length - 1].id;
    pending = [];
    messages.insertBefore(fragment, outbox.length ? outbox[0].li : null);
    scrollToEnd();
    updateEarlier();
  }

  socket.on("chat message", function (msg, serverOffset) {
    if (typeof serverOffset !== "number" || serverOffset <= lastQueuedId) {
      return; // already shown (or malformed): never render twice
    }
    lastQueuedId = serverOffset;
    pending.push({ text: String(msg), id: serverOffset });
    if (frameRequest === null) {
      frameRequest = requestAnimationFrame(render);
      // Background tabs get no animation frames; render anyway, less often.
      fallbackTimer = setTimeout(render, 250);
    }
  });

  function mark(li, state, note) {
    li.dataset.state = state;
    li.dataset.note = note;
  }

  /**
   * The row the server sent for an acknowledged own message: the ack comes after the row, so it
   * is the first unmarked row with the same text among those received since the emit.
   */
  function rowOf(entry) {
    var found = null;
    for (var li = messages.lastElementChild; li; li = li.previousElementSibling) {
      if (!li.dataset.id) {
        continue; // an own row not (or never) acknowledged
      }
      if (Number(li.dataset.id) <= entry.after) {
        break;
      }
      if (!li.dataset.state && li.textContent === entry.text) {
        found = li;
      }
    }
    return found;
  }

  function settle(entry, err, reply) {
    render(); // rows received before this answer go on screen first, above the own rows
    outbox.splice(outbox.indexOf(entry), 1);
    if (err) {
      // The client's retries are used up (no ack within ackTimeout, several times).
      console.warn("message not acknowledged:", err.message || err);
      mark(entry.li, "failed", "not sent: " + (err.message || String(err)));
    } else if (reply && reply.error) {
      console.warn("message refused:", reply.error);
      mark(entry.li, "failed", "not sent: " + reply.error);
    } else {
      // The server's row for it came before the ack, so it is on screen now.
      var row = rowOf(entry);
      if (row) {
        entry.li.remove();
        mark(row, "sent", "sent");
      } else {
        mark(entry.li, "sent", "sent");
      }
    }
  }

  function pendingNote() {
    return socket.connected ? "sending\u2026" : "sending when connected\u2026";
  }

  function showStatus(state, text) {
    statusBadge.dataset.state = state;
    statusBadge.textContent = text;
    for (var i = 0; i < outbox.length; i++) {
      outbox[i].li.dataset.note = pendingNote();
    }
  }

  socket.on("connect", function () {
    // Only a first visit is capped: a reconnect needs every message it missed.
    delete socket.auth.historyLimit;
    if (!lengthNotice) {
      hideNotice();
    }
    showStatus("connected", "connected");
  });

  /** The id of the oldest message on screen, or 0. */
  function oldestId() {
    for (var li = messages.firstElementChild; li; li = li.nextElementSibling) {
      if (li.dataset.id) {
        return Number(li.dataset.id);
      }
    }
    return 0;
  }

  function updateEarlier() {
    earlierButton.hidden = !(earlierMayExist && oldestId() > 1);
    earlierButton.disabled = loadingEarlier;
  }

  /** Puts a page of older messages above the oldest on screen, keeping the view where it was. */
  function prepend(page) {
    var before = oldestId();
    var fragment = document.createDocumentFragment();
    for (var i = 0; i < page.length; i++) {
      if (before && page[i].id >= before) {
        continue; // never twice at the seam
      }
      var item = document.createElement("li");
      item.dir = "auto";
      item.textContent = String(page[i].msg);
      item.dataset.id = page[i].id;
      fragment.appendChild(item);
    }
    var height = document.body.scrollHeight;
    messages.insertBefore(fragment, messages.firstChild);
    window.scrollBy(0, document.body.scrollHeight - height);
  }

  function loadEarlier() {
    var before = oldestId();
    if (loadingEarlier || !earlierMayExist || !before || !socket.connected) {
      return;
    }
    loadingEarlier = true;
    updateEarlier();
    socket.emit("history", { before: before, limit: HISTORY_PAGE }, function (err, reply) {
      loadingEarlier = false;
      if (err || !reply || reply.error) {
        showNotice("Could not load earlier messages: " + ((reply && reply.error) || (err && err.message) || "no answer"));
      } else {
        render(); // anything received meanwhile first
        prepend(reply.messages || []);
        earlierMayExist = Boolean(reply.more);
      }
      updateEarlier();
    });
  }

  earlierButton.addEventListener("click", loadEarlier);
  window.addEventListener("scroll", function () {
    if (window.scrollY === 0 && !earlierButton.hidden) {
      loadEarlier();
    }
  });

  socket.on("disconnect", function () {
    if (socket.active) {
      showStatus("reconnecting", "reconnecting\u2026");
    } else {
      showStatus("offline", "offline");
    }
  });

  socket.on("connect_error", function () {
    if (socket.active) {
      showStatus("reconnecting", "reconnecting\u2026");
    }
  });

  input.addEventListener("input", function () {
    var bytes = bytesOverLimit(input.value);
    input.setAttribute("aria-invalid", bytes ? "true" : "false");
    if (bytes) {
      showNotice(tooLong(bytes), true);
      lengthNotice = true;
    } else if (lengthNotice) {
      hideNotice();
    }
  });

  form.addEventListener("submit", function (event) {
    event.preventDefault();
    var text = input.value;
    if (!text) {
      return;
    }
    var bytes = bytesOverLimit(text);
    if (bytes) {
      // Kept in the input, to be shortened.
      input.setAttribute("aria-invalid", "true");
      showNotice(tooLong(bytes), true);
      lengthNotice = true;
      return;
    }
    var clientOffset = pageId + "-" + counter++;
    var item = document.createElement("li");
    item.dir = "auto";
    item.textContent = text;
    mark(item, "pending", pendingNote());
    var entry = { text: text, li: item, after: lastQueuedId };
    outbox.push(entry);
    messages.appendChild(item);
    socket.emit("chat message", text, clientOffset, function (err, reply) {
      settle(entry, err, reply);
    });
    input.value = "";
    input.setAttribute("aria-invalid", "false");
    if (lengthNotice) {
      hideNotice();
    }
    scrollToEnd();
  });

  toggleButton.addEventListener("click", function () {
    if (socket.active) {
      socket.disconnect();
      hideNotice();
      showStatus("offline", "offline");
    } else {
      socket.connect();
      showStatus("reconnecting", "connecting\u2026");
    }
    updateToggle();
  });

  updateToggle();
})();
