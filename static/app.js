// relay chat page: the socket.io tutorial chat (server delivery + client
// delivery steps), talking to the relay server over WebSocket only.
(function () {
  "use strict";

  var MAX_MESSAGE_BYTES = 65535;

  var form = document.getElementById("form");
  var input = document.getElementById("input");
  var messages = document.getElementById("messages");
  var toggleButton = document.getElementById("toggle-btn");
  var notice = document.getElementById("notice");
  var statusBadge = document.getElementById("status");

  // A random id for this page load; every message gets "<pageId>-<n>" as its
  // clientOffset so the server can drop a retried emit it already stored.
  // (socket.id is undefined while offline, so it cannot be used for this.)
  var pageId = randomId();
  var counter = 0;
  var lastQueuedId = 0;
  var noticeTimer = null;
  // Messages received but not yet on screen: a long history arrives as thousands of events, and
  // appending them one by one (a layout and a scroll each) would freeze the page.
  var pending = [];
  var frameRequest = null;
  var fallbackTimer = null;

  var socket = io({
    transports: ["websocket"],
    auth: { serverOffset: 0 },
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
  }

  function hideNotice() {
    clearTimeout(noticeTimer);
    notice.hidden = true;
    notice.textContent = "";
  }

  function utf8Length(text) {
    return new TextEncoder().encode(text).length;
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
      fragment.appendChild(item);
    }
    // The offset a reconnect asks from is the last message on screen.
    socket.auth.serverOffset = pending[pending.length - 1].id;
    pending = [];
    messages.appendChild(fragment);
    window.scrollTo(0, document.body.scrollHeight);
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

  function showStatus(state, text) {
    statusBadge.dataset.state = state;
    statusBadge.textContent = text;
  }

  socket.on("connect", function () {
    hideNotice();
    showStatus("connected", "connected");
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

  form.addEventListener("submit", function (event) {
    event.preventDefault();
    var text = input.value;
    if (!text) {
      return;
    }
    if (utf8Length(text) > MAX_MESSAGE_BYTES) {
      showNotice("Message too long (" + MAX_MESSAGE_BYTES + " bytes at most).");
      return;
    }
    var clientOffset = pageId + "-" + counter++;
    socket.emit("chat message", text, clientOffset, function (err, reply) {
      if (err) {
        console.warn("message not acknowledged:", err.message || err);
        showNotice("Message not delivered: " + (err.message || err));
      } else if (reply && reply.error) {
        console.warn("message refused:", reply.error);
        showNotice("Message refused: " + reply.error);
      }
    });
    input.value = "";
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
