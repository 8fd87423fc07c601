// relay chat page: the socket.io tutorial chat (server delivery + client
// delivery steps), with the client's default transports (HTTP long-polling
// first, then WebSocket where the network allows it), in rooms.
//
// Rooms: a room is a Socket.IO namespace. The URL's hash names the room shown
// (`/#general` is room general, namespace `/general`; no hash is the main room
// `/`, the tutorial's chat); `hashchange` and the room strip switch rooms, and a
// hash that is no room name says so instead of connecting. Every room opened in
// this page's life keeps its socket (the stock client multiplexes them over one
// connection) and its own list, history paging, offset and own messages; a
// message that arrives in a room not shown counts as unread on that room in the
// strip; a room not opened in this page shows a dot when the list says it holds
// messages newer than this browser last saw there (localStorage relay-seen). The
// strip lists the rooms that hold messages (`GET /rooms`, refreshed on
// connect and every ROOMS_REFRESH_MS) and the rooms opened here; "+" opens a new
// one by name.
//
// A first visit to a room shows the newest HISTORY_PAGE messages; "Load earlier
// messages" (or scrolling to the top) pages back through the rest, in order, with
// no duplicate at the seam, while live messages keep arriving below. A reconnect
// asks for everything after the last message on screen (and the stock client's
// connection-state recovery, which relay keeps across restarts, does the same).
//
// Your own messages show at once, marked: "sending…" (pending) until the
// server acknowledges them, then "sent"; "not sent: <reason>" when the server
// refuses one (its error text) or the client gives up after its retries; a
// message not sent keeps its text, and a click on it sends it again (with the
// same clientOffset, so it is never stored twice). While an own message waits
// for its ack for more than STALL_MS the badge says the server is not answering.
// Until its ack (or the server's refusal) an own message is also kept for the tab
// (sessionStorage relay-outbox): a reload, or a tab the browser restores, sends
// it again with its clientOffset, so typing offline and reloading loses nothing.
//
// People: every room's socket asks for message meta (`auth.meta: true`, protocol.md "Identity
// (tokens and guests) and message meta"), and each row shows its author's name ("guest" when it has
// none) and its time (HH:MM; the full date in the row's title). Both are data attributes drawn by
// the stylesheet (data-name, data-time), so a row's text stays the message alone. "Your name" in the
// top bar is a guest's name (`auth.name`), kept in localStorage (relay-name); changing it
// reconnects every room with it, and a name the server refuses says why. Own messages are marked
// (data-own), and stay marked after a reload: the ids of the last OWN_KEEP acknowledged ones are
// kept in localStorage (relay-own).
//
// Reading back: a live message scrolls the page to it only when the reader is at the end (within
// END_SLACK_PX); scrolled up, the page stays where it is and a "N new messages" button appears,
// until a click on it or a scroll to the end.
//
// Moderation: a message a moderator deleted ("chat deleted", id) is taken off the list.
//
// Presence: every room's socket also asks for presence (`auth.presence: true`, protocol.md
// "Presence and typing"). The strip's end shows how many people are in the room shown; a click
// lists them (at most the 200 the server lists). While the message input is edited the page sends
// "typing" (at most every TYPING_EVERY_MS, volatile: never queued while offline), and the line
// above the input says who else is typing, for TYPING_SHOW_MS after each of their "typing" events.
//
// Tokens: a page opened as `/?token=<JWT>` connects with it (`auth.token`), keeps it for the tab
// (sessionStorage) and takes it off the address bar. When it expires the
// server says "token expired" and ends the rooms' sockets; the page says so and waits for a new one.
// A host page (an iframe's parent, a webview) hands one in with
//
//     window.relay.setToken(newToken)   // -> Promise of [{room, exp} | {room, error}]
//
// which is sent in-band to every connected room ("refresh token": no reconnect, nothing missed),
// and used to reconnect the rooms that were ended or refused for their token (or that connected
// as guests). A minute before the token expires the page asks for one: the event
// "relay:token-expiring" on its window, and, embedded, a message {type: "relay:token-expiring",
// exp} to its host, which may answer with a message {type: "relay:set-token", token}.
(function () {
  "use strict";

  // The server's MAX_MESSAGE_BYTES (UTF-8 bytes), as it wrote it into the page.
  var MAX_MESSAGE_BYTES = (function () {
    var meta = document.querySelector('meta[name="relay-max-message-bytes"]');
    var n = meta ? parseInt(meta.content, 10) : NaN;
    return n > 0 ? n : 65535;
  })();
  // How near the end (px) the reader must be for live messages to keep the page at the end.
  var END_SLACK_PX = 120;
  // How long an own message may wait for its ack before the page says so.
  var STALL_MS = 3000;
  // Messages a first visit shows, and each "load earlier" adds.
  var HISTORY_PAGE = 100;
  // Rooms kept connected besides the one shown (the server takes 64 per connection): past it,
  // the one shown longest ago, with nothing of its own waiting, is disconnected (and leaves that
  // room's presence) until it is shown again, when it asks for what it missed.
  var MAX_OPEN_ROOMS = 12;
  // A room's name, as the server takes it (protocol.md, "Rooms").
  var ROOM_NAME = /^[a-z0-9][a-z0-9_-]{0,47}$/;
  var ROOM_RULE = "A room name is 1\u201348 characters of a\u2013z, 0\u20139, _ and -, starting with a letter or digit.";
  // How often the room strip asks the server which rooms hold messages.
  var ROOMS_REFRESH_MS = 30000;
  // How long before its token expires the page asks its host for a new one.
  var TOKEN_ASK_BEFORE_MS = 60000;
  // How often this page says its user is typing, and how long another's typing stays shown.
  var TYPING_EVERY_MS = 2000;
  var TYPING_SHOW_MS = 3000;
  // Where the guest name and the ids of own messages are kept, and how many ids are kept.
  var NAME_KEY = "relay-name";
  var OWN_KEY = "relay-own";
  var OWN_KEEP = 500;
  // Where the last id seen of each room is kept (a room not opened in this page whose list entry
  // (`GET /rooms`) is newer shows a dot in the strip).
  var SEEN_KEY = "relay-seen";
  // Where this tab keeps its own messages not yet acknowledged (sessionStorage: a reload or a
  // restored tab sends them again, with their clientOffsets; another tab does not), and how many.
  var OUTBOX_KEY = "relay-outbox";
  var OUTBOX_KEEP = 200;

  var form = document.getElementById("form");
  var input = document.getElementById("input");
  var sendButton = form.querySelector('button[type="submit"]');
  var toggleButton = document.getElementById("toggle-btn");
  var notice = document.getElementById("notice");
  var statusBadge = document.getElementById("status");
  var earlierButton = document.getElementById("earlier");
  var empty = document.getElementById("empty");
  var title = document.getElementById("title");
  var roomList = document.getElementById("room-list");
  var roomsBar = document.getElementById("rooms");
  var newRoomButton = document.getElementById("new-room-btn");
  var newRoomForm = document.getElementById("new-room");
  var newRoomInput = document.getElementById("new-room-name");
  var newRoomCancel = document.getElementById("new-room-cancel");
  var nameInput = document.getElementById("name");
  var onlineButton = document.getElementById("online");
  var onlineCount = onlineButton.querySelector(".count");
  var peoplePanel = document.getElementById("people");
  var peopleList = document.getElementById("people-list");
  var peopleMore = document.getElementById("people-more");
  var typingLine = document.getElementById("typing");
  var latestButton = document.getElementById("latest");
  // Messages that arrived below while the reader was scrolled up.
  var unseenBelow = 0;
  var noticeTimer = null;
  var lengthNotice = false;

  // A random id for this page load; every message gets "<pageId>-<n>" as its
  // clientOffset so the server can drop a retried emit it already stored.
  // (socket.id is undefined while offline, so it cannot be used for this.)
  var pageId = randomId();
  var counter = 0;

  // Every room opened in this page's life, by name ("/" for the main room), and the one shown
  // (null while the hash names no room).
  var rooms = Object.create(null);
  var current = null;
  // Rooms the server says hold messages: name -> the highest message id in it.
  var listed = Object.create(null);
  var roomsListed = true; // false once the server says it has no room list (an older relay)
  var roomsFetching = false;
  var roomsFetchedAt = 0;
  // The list shown while the hash names no room: nothing to show, nothing to send to.
  var noRoomList = newList();

  // The guest name sent with every CONNECT ("" for none), and the token (null for none).
  var myName = (stored(NAME_KEY) || "").trim();
  // The token: read from `?token=` once, then kept for this tab (sessionStorage relay-token) and
  // taken off the address bar, so that a copied room link never carries it and a reload after
  // an in-band refresh (window.relay.setToken) uses the new one.
  var TOKEN_KEY = "relay-token";
  var token = (function () {
    var params = new URLSearchParams(location.search);
    var given = params.get("token");
    if (given) {
      // (Storage refused, a sandboxed frame: the token lives as long as the page.)
      store(TOKEN_KEY, given, true);
      params.delete("token");
      var rest = params.toString();
      history.replaceState(history.state, "", location.pathname + (rest ? "?" + rest : "") + location.hash);
      return given;
    }
    return stored(TOKEN_KEY, true) || null;
  })();
  // The ids of own acknowledged messages (ids are one sequence across rooms): id -> true.
  var ownIds = Object.create(null);
  loadOwnIds().forEach(function (id) {
    ownIds[id] = true;
  });
  // Room name -> the last id this browser saw of it (shown, or listed when first listed).
  var seen = (function () {
    try {
      var map = JSON.parse(stored(SEEN_KEY) || "{}");
      return map && typeof map === "object" && !Array.isArray(map) ? map : {};
    } catch (e) {
      return {};
    }
  })();
  var seenDirty = false;
  // Whether a room list has come yet (rooms unknown to the browser before it are not news).
  var roomsListedOnce = false;

  /** Room `name` was seen up to `id` (kept in memory; saved by saveSeen). */
  function sawUpTo(name, id) {
    if (typeof id === "number" && !(seen[name] >= id)) {
      seen[name] = id;
      seenDirty = true;
    }
  }

  function saveSeen() {
    if (seenDirty) {
      seenDirty = false;
      store(SEEN_KEY, JSON.stringify(seen));
    }
  }
  window.addEventListener("pagehide", saveSeen);
  document.addEventListener("visibilitychange", saveSeen);

  /**
   * What the browser keeps under `key`: across tabs and visits (localStorage), or with `tab` for
   * this tab alone (sessionStorage). null where storage is off (a private mode, a sandboxed frame:
   * even reading the property throws there).
   */
  function stored(key, tab) {
    try {
      return (tab ? window.sessionStorage : window.localStorage).getItem(key);
    } catch (e) {
      return null; // storage off: nothing is kept
    }
  }

  /** Keeps `value` under `key` (null: forgets it), where `stored(key, tab)` reads it. */
  function store(key, value, tab) {
    try {
      var area = tab ? window.sessionStorage : window.localStorage;
      if (value === null) {
        area.removeItem(key);
      } else {
        area.setItem(key, value);
      }
    } catch (e) {
      // storage off or full: kept for this page's life only
    }
  }

  /** This tab's unacknowledged own messages: [{room, text, clientOffset}], oldest first. */
  function loadOutbox() {
    try {
      var kept = JSON.parse(stored(OUTBOX_KEY, true) || "[]");
      return Array.isArray(kept) ? kept.filter(function (m) {
        return m && typeof m.room === "string" && typeof m.text === "string" && typeof m.clientOffset === "string";
      }) : [];
    } catch (e) {
      return []; // storage off, or not ours
    }
  }

  function saveOutbox(kept) {
    // (Storage off or full: a reload loses what was not acknowledged, as without it.)
    store(OUTBOX_KEY, kept.length ? JSON.stringify(kept.slice(-OUTBOX_KEEP)) : null, true);
  }

  /** Keeps an own message until it is acknowledged or refused (`keep` false: forget it). */
  function keepUnacked(room, text, clientOffset, keep) {
    var kept = loadOutbox().filter(function (m) {
      return m.clientOffset !== clientOffset;
    });
    if (keep) {
      kept.push({ room: room, text: text, clientOffset: clientOffset });
    }
    saveOutbox(kept);
  }

  function loadOwnIds() {
    try {
      var ids = JSON.parse(stored(OWN_KEY) || "[]");
      return Array.isArray(ids) ? ids.filter(function (id) {
        return typeof id === "number" && id > 0;
      }) : [];
    } catch (e) {
      return [];
    }
  }

  /** Records `id` as an own message, here and in storage (merged with other tabs', the newest kept). */
  function addOwnId(id) {
    id = Number(id);
    if (!(id > 0)) {
      return;
    }
    ownIds[id] = true;
    var ids = loadOwnIds().filter(function (x) {
      return x !== id;
    });
    ids.push(id);
    store(OWN_KEY, JSON.stringify(ids.slice(-OWN_KEEP)));
  }

  function pad2(n) {
    return (n < 10 ? "0" : "") + n;
  }

  /** Puts a message's author and time on its row, as attributes (the stylesheet draws them). */
  function decorate(li, meta) {
    if (ownIds[li.dataset.id]) {
      li.dataset.own = "";
    }
    if (!meta || typeof meta !== "object") {
      return;
    }
    var name = typeof meta.name === "string" && meta.name ? meta.name : "";
    if (!name && !meta.guest && typeof meta.user === "string") {
      name = meta.user; // a verified user without a display name
    }
    li.dataset.name = name || "guest";
    if (meta.guest) {
      li.dataset.guest = "";
    }
    if (typeof meta.at === "number" && meta.at > 0) {
      var at = new Date(meta.at);
      li.dataset.at = String(meta.at);
      var time = pad2(at.getHours()) + ":" + pad2(at.getMinutes());
      var today = new Date();
      if (at.toDateString() !== today.toDateString()) {
        // Not today: the date too (a phone shows no tooltip).
        var day = { month: "short", day: "numeric" };
        if (at.getFullYear() !== today.getFullYear()) {
          day.year = "numeric";
        }
        time = at.toLocaleDateString(undefined, day) + " " + time;
      }
      li.dataset.time = time;
      li.title = at.toLocaleString();
    }
  }

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
    var follow = atEnd();
    notice.hidden = false;
    if (!sticky) {
      noticeTimer = setTimeout(hideNotice, 5000);
    }
    if (follow) {
      scrollToEnd();
    }
  }

  function hideNotice() {
    clearTimeout(noticeTimer);
    notice.hidden = true;
    notice.textContent = "";
    lengthNotice = false;
  }

  function scrollToEnd() {
    window.scrollTo(0, document.body.scrollHeight);
    seenBelow();
  }

  /** Whether the reader is within `slack` px (default END_SLACK_PX) of the end of the page. */
  function atEnd(slack) {
    var within = slack === undefined ? END_SLACK_PX : slack;
    return window.innerHeight + window.scrollY >= document.body.scrollHeight - within;
  }

  /** `n` more messages arrived below a reader scrolled up: the button says how many. */
  function unseen(n) {
    unseenBelow += n;
    latestButton.textContent = unseenBelow === 1 ? "1 new message \u2193" : unseenBelow + " new messages \u2193";
    latestButton.hidden = false;
  }

  function seenBelow() {
    unseenBelow = 0;
    latestButton.hidden = true;
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

  function mark(li, state, note) {
    li.dataset.state = state;
    li.dataset.note = note;
  }

  function newList() {
    var list = document.createElement("ul");
    list.setAttribute("aria-live", "polite");
    list.setAttribute("aria-label", "Messages");
    return list;
  }

  /** How a room is named on the page: the main room is "Main" (no room name has capitals). */
  function label(name) {
    return name === "/" ? "Main" : "#" + name;
  }

  /** The URL that shows room `name`: the page without a hash for "/", else `#name`. */
  function hrefOf(name) {
    return name === "/" ? location.pathname + location.search : "#" + name;
  }

  /** The room a hash (without its "#") names, or null when it names none. */
  function roomOfHash(hash) {
    var name;
    try {
      name = decodeURIComponent(hash);
    } catch (e) {
      return null;
    }
    if (name === "" || name === "/") {
      return "/";
    }
    if (name.charAt(0) === "/") {
      name = name.slice(1); // "#/general", the namespace's spelling
    }
    return ROOM_NAME.test(name) ? name : null;
  }

  /**
   * One room: its socket (namespace "/" or "/<name>"), its list of messages (on screen while it is
   * the room shown, kept off screen otherwise), its own messages waiting for an ack, its history
   * paging and its connection's state. Everything it draws outside its list (the badge, the
   * notice, the "earlier" button, the empty state) it draws only while shown.
   */
  function Room(name) {
    var room = {
      name: name,
      list: newList(),
      shown: false,
      unread: 0,
      state: "connecting",
      stateText: "connecting\u2026",
      shownAt: 0,
      parked: false, // disconnected by the page while not shown (MAX_OPEN_ROOMS)
      sticky: "", // a notice that stays until its cause goes (shown again when the room is)
      scroll: null, // where the reader was while another room is shown (null: at the end)
    };
    var list = room.list;
    var stallTimer = null;
    // When the server last answered here (an ack, or a message): the stock client sends one own
    // message at a time, so on a slow link a queue of them is not an outage.
    var heardAt = 0;
    var refused = false;
    // Why the server refused this room's CONNECT, when it was for who we are: "name" or "token".
    var refusedFor = null;
    var tokenExpired = false;
    var connectedWithToken = false;
    // Whether older messages may remain, whether that was asked (ids are one sequence across
    // rooms, so "the oldest id is above 1" does not say), and whether a page is on its way.
    var earlierMayExist = true;
    var earlierChecked = false;
    var loadingEarlier = false;
    var lastQueuedId = 0;
    var rows = 0; // messages from the server in the list
    // Messages received but not yet on screen: a long history arrives as thousands of events, and
    // appending them one by one (a layout and a scroll each) would freeze the page.
    var pending = [];
    var frameRequest = null;
    var fallbackTimer = null;
    // Own messages emitted and not yet acknowledged, oldest first: {text, li, after}. Their rows
    // stay at the end of the list; messages from the server go above them.
    var outbox = [];
    // Who is here (id -> person, as the server listed them), how many (null: not known while
    // offline), who else is typing (id -> {name, until}) and when this page last said it types.
    room.people = Object.create(null);
    room.online = null;
    room.typers = Object.create(null);
    var typedAt = 0;

    var options = {
      // historyLimit: a first visit gets the newest page, not the whole history.
      // meta: every message comes with its author and time.
      // presence: who is here, and who types.
      auth: { serverOffset: 0, historyLimit: HISTORY_PAGE, meta: true, presence: true },
      ackTimeout: 10000,
      retries: 3,
    };
    // Same origin: the stock client multiplexes every room over one connection.
    if (myName) {
      options.auth.name = myName;
    }
    if (token) {
      options.auth.token = token;
    }
    var socket = name === "/" ? io(options) : io("/" + name, options);
    room.socket = socket;

    function say(text, sticky) {
      if (sticky) {
        room.sticky = text;
      }
      if (room.shown) {
        showNotice(text, sticky);
      }
    }

    function unsay() {
      room.sticky = "";
      if (room.shown && !lengthNotice) {
        hideNotice();
      }
    }

    function pendingNote() {
      return socket.connected ? "sending\u2026" : "sending when connected\u2026";
    }

    function setStatus(state, text) {
      room.state = state;
      room.stateText = text;
      if (room.shown) {
        statusBadge.dataset.state = state;
        statusBadge.textContent = text;
      }
      for (var i = 0; i < outbox.length; i++) {
        outbox[i].li.dataset.note = pendingNote();
      }
    }

    /** The empty state shows once connected with no message on screen. */
    function updateEmpty() {
      if (room.shown) {
        empty.hidden = !(socket.connected && list.children.length === 0 && pending.length === 0);
      }
    }

    /** Watches the oldest unanswered own message: past STALL_MS while connected, says so. */
    function watchStall() {
      clearTimeout(stallTimer);
      stallTimer = null;
      if (outbox.length === 0) {
        if (room.state === "stalled") {
          setStatus("connected", "connected");
          unsay();
        }
        return;
      }
      var waited = Date.now() - Math.max(outbox[0].since, heardAt);
      if (waited >= STALL_MS) {
        if (socket.connected && room.state !== "stalled") {
          setStatus("stalled", "server not answering");
          say("The server is not answering. Your messages are kept and go out when it is back.", true);
        }
        stallTimer = setTimeout(watchStall, 1000);
      } else {
        stallTimer = setTimeout(watchStall, STALL_MS - waited);
      }
    }

    function render() {
      cancelAnimationFrame(frameRequest);
      clearTimeout(fallbackTimer);
      frameRequest = fallbackTimer = null;
      if (pending.length === 0) {
        return;
      }
      var fragment = document.createDocumentFragment();
      var unread = 0;
      var follow = atEnd();
      for (var i = 0; i < pending.length; i++) {
        var item = document.createElement("li");
        item.dir = "auto"; // right-to-left messages align on their own side
        item.textContent = pending[i].text;
        item.dataset.id = pending[i].id;
        decorate(item, pending[i].meta);
        fragment.appendChild(item);
        if (!room.shown && !isOwn(pending[i].text)) {
          unread++;
        }
      }
      // The offset a reconnect asks from is the last message on screen.
      socket.auth.serverOffset = pending[pending.length - 1].id;
      if (room.shown) {
        sawUpTo(name, socket.auth.serverOffset);
      }
      rows += pending.length;
      var added = pending.length;
      pending = [];
      list.insertBefore(fragment, outbox.length ? outbox[0].li : null);
      if (room.shown && follow) {
        scrollToEnd();
      } else if (room.shown) {
        unseen(added);
      }
      if (unread) {
        room.unread += unread;
        renderRoomList();
      }
      updateEarlier();
      updateEmpty();
    }

    /** Whether `text` is an own message on its way (its row coming back is not news). */
    function isOwn(text) {
      for (var i = 0; i < outbox.length; i++) {
        if (outbox[i].text === text) {
          return true;
        }
      }
      return false;
    }

    socket.on("chat message", function (msg, serverOffset, meta) {
      if (typeof serverOffset !== "number" || serverOffset <= lastQueuedId) {
        return; // already shown (or malformed): never render twice
      }
      lastQueuedId = serverOffset;
      heardAt = Date.now();
      pending.push({ text: String(msg), id: serverOffset, meta: meta });
      // A verified user's message ends their "is typing" (a guest's typing id is not in meta).
      if (meta && typeof meta.user === "string" && room.typers["u:" + meta.user]) {
        delete room.typers["u:" + meta.user];
        if (room.shown) {
          renderTyping();
        }
      }
      if (frameRequest === null) {
        frameRequest = requestAnimationFrame(render);
        // Background tabs get no animation frames; render anyway, less often.
        fallbackTimer = setTimeout(render, 250);
      }
    });

    /**
     * The row the server sent for an acknowledged own message: the ack comes after the row. The
     * ack names the row's id (this page asks for meta); from a server that does not say, it is
     * the first unmarked row with the same text among those received since the emit.
     */
    function rowOf(entry, reply) {
      if (reply && typeof reply.id === "number") {
        return list.querySelector('li[data-id="' + reply.id + '"]');
      }
      var found = null;
      for (var li = list.lastElementChild; li; li = li.previousElementSibling) {
        if (!li.dataset.id) {
          continue; // an own row not (or never) acknowledged
        }
        if (Number(li.dataset.id) <= entry.after) {
          break;
        }
        if (!li.dataset.state && li.textContent === entry.text) {
          found = li;
          if (entry.restored) {
            // Sent before a reload: the replay may hold older rows with its text, and the
            // row is the newest of them (stored now, or just before the reload).
            break;
          }
        }
      }
      return found;
    }

    function settle(entry, err, reply) {
      render(); // rows received before this answer go on screen first, above the own rows
      if (!err) {
        heardAt = Date.now();
      }
      outbox.splice(outbox.indexOf(entry), 1);
      watchStall();
      // Given up by the client (no ack after its retries): kept, so a reload tries it again.
      // Acknowledged, or refused by the server: done with.
      if (!err) {
        keepUnacked(name, entry.text, entry.clientOffset, false);
      }
      if (err) {
        // The client's retries are used up (no ack within ackTimeout, several times): the text
        // stays, and a click sends it again with the same clientOffset.
        console.warn("message not acknowledged:", err.message || err);
        mark(entry.li, "failed", "not sent: " + (err.message || String(err)) + " \u2014 click to retry");
        entry.li.title = "Send again";
        entry.li.addEventListener("click", function retry() {
          entry.li.removeEventListener("click", retry);
          entry.li.removeAttribute("title");
          list.appendChild(entry.li); // own rows waiting for an ack stay last
          send(entry.text, entry.clientOffset, entry.li);
        });
      } else if (reply && reply.error) {
        // Also a new room the server will not make (its room cap): the server's reason.
        console.warn("message refused:", reply.error);
        mark(entry.li, "failed", "not sent: " + reply.error);
      } else {
        // The server's row for it came before the ack, so it is on screen now.
        var row = rowOf(entry, reply);
        if (row) {
          entry.li.remove();
          mark(row, "sent", "sent");
          row.dataset.own = "";
          addOwnId(row.dataset.id);
        } else {
          mark(entry.li, "sent", "sent");
        }
      }
    }

    socket.on("connect", function () {
      // Only a first visit is capped: a reconnect needs every message it missed.
      delete socket.auth.historyLimit;
      refused = false;
      refusedFor = null;
      tokenExpired = false;
      connectedWithToken = Boolean(socket.auth.token);
      nameInput.removeAttribute("aria-invalid");
      room.sticky = "";
      if (room.shown && !lengthNotice) {
        hideNotice();
      }
      setStatus("connected", "connected");
      // A replay arrives within moments: say "no messages yet" only if none came.
      setTimeout(updateEmpty, 500);
      watchStall();
      updateEarlier();
      refreshRooms();
    });

    /** The id of the oldest message on screen, or 0. */
    function oldestId() {
      for (var li = list.firstElementChild; li; li = li.nextElementSibling) {
        if (li.dataset.id) {
          return Number(li.dataset.id);
        }
      }
      return 0;
    }

    function updateEarlier() {
      if (!room.shown) {
        return;
      }
      var oldest = oldestId();
      // Fewer rows than a first visit gets: maybe the whole room. Ask once for one older message
      // (shown nowhere) before offering the button.
      if (earlierMayExist && oldest > 1 && !earlierChecked && rows < HISTORY_PAGE && !loadingEarlier && socket.connected) {
        loadingEarlier = true;
        socket.emit("history", { before: oldest, limit: 1 }, function (err, reply) {
          loadingEarlier = false;
          earlierChecked = true; // an error says nothing: offer the button
          if (!err && reply && !reply.error && reply.messages && reply.messages.length === 0) {
            earlierMayExist = false;
          }
          updateEarlier();
        });
      }
      earlierButton.hidden = !(earlierMayExist && oldest > 1 && (earlierChecked || rows >= HISTORY_PAGE));
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
        decorate(item, "at" in page[i] || "name" in page[i] ? page[i] : null);
        fragment.appendChild(item);
        rows++;
      }
      var height = document.body.scrollHeight;
      list.insertBefore(fragment, list.firstChild);
      if (room.shown) {
        window.scrollBy(0, document.body.scrollHeight - height);
      }
    }

    room.loadEarlier = function () {
      var before = oldestId();
      if (loadingEarlier || !earlierMayExist || !before || !socket.connected) {
        return;
      }
      loadingEarlier = true;
      updateEarlier();
      socket.emit("history", { before: before, limit: HISTORY_PAGE }, function (err, reply) {
        loadingEarlier = false;
        if (err || !reply || reply.error) {
          say("Could not load earlier messages: " + ((reply && reply.error) || (err && err.message) || "no answer"));
        } else {
          render(); // anything received meanwhile first
          prepend(reply.messages || []);
          earlierMayExist = Boolean(reply.more);
          earlierChecked = true;
        }
        updateEarlier();
      });
    };

    socket.on("disconnect", function (reason) {
      // Who is here is not known until connected again (the server then sends it whole).
      room.online = null;
      room.people = Object.create(null);
      room.typers = Object.create(null);
      if (room.shown) {
        renderPeople();
        renderTyping();
      }
      if (refused) {
        return; // a refused attempt's engine closes too: the refusal is what to show
      }
      if (tokenExpired) {
        setStatus("refused", "token expired"); // the server ended it: a new token reconnects it
        updateToggle();
        return;
      }
      if (reason === "io server disconnect") {
        // The server ended this room's socket (a moderator's ban or disconnect): the client does
        // not reconnect by itself. Connect asks again, and a ban then says so.
        setStatus("refused", "ended by the server");
        say("The server ended your connection to " + label(name) + ". Press Connect to try again.", true);
        updateToggle();
        return;
      }
      if (socket.active) {
        setStatus("reconnecting", "reconnecting\u2026");
      } else {
        setStatus("offline", "offline");
      }
    });

    socket.on("connect_error", function (err) {
      var message = (err && err.message) || "refused";
      if (!socket.active && /^invalid name\b/.test(message)) {
        refusedFor = "name";
        setStatus("refused", "name refused");
        nameInput.setAttribute("aria-invalid", "true");
        say("The server refused your name (" + message + "). Change it in \u201cYour name\u201d.", true);
        updateToggle();
        return;
      }
      if (!socket.active && /^(token required|invalid token\b)/.test(message)) {
        refusedFor = "token";
        setStatus("refused", token ? "token refused" : "sign-in required");
        say(token
          ? "The server refused this page's token (" + message + ")."
          : "This server lets only signed-in users in (" + message + "): open this page with ?token=<your token>.", true);
        updateToggle();
        return;
      }
      if (!socket.active && message === "banned") {
        setStatus("refused", "banned");
        say("You are banned from " + label(name) + ".", true);
        updateToggle();
        return;
      }
      if (!socket.active) {
        // The server answered this room's CONNECT with an error ("Invalid namespace": a name or a
        // room it does not take). Final for this room; the other rooms are not concerned.
        console.warn("room refused by the server:", name, err && err.message);
        setStatus("refused", "room refused");
        say("The server refused " + label(name) + " (" + ((err && err.message) || "refused") + ").", true);
        updateToggle();
        return;
      }
      if (refused) {
        return; // said already; the client keeps trying, and a success clears it
      }
      // The server answered, and said no (its origin check: 403): not an outage, and waiting
      // will not help.
      var status = err && err.description;
      if (status === 403 || status === 400) {
        refused = true;
        console.warn("connection refused by the server:", status);
        setStatus("refused", "refused by the server");
        say(
          "The server refused this page's connection (HTTP " + status + "). " +
            (status === 403
              ? "It does not accept pages from this address: its ALLOWED_ORIGINS, or a proxy's Host header."
              : "Reload the page."),
          true
        );
        return;
      }
      if (socket.active) {
        setStatus("reconnecting", "reconnecting\u2026");
      }
    });

    /** Emits an own message (again, for a retry: same text, same clientOffset, same row). */
    function send(text, clientOffset, item, restored) {
      mark(item, "pending", pendingNote());
      var entry = { text: text, li: item, after: lastQueuedId, clientOffset: clientOffset, since: Date.now(), restored: Boolean(restored) };
      outbox.push(entry);
      keepUnacked(name, text, clientOffset, true);
      socket.emit("chat message", text, clientOffset, function (err, reply) {
        settle(entry, err, reply);
      });
      watchStall();
    }

    // A message deleted by a moderator: gone from the list (and from what waits to be drawn).
    socket.on("chat deleted", function (id) {
      if (typeof id !== "number") {
        return;
      }
      pending = pending.filter(function (p) {
        return p.id !== id;
      });
      var li = list.querySelector('li[data-id="' + id + '"]');
      if (li) {
        li.remove();
        rows--;
        updateEmpty();
      }
    });

    socket.on("presence", function (p) {
      if (!p || typeof p !== "object") {
        return;
      }
      function valid(x) {
        return x && typeof x === "object" && typeof x.id === "string";
      }
      if (Array.isArray(p.users)) {
        room.people = Object.create(null);
        p.users.filter(valid).forEach(function (x) {
          room.people[x.id] = x;
        });
      }
      (Array.isArray(p.joined) ? p.joined : []).filter(valid).forEach(function (x) {
        room.people[x.id] = x;
      });
      (Array.isArray(p.left) ? p.left : []).filter(valid).forEach(function (x) {
        delete room.people[x.id];
        delete room.typers[x.id];
      });
      if (typeof p.online === "number") {
        room.online = p.online;
      }
      if (room.shown) {
        renderPeople();
        renderTyping();
      }
    });

    socket.on("typing", function (p) {
      if (!p || typeof p !== "object" || typeof p.id !== "string") {
        return;
      }
      room.typers[p.id] = { name: personName(p), until: Date.now() + TYPING_SHOW_MS };
      if (room.shown) {
        renderTyping();
      }
      setTimeout(function () {
        if (room.shown) {
          renderTyping();
        }
      }, TYPING_SHOW_MS + 50);
    });

    /** The user is typing in this room: says so, at most every TYPING_EVERY_MS, only while connected. */
    room.typing = function () {
      if (socket.connected && Date.now() - typedAt >= TYPING_EVERY_MS) {
        typedAt = Date.now();
        socket.volatile.emit("typing");
      }
    };

    socket.on("token expired", function () {
      tokenExpired = true;
      say("Your sign-in has expired (token expired). This room reconnects when the page gets a new token.", true);
    });

    /** Connects again (with the auth as it is now), if connected or refused for who we are. */
    function reconnect() {
      if (socket.active) {
        socket.disconnect();
      }
      refusedFor = null;
      tokenExpired = false;
      room.sticky = "";
      if (room.shown && !lengthNotice) {
        hideNotice();
      }
      socket.connect();
      setStatus("reconnecting", "connecting\u2026");
    }

    /** A new guest name ("" for none): the next CONNECT sends it; a connected room connects again. */
    room.setName = function (value) {
      if (value) {
        socket.auth.name = value;
      } else {
        delete socket.auth.name;
      }
      if (socket.active || refusedFor === "name") {
        reconnect();
      }
    };

    /** A new token: sent in-band when connected with one, else used to connect again. */
    room.setToken = function (value) {
      if (value) {
        socket.auth.token = value;
      } else {
        delete socket.auth.token;
      }
      return new Promise(function (resolve) {
        if (value && socket.connected && connectedWithToken && !tokenExpired) {
          socket.emit("refresh token", value, function (err, reply) {
            var error = err ? err.message || String(err) : reply && reply.error;
            if (error) {
              say("Could not refresh the token: " + error);
              resolve({ room: name, error: error });
            } else {
              resolve({ room: name, exp: reply ? reply.exp : null });
            }
          });
          return;
        }
        if (tokenExpired || refusedFor === "token" || socket.connected) {
          reconnect();
        }
        resolve({ room: name, exp: null });
      });
    };

    /** A row for an own message, at the end of the list, and its emit. */
    function emitOwn(text, clientOffset, restored) {
      var item = document.createElement("li");
      item.dir = "auto";
      item.textContent = text;
      item.dataset.own = "";
      item.dataset.name = ownName();
      list.appendChild(item);
      updateEmpty();
      send(text, clientOffset, item, restored);
    }

    room.submit = function (text) {
      emitOwn(text, pageId + "-" + counter++, false);
    };

    // What this tab sent here before a reload and saw no answer to: sent again, with the same
    // clientOffsets, so a message the server stored meanwhile is acked, not stored twice.
    loadOutbox().forEach(function (m) {
      if (m.room === name) {
        emitOwn(m.text, m.clientOffset, true);
      }
    });

    room.disconnect = function () {
      socket.disconnect();
      room.sticky = "";
      setStatus("offline", "offline");
    };

    room.connect = function () {
      room.parked = false;
      if (!socket.active) {
        socket.connect();
        setStatus("reconnecting", "connecting\u2026");
      }
    };

    /**
     * Disconnects this room while another is shown, unless an own message waits for its answer;
     * says whether it did. Showing it again connects it (see MAX_OPEN_ROOMS).
     */
    room.park = function () {
      if (outbox.length || !socket.active) {
        return false;
      }
      socket.disconnect();
      room.parked = true;
      setStatus("offline", "offline");
      return true;
    };

    /** Puts this room's list where the shown room's was, with its badge, notice and buttons. */
    room.show = function () {
      room.shownAt = Date.now();
      if (room.parked) {
        room.connect(); // from the last message it has: it gets what it missed
      }
      room.shown = true;
      room.unread = 0;
      seenBelow();
      sawUpTo(name, listed[name]);
      showList(list);
      statusBadge.dataset.state = room.state;
      statusBadge.textContent = room.stateText;
      // The room's lasting notice, unless the input holds more than can be sent (it says so).
      if (room.sticky) {
        showNotice(room.sticky, true);
      } else {
        hideNotice();
      }
      if (bytesOverLimit(input.value)) {
        showNotice(tooLong(input.value), true);
        lengthNotice = true;
      }
      render();
      updateEmpty();
      updateEarlier();
      renderPeople();
      renderTyping();
      if (room.scroll === null) {
        scrollToEnd();
      } else {
        window.scrollTo(0, room.scroll);
      }
    };

    room.hide = function () {
      room.scroll = atEnd(2) ? null : window.scrollY;
      room.shown = false;
    };

    return room;
  }

  /**
   * The name an own message shows until the server's row replaces it: the token's `name` (else its
   * `sub`), read from its payload (for display only: the server checks the token), else the guest
   * name, else "guest".
   */
  function ownName() {
    var claims = token ? claimsOf(token) : null;
    if (claims && typeof claims.name === "string" && claims.name.trim()) {
      return claims.name;
    }
    if (claims && typeof claims.sub === "string" && claims.sub) {
      return claims.sub;
    }
    return myName || "guest";
  }

  /** How a person of a presence or typing event is called: their name, else "guest" or their id. */
  function personName(p) {
    if (typeof p.name === "string" && p.name) {
      return p.name;
    }
    return p.guest || typeof p.user !== "string" ? "guest" : p.user;
  }

  /** The shown room's count of people, and its list when open. */
  function renderPeople() {
    var room = current;
    if (!room || room.online === null) {
      onlineButton.hidden = true;
      showPeople(false);
      return;
    }
    var appeared = onlineButton.hidden;
    onlineButton.hidden = false;
    onlineCount.textContent = thousands(room.online);
    onlineButton.setAttribute("aria-label", room.online === 1 ? "1 person here" : thousands(room.online) + " people here");
    if (appeared) {
      // The strip just gave the count room: keep the room shown in sight.
      var shown = roomList.querySelector('[aria-current="page"]');
      if (shown && !inStrip(shown)) {
        shown.scrollIntoView({ block: "nearest", inline: "nearest" });
      }
    }
    if (peoplePanel.hidden) {
      return;
    }
    var people = Object.keys(room.people).map(function (id) {
      return room.people[id];
    });
    people.sort(function (a, b) {
      return personName(a).localeCompare(personName(b));
    });
    var fragment = document.createDocumentFragment();
    people.forEach(function (p) {
      var li = document.createElement("li");
      li.dir = "auto";
      li.textContent = personName(p);
      if (p.guest && typeof p.name === "string" && p.name) {
        li.dataset.guest = ""; // "Bo (guest)"; an unnamed one is just "guest"
      }
      fragment.appendChild(li);
    });
    peopleList.textContent = "";
    peopleList.appendChild(fragment);
    var more = room.online - people.length;
    peopleMore.hidden = more <= 0;
    peopleMore.textContent = more > 0 ? "and " + thousands(more) + " more" : "";
  }

  function showPeople(open) {
    peoplePanel.hidden = !open;
    onlineButton.setAttribute("aria-expanded", String(open));
  }

  /** "Ana is typing…" for the shown room: whoever typed in the last TYPING_SHOW_MS. */
  function renderTyping() {
    var room = current;
    var now = Date.now();
    var names = [];
    if (room) {
      Object.keys(room.typers).forEach(function (id) {
        if (room.typers[id].until > now) {
          names.push(room.typers[id].name);
        } else {
          delete room.typers[id];
        }
      });
    }
    var text = "";
    if (names.length === 1) {
      text = names[0] + " is typing\u2026";
    } else if (names.length === 2) {
      text = names[0] + " and " + names[1] + " are typing\u2026";
    } else if (names.length > 2) {
      text = "Several people are typing\u2026";
    }
    typingLine.textContent = text;
    typingLine.hidden = !text;
  }

  /** Makes `list` the one on screen, under the id the page's styles and tests know. */
  function showList(list) {
    var shown = document.getElementById("messages");
    if (shown !== list) {
      shown.removeAttribute("id");
      list.id = "messages";
      shown.replaceWith(list);
    }
  }

  function updateToggle() {
    // `active` stays true while the client is reconnecting on its own, so the
    // button only says "Connect" after the user disconnected on purpose (or the
    // server refused the room: a click asks again).
    toggleButton.disabled = !current;
    if (current) {
      toggleButton.textContent = current.socket.active ? "Disconnect" : "Connect";
    }
  }

  function setTitle(text) {
    title.textContent = text;
    document.title = text === "relay chat" ? text : text + " \u00b7 relay chat";
  }

  /** Shows room `name`, opening it (its socket) on its first visit. */
  function showRoom(name) {
    if (current && current.name === name) {
      return;
    }
    if (current) {
      current.hide();
    }
    var room = rooms[name] || (rooms[name] = Room(name));
    current = room;
    input.disabled = sendButton.disabled = false;
    setTitle(name === "/" ? "relay chat" : label(name));
    room.show();
    parkIdleRooms();
    updateToggle();
    renderRoomList(true);
  }

  /** Past MAX_OPEN_ROOMS connected rooms not shown, disconnects the ones shown longest ago. */
  function parkIdleRooms() {
    var open = Object.keys(rooms).map(function (n) {
      return rooms[n];
    }).filter(function (r) {
      return r !== current && !r.parked && r.socket.active;
    }).sort(function (a, b) {
      return a.shownAt - b.shownAt;
    });
    var excess = open.length - MAX_OPEN_ROOMS;
    for (var i = 0; i < open.length && excess > 0; i++) {
      if (open[i].park()) {
        excess--; // (a room with an own message waiting is kept)
      }
    }
  }

  /** A hash that names no room: says so, connects nothing, sends nothing. */
  function showNoRoom(hash) {
    if (current) {
      current.hide();
    }
    current = null;
    var text = hash;
    try {
      text = decodeURIComponent(hash);
    } catch (e) {
      // shown as written
    }
    showList(noRoomList);
    empty.hidden = true;
    earlierButton.hidden = true;
    renderPeople();
    renderTyping();
    input.disabled = sendButton.disabled = true;
    statusBadge.dataset.state = "invalid";
    statusBadge.textContent = "no such room";
    setTitle("relay chat");
    hideNotice(); // a length notice too: there is nothing to send to
    showNotice("\u201c" + text + "\u201d is not a room name. " + ROOM_RULE + " Pick a room above, or open one with +.", true);
    updateToggle();
    renderRoomList();
  }

  /** Shows what the URL's hash names. */
  function route() {
    var hash = location.hash.replace(/^#/, "");
    var name = roomOfHash(hash);
    if (name === null) {
      showNoRoom(hash);
      return;
    }
    if (hash !== "" && "#" + hash !== hrefOf(name)) {
      history.replaceState(null, "", hrefOf(name)); // one spelling per room, to share
    }
    showRoom(name);
  }

  /** Goes to room `name`, as a new entry in the browser's history (Back returns). */
  function go(name) {
    if (location.hash !== (name === "/" ? "" : "#" + name)) {
      history.pushState(null, "", hrefOf(name));
    }
    route();
  }

  /**
   * The room strip: "/" first, then by name; every room listed by the server or opened here. The
   * room shown stays in sight if it was (or is new: `reveal`).
   */
  function renderRoomList(reveal) {
    var names = Object.create(null);
    names["/"] = true;
    Object.keys(listed).forEach(function (n) {
      names[n] = true;
    });
    Object.keys(rooms).forEach(function (n) {
      names[n] = true;
    });
    var sorted = Object.keys(names).sort(function (a, b) {
      return a === "/" ? -1 : b === "/" ? 1 : a < b ? -1 : a > b ? 1 : 0;
    });
    var focused = roomList.contains(document.activeElement) ? document.activeElement.dataset.room : null;
    var scrolled = roomList.scrollLeft;
    var revealShown = reveal || inStrip(roomList.querySelector('[aria-current="page"]'));
    var fragment = document.createDocumentFragment();
    sorted.forEach(function (name) {
      var li = document.createElement("li");
      li.dataset.room = name;
      var a = document.createElement("a");
      a.href = hrefOf(name);
      a.dataset.room = name;
      var text = document.createElement("span");
      text.className = "room-name";
      text.textContent = label(name);
      a.appendChild(text);
      if (current && current.name === name) {
        a.setAttribute("aria-current", "page");
      }
      var unread = rooms[name] ? rooms[name].unread : 0;
      if ((!rooms[name] || rooms[name].parked) && !unread && listed[name] > (seen[name] || 0)) {
        // Not opened in this page (or disconnected while not shown), and newer than this
        // browser last saw it.
        var dot = document.createElement("span");
        dot.className = "unread dot";
        dot.textContent = "\u2022";
        a.appendChild(dot);
        a.setAttribute("aria-label", label(name) + ", new messages");
      } else if (unread) {
        var badge = document.createElement("span");
        badge.className = "unread";
        badge.textContent = unread > 99 ? "99+" : String(unread);
        a.appendChild(badge);
        a.setAttribute("aria-label", label(name) + ", " + unread + " unread");
      }
      li.appendChild(a);
      fragment.appendChild(li);
    });
    roomList.textContent = "";
    roomList.appendChild(fragment);
    roomList.scrollLeft = scrolled; // where the reader scrolled the strip to
    var shown = roomList.querySelector('[aria-current="page"]');
    if (shown && revealShown && !inStrip(shown)) {
      shown.scrollIntoView({ block: "nearest", inline: "nearest" });
    }
    if (focused) {
      var again = roomList.querySelector('a[data-room="' + focused + '"]');
      if (again) {
        again.focus();
      }
    }
  }

  /** Whether `link` is wholly in the strip's visible part. */
  function inStrip(link) {
    if (!link) {
      return false;
    }
    var box = link.getBoundingClientRect();
    var strip = roomList.getBoundingClientRect();
    return box.left >= strip.left - 1 && box.right <= strip.right + 1;
  }

  /** Asks the server which rooms hold messages (at most every 2 s); an older relay has no list. */
  function refreshRooms() {
    if (!roomsListed || roomsFetching || document.hidden || Date.now() - roomsFetchedAt < 2000) {
      return;
    }
    roomsFetching = true;
    roomsFetchedAt = Date.now();
    // Under AUTH=token the list is for token holders (the rooms their token opens).
    var headers = { Accept: "application/json" };
    if (token) {
      headers.Authorization = "Bearer " + token;
    }
    fetch("/rooms", { cache: "no-store", headers: headers })
      .then(function (res) {
        if (res.status === 404) {
          roomsListed = false; // a relay before rooms: only the rooms opened here are listed
          return null;
        }
        return res.ok ? res.json() : null;
      })
      .then(function (body) {
        if (body && Array.isArray(body.rooms)) {
          listed = Object.create(null);
          body.rooms.forEach(function (r) {
            if (r && typeof r.room === "string" && (r.room === "/" || ROOM_NAME.test(r.room))) {
              listed[r.room] = r.last;
              if (!(r.room in seen)) {
                // Unknown to this browser: at the page's first listing, what it holds is old
                // news; a room that appears later is new, all of it.
                sawUpTo(r.room, roomsListedOnce ? 0 : r.last);
              }
            }
          });
          roomsListedOnce = true;
          saveSeen();
          renderRoomList();
        }
      })
      .catch(function (err) {
        console.warn("could not list the rooms:", err && err.message); // the next refresh tries again
      })
      .then(function () {
        roomsFetching = false;
      });
  }

  function openNewRoomForm(open) {
    roomsBar.classList.toggle("adding", open);
    newRoomForm.hidden = !open;
    newRoomButton.setAttribute("aria-expanded", String(open));
    newRoomInput.value = "";
    newRoomInput.setCustomValidity("");
    if (open) {
      newRoomInput.focus();
    } else {
      newRoomButton.focus();
    }
  }

  newRoomButton.addEventListener("click", function () {
    openNewRoomForm(true);
  });
  newRoomCancel.addEventListener("click", function () {
    openNewRoomForm(false);
  });
  newRoomInput.addEventListener("keydown", function (event) {
    if (event.key === "Escape") {
      openNewRoomForm(false);
    }
  });
  newRoomInput.addEventListener("input", function () {
    newRoomInput.setCustomValidity("");
  });
  newRoomForm.addEventListener("submit", function (event) {
    event.preventDefault();
    var name = newRoomInput.value.trim().toLowerCase();
    if (!ROOM_NAME.test(name)) {
      newRoomInput.setCustomValidity(ROOM_RULE);
      newRoomInput.reportValidity();
      return;
    }
    openNewRoomForm(false);
    go(name);
  });

  roomList.addEventListener("click", function (event) {
    var link = event.target.closest("a[data-room]");
    if (!link || event.button !== 0 || event.ctrlKey || event.metaKey || event.shiftKey || event.altKey) {
      return; // a new tab or window opens the room there
    }
    event.preventDefault();
    go(link.dataset.room);
  });

  window.addEventListener("hashchange", route);
  window.addEventListener("popstate", route);
  document.addEventListener("visibilitychange", refreshRooms);
  setInterval(refreshRooms, ROOMS_REFRESH_MS);

  earlierButton.addEventListener("click", function () {
    if (current) {
      current.loadEarlier();
    }
  });
  window.addEventListener("scroll", function () {
    if (current && window.scrollY === 0 && !earlierButton.hidden) {
      current.loadEarlier();
    }
    if (unseenBelow && atEnd()) {
      seenBelow();
    }
  });
  latestButton.addEventListener("click", scrollToEnd);

  onlineButton.addEventListener("click", function () {
    showPeople(peoplePanel.hidden);
    renderPeople();
  });
  document.addEventListener("keydown", function (event) {
    if (event.key === "Escape" && !peoplePanel.hidden) {
      showPeople(false);
      onlineButton.focus();
    }
  });

  input.addEventListener("input", function () {
    if (current && input.value) {
      current.typing();
    }
    var bytes = bytesOverLimit(input.value);
    input.setAttribute("aria-invalid", bytes ? "true" : "false");
    if (bytes) {
      showNotice(tooLong(input.value), true);
      lengthNotice = true;
    } else if (lengthNotice) {
      hideNotice();
    }
  });

  form.addEventListener("submit", function (event) {
    event.preventDefault();
    var text = input.value;
    if (!text.trim() || !current) {
      return; // nothing to say (spaces alone are not a message)
    }
    var bytes = bytesOverLimit(text);
    if (bytes) {
      // Kept in the input, to be shortened.
      input.setAttribute("aria-invalid", "true");
      showNotice(tooLong(text), true);
      lengthNotice = true;
      return;
    }
    current.submit(text);
    input.value = "";
    input.setAttribute("aria-invalid", "false");
    if (lengthNotice) {
      hideNotice();
    }
    scrollToEnd();
  });

  toggleButton.addEventListener("click", function () {
    if (!current) {
      return;
    }
    // One connection carries every room: the button takes them all offline, or back.
    var all = Object.keys(rooms).map(function (n) {
      return rooms[n];
    });
    if (current.socket.active) {
      all.forEach(function (room) {
        room.disconnect();
      });
      hideNotice();
    } else {
      all.forEach(function (room) {
        room.connect();
      });
    }
    updateToggle();
  });

  nameInput.value = myName;
  nameInput.addEventListener("change", function () {
    var value = nameInput.value.trim();
    nameInput.value = value;
    if (value === myName && nameInput.getAttribute("aria-invalid") !== "true") {
      return; // nothing new to connect with
    }
    nameInput.removeAttribute("aria-invalid");
    myName = value;
    store(NAME_KEY, value || null);
    Object.keys(rooms).forEach(function (n) {
      rooms[n].setName(value);
    });
    updateToggle();
  });

  /**
   * A token's claims, read from its payload (base64url JSON, UTF-8) and not verified: for timing and
   * display only, the server checks the token. `null` for what is no JWT the page can read.
   */
  function claimsOf(jwt) {
    try {
      var part = jwt.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
      var bytes = Uint8Array.from(atob(part + "===".slice((part.length + 3) % 4)), function (c) {
        return c.charCodeAt(0);
      });
      var claims = JSON.parse(new TextDecoder().decode(bytes));
      return claims && typeof claims === "object" ? claims : null;
    } catch (e) {
      return null;
    }
  }

  /** A token's `exp` (seconds since the epoch), or null. */
  function expOf(jwt) {
    var claims = claimsOf(jwt);
    return claims && typeof claims.exp === "number" ? claims.exp : null;
  }

  // A minute before the token expires, the page asks for a new one: the event
  // "relay:token-expiring" on this window, and a message {type: "relay:token-expiring", exp} to
  // the host page when it is embedded. The answer is window.relay.setToken(t), or from the host
  // page a message {type: "relay:set-token", token: t}.
  var expiringTimer = null;
  function watchExpiry() {
    clearTimeout(expiringTimer);
    var exp = token ? expOf(token) : null;
    if (exp === null) {
      return;
    }
    var wait = Math.max(0, exp * 1000 - Date.now() - TOKEN_ASK_BEFORE_MS);
    expiringTimer = setTimeout(function () {
      window.dispatchEvent(new CustomEvent("relay:token-expiring", { detail: { exp: exp } }));
      if (window.parent !== window) {
        window.parent.postMessage({ type: "relay:token-expiring", exp: exp }, "*");
      }
    }, Math.min(wait, 2147483647));
  }

  // For a host page: a fresh token (see the top of this file).
  window.relay = {
    setToken: function (value) {
      token = typeof value === "string" && value ? value : null;
      // (Storage refused: a reload starts from the page's address again.)
      store(TOKEN_KEY, token, true);
      watchExpiry();
      return Promise.all(
        Object.keys(rooms).map(function (n) {
          return rooms[n].setToken(token);
        })
      );
    },
  };
  window.addEventListener("message", function (event) {
    var data = event.data;
    if (event.source === window.parent && data && data.type === "relay:set-token" && typeof data.token === "string") {
      window.relay.setToken(data.token);
    }
  });
  watchExpiry();

  route();
  refreshRooms();
})();
