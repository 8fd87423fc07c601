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
// refuses one (its error text) or the client gives up after its retries; a
// message not sent keeps its text, and a click on it sends it again (with the
// same clientOffset, so it is never stored twice). While an own message waits
// for its ack for more than STALL_MS the badge says the server is not answering.
(function () {
  "use strict";

  // The server's MAX_MESSAGE_BYTES (UTF-8 bytes), as it wrote it into the page.
  var MAX_MESSAGE_BYTES = (function () {
    var meta = document.querySelector('meta[name="relay-max-message-bytes"]');
    var n = meta ? parseInt(meta.content, 10) : NaN;
    return n > 0 ? n : 65535;
  })();
  // How long an own message may wait for its ack before the page says so.
  var STALL_MS = 3000;
  // Messages a first visit shows, and each "load earlier" adds.
  var HISTORY_PAGE = 100;

  var form = document.getElementById("form");
  var input = document.getElementById("input");
  var messages = document.getElementById("messages");
  var toggleButton = document.getElementById("toggle-btn");
  var notice = document.getElementById("notice");
  var statusBadge = document.getElementById("status");
  var earlierButton = document.getElementById("earlier");
  var empty = document.getElementById("empty");
  var stallTimer = null;
  var refused = false;
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

  /** How many characters (code points) of `text` are past the limit: what to cut to send it. */
  function charactersOver(text) {
    var chars = Array.from(text);
    var bytes = 0;
    for (var i = 0; i < chars.length; i++) {
      var c = chars[i].codePointAt(0);
      bytes += c < 0x80 ? 1 : c < 0x800 ? 2 : c < 0x10000 ? 3 : 4;
      if (bytes > MAX_MESSAGE_BYTES) {
        return chars.length - i;
      }
    }
    return 0;
  }

  function tooLong(text) {
    var over = charactersOver(text);
    return (
      "Too long to send: " + thousands(over) + (over === 1 ? " character" : " characters") +
      " over the limit (" + thousands(MAX_MESSAGE_BYTES) + " bytes in UTF-8; this is " +
      thousands(utf8Length(text)) + ")."
    );
  }

  /** The empty state shows once connected with no message on screen. */
  function updateEmpty() {
    empty.hidden = !(socket.connected && messages.children.length === 0 && pending.length === 0);
  }

  /** Watches the oldest unanswered own message: past STALL_MS while connected, says so. */
  function watchStall() {
    clearTimeout(stallTimer);
    stallTimer = null;
    if (outbox.length === 0) {
      if (statusBadge.dataset.state === "stalled") {
        showStatus("connected", "connected");
        hideNotice();
      }
      return;
    }
    var waited = Date.now() - outbox[0].since;
    if (waited >= STALL_MS) {
      if (socket.connected && statusBadge.dataset.state !== "stalled") {
        showStatus("stalled", "server not answering");
        showNotice("The server is not answering. Your messages are kept and go out when it is back.", true);
      }
      stallTimer = setTimeout(watchStall, 1000);
    } else {
      stallTimer = setTimeout(watchStall, STALL_MS - waited);
    }
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
    updateEmpty();
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
    watchStall();
    if (err) {
      // The client's retries are used up (no ack within ackTimeout, several times): the text
      // stays, and a click sends it again with the same clientOffset.
      console.warn("message not acknowledged:", err.message || err);
      mark(entry.li, "failed", "not sent: " + (err.message || String(err)) + " \u2014 click to retry");
      entry.li.title = "Send again";
      entry.li.addEventListener("click", function retry() {
        entry.li.removeEventListener("click", retry);
        entry.li.removeAttribute("title");
        messages.appendChild(entry.li); // own rows waiting for an ack stay last
        send(entry.text, entry.clientOffset, entry.li);
      });
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
    refused = false;
    if (!lengthNotice) {
      hideNotice();
    }
    showStatus("connected", "connected");
    // A replay arrives within moments: say "no messages yet" only if none came.
    setTimeout(updateEmpty, 500);
    watchStall();
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
    if (refused) {
      return; // a refused attempt's engine closes too: the refusal is what to show
    }
    if (socket.active) {
      showStatus("reconnecting", "reconnecting\u2026");
    } else {
      showStatus("offline", "offline");
    }
  });

  socket.on("connect_error", function (err) {
    if (refused) {
      return; // said already; the client keeps trying, and a success clears it
    }
    // The server answered, and said no (its origin check: 403): not an outage, and waiting
    // will not help.
    var status = err && err.description;
    if (status === 403 || status === 400) {
      refused = true;
      console.warn("connection refused by the server:", status);
      showStatus("refused", "refused by the server");
      showNotice(
        "The server refused this page's connection (HTTP " + status + "). " +
          (status === 403
            ? "It does not accept pages from this address: its ALLOWED_ORIGINS, or a proxy's Host header."
            : "Reload the page."),
        true
      );
      return;
    }
    if (socket.active) {
      showStatus("reconnecting", "reconnecting\u2026");
    }
  });

  input.addEventListener("input", function () {
    var bytes = bytesOverLimit(input.value);
    input.setAttribute("aria-invalid", bytes ? "true" : "false");
    if (bytes) {
      showNotice(tooLong(input.value), true);
      lengthNotice = true;
    } else if (lengthNotice) {
      hideNotice();
    }
  });

  /** Emits an own message (again, for a retry: same text, same clientOffset, same row). */
  function send(text, clientOffset, item) {
    mark(item, "pending", pendingNote());
    var entry = { text: text, li: item, after: lastQueuedId, clientOffset: clientOffset, since: Date.now() };
    outbox.push(entry);
    socket.emit("chat message", text, clientOffset, function (err, reply) {
      settle(entry, err, reply);
    });
    watchStall();
  }

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
      showNotice(tooLong(text), true);
      lengthNotice = true;
      return;
    }
    var clientOffset = pageId + "-" + counter++;
    var item = document.createElement("li");
    item.dir = "auto";
    item.textContent = text;
    messages.appendChild(item);
    updateEmpty();
    send(text, clientOffset, item);
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
