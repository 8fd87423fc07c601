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

  // A random id for this page load; every message gets "<pageId>-<n>" as its
  // clientOffset so the server can drop a retried emit it already stored.
  // (socket.id is undefined while offline, so it cannot be used for this.)
  var pageId = randomId();
  var counter = 0;
  var lastRenderedId = 0;
  var noticeTimer = null;

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

  socket.on("chat message", function (msg, serverOffset) {
    if (typeof serverOffset !== "number" || serverOffset <= lastRenderedId) {
      return; // already shown (or malformed): never render twice
    }
    lastRenderedId = serverOffset;
    socket.auth.serverOffset = serverOffset;
    var item = document.createElement("li");
    item.dir = "auto"; // right-to-left messages align on their own side
    item.textContent = String(msg);
    messages.appendChild(item);
    window.scrollTo(0, document.body.scrollHeight);
  });

  socket.on("connect", function () {
    hideNotice();
  });

  socket.on("disconnect", function (reason) {
    if (socket.active) {
      showNotice("Connection lost, reconnecting\u2026", true);
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
    } else {
      socket.connect();
    }
    updateToggle();
  });

  updateToggle();
})();
