// relay admin page (/admin): the server API (/api/v1/) for whoever holds one of the server's
// API_KEYS — the rooms and who is in them, a room's latest messages (deleted with two taps), and
// bans (added and lifted).
//
// The key: pasted into the page, kept for this tab only (sessionStorage relay-api-key, never
// localStorage), and sent as "Authorization: Bearer <key>" with every call. A 401 (the key is
// wrong, or was taken off the server) forgets it, says "wrong key" and asks again. Every call made
// with a key the page no longer holds is ignored when it answers.
//
// Rooms: `GET /api/v1/rooms` ([{room, online, last_id}], "/" the main room), every REFRESH_MS
// and on "Refresh". A click on a room shows its newest PAGE_SIZE messages (`GET
// /api/v1/messages?room=&limit=`, newest first); "Older messages" follows the answer's `before`
// for the page before; each refresh merges the room's newest page in (new messages on top,
// messages deleted elsewhere gone). Delete (two taps: see rowAction): `DELETE
// /api/v1/messages/<id>`, and the row goes.
//
// Bans: `GET /api/v1/bans` ({bans: [{id, user, ip, reason, created_at, expires_at}]}), refreshed
// with the rooms; the form sends `POST /api/v1/bans` ({user?, ip?, seconds?, reason?}, a user, an
// IP (or range), or both); Lift sends `DELETE /api/v1/bans/<id>`.
//
// Every error body is {"error": "<reason>"}: the reason is shown where the call was made. Text
// from the server is only ever set as textContent.
(function () {
  "use strict";

  // Where the key is kept (this tab only).
  var KEY_STORE = "relay-api-key";
  var API = "/api/v1/";
  // How often rooms, the room shown and bans are asked for again.
  var REFRESH_MS = 5000;
  // Messages a page holds.
  var PAGE_SIZE = 50;

  var statusBadge = document.getElementById("status");
  var forgetButton = document.getElementById("forget-key");
  var keyPanel = document.getElementById("key-panel");
  var keyForm = document.getElementById("key-form");
  var keyInput = document.getElementById("key");
  var keyButton = keyForm.querySelector('button[type="submit"]');
  var keyError = document.getElementById("key-error");
  var main = document.getElementById("admin");

  var roomList = document.getElementById("admin-rooms");
  var roomsEmpty = document.getElementById("rooms-empty");
  var roomsError = document.getElementById("rooms-error");
  var refreshButton = document.getElementById("refresh");

  var messagesHeading = document.getElementById("messages-heading");
  var messagesHint = document.getElementById("messages-hint");
  var messagesEmpty = document.getElementById("messages-empty");
  var messagesError = document.getElementById("messages-error");
  var messageList = document.getElementById("admin-messages");
  var olderButton = document.getElementById("older");

  var banForm = document.getElementById("ban-form");
  var banUser = document.getElementById("ban-user");
  var banIp = document.getElementById("ban-ip");
  var banSeconds = document.getElementById("ban-seconds");
  var banReason = document.getElementById("ban-reason");
  var banSubmit = document.getElementById("ban-submit");
  var banError = document.getElementById("ban-error");
  var banList = document.getElementById("admin-bans");
  var bansEmpty = document.getElementById("bans-empty");
  var bansError = document.getElementById("bans-error");

  // The key in use (null: none), and a count that moves whenever it changes: an answer to a call
  // made under another count is dropped.
  var apiKey = null;
  var generation = 0;
  var unlocked = false;
  var refreshTimer = null;

  // The room shown: {room, ids: id -> row, before, loaded, edits} (null: none picked).
  var view = null;
  // Bumped by every ban added or lifted here: a list asked for before it is stale.
  var banEdits = 0;

  // --- storage (this tab only) -------------------------------------------------------------

  function savedKey() {
    try {
      return window.sessionStorage.getItem(KEY_STORE);
    } catch (e) {
      return null; // storage off: the key lives as long as the page
    }
  }

  function saveKey(key) {
    try {
      if (key === null) {
        window.sessionStorage.removeItem(KEY_STORE);
      } else {
        window.sessionStorage.setItem(KEY_STORE, key);
      }
    } catch (e) {
      // storage off: kept for this page's life only
    }
  }

  // --- small helpers -----------------------------------------------------------------------

  function el(tag, className, text) {
    var node = document.createElement(tag);
    if (className) {
      node.className = className;
    }
    if (text !== undefined && text !== null) {
      node.textContent = String(text);
    }
    return node;
  }

  /**
   * Finishes a list row: `body`, with the place for the row's own error under it, then its action
   * button (`className`, `label`, `ariaLabel`); a click calls `act(button, rowError)`.
   */
  // A row's destructive button (Delete, Lift) takes two taps: the first arms it ("Delete #42?",
  // the row marked) for ARM_MS, the second acts. Rows move under a finger while the list refreshes
  // (new messages come in on top), so one tap must never act on a row the admin did not see.
  var ARM_MS = 4000;

  function rowAction(li, body, className, label, ariaLabel, act, confirmLabel) {
    var rowError = el("p", "row-error");
    rowError.setAttribute("role", "alert");
    rowError.hidden = true;
    body.appendChild(rowError);
    li.appendChild(body);
    var button = el("button", className, label);
    button.type = "button";
    button.setAttribute("aria-label", ariaLabel);
    var disarm = null;
    button.addEventListener("click", function () {
      if (disarm === null) {
        button.textContent = confirmLabel;
        button.setAttribute("aria-label", "Confirm: " + ariaLabel);
        button.classList.add("armed");
        li.classList.add("armed");
        var timer = setTimeout(function () {
          disarm();
        }, ARM_MS);
        disarm = function () {
          clearTimeout(timer);
          disarm = null;
          button.classList.remove("armed");
          li.classList.remove("armed");
          button.setAttribute("aria-label", ariaLabel);
          if (!button.disabled) {
            button.textContent = label;
          }
        };
        return;
      }
      disarm();
      act(button, rowError);
    });
    li.appendChild(button);
  }

  // A row's button that DELETEs `path`: it says `busy` meanwhile, then `done` runs; on failure
  // the button is back as it was and the row says why, after `failed`.
  function deleteFromRow(path, button, rowError, busy, failed, done) {
    var label = button.textContent;
    button.disabled = true;
    button.textContent = busy;
    hide(rowError);
    api("DELETE", path)
      .then(done)
      .catch(function (err) {
        button.disabled = false;
        button.textContent = label;
        shows(rowError, failed)(err);
      });
  }

  function showText(node, text) {
    node.textContent = text;
    node.hidden = false;
  }

  function hide(node) {
    node.hidden = true;
    node.textContent = "";
  }

  function setStatus(state, text) {
    statusBadge.dataset.state = state;
    statusBadge.textContent = text;
  }

  function pad2(n) {
    return (n < 10 ? "0" : "") + n;
  }

  /** A time in ms as the page shows it: local "YYYY-MM-DD HH:MM". */
  function when(ms) {
    if (typeof ms !== "number" || !(ms > 0)) {
      return "?";
    }
    var d = new Date(ms);
    return d.getFullYear() + "-" + pad2(d.getMonth() + 1) + "-" + pad2(d.getDate()) + " " + pad2(d.getHours()) + ":" + pad2(d.getMinutes());
  }

  function timeElement(ms) {
    var t = el("time", "", when(ms));
    if (typeof ms === "number" && ms > 0) {
      t.dateTime = new Date(ms).toISOString();
      t.title = new Date(ms).toLocaleString();
    }
    return t;
  }

  function roomLabel(room) {
    return room === "/" ? "/ (main room)" : room;
  }

  /** Runs `run` (which returns a promise) one at a time: a call while one runs runs once after. */
  function serial(run) {
    var busy = false;
    var again = false;
    function done() {
      busy = false;
      if (again) {
        again = false;
        load();
      }
    }
    function load() {
      if (busy) {
        again = true;
        return;
      }
      busy = true;
      var p;
      try {
        p = run();
      } catch (e) {
        p = Promise.reject(e);
      }
      Promise.resolve(p).then(done, done);
    }
    return load;
  }

  // --- the API -----------------------------------------------------------------------------

  function apiError(status, reason) {
    var err = new Error(reason);
    err.status = status;
    err.reason = reason;
    return err;
  }

  function stale() {
    var err = apiError(-1, "stale");
    err.stale = true;
    return err;
  }

  /**
   * Calls the API with the key: resolves with the JSON body, or rejects with an Error holding
   * `status` (0: the server did not answer) and `reason` (the body's `error`). A 401 locks the
   * page before it rejects; an answer to a call made with another key rejects as `stale`.
   */
  function api(method, path, body) {
    var gen = generation;
    var headers = { Accept: "application/json", Authorization: "Bearer " + apiKey };
    var init = { method: method, headers: headers, cache: "no-store" };
    if (body !== undefined) {
      headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    return fetch(API + path, init).then(
      function (res) {
        return res.text().then(function (text) {
          if (gen !== generation) {
            throw stale();
          }
          var data = null;
          try {
            data = text ? JSON.parse(text) : null;
          } catch (e) {
            data = null;
          }
          var reason = data && typeof data.error === "string" && data.error
            ? data.error
            : "HTTP " + res.status + (res.statusText ? " " + res.statusText : "");
          if (res.status === 401) {
            keyRefused(reason);
            throw stale();
          }
          if (unlocked) {
            setStatus("connected", "key ok");
          }
          if (!res.ok) {
            throw apiError(res.status, reason);
          }
          return data;
        });
      },
      function (err) {
        if (gen !== generation) {
          throw stale();
        }
        if (unlocked) {
          setStatus("offline", "unreachable");
        }
        throw apiError(0, "the server did not answer (" + (err && err.message ? err.message : "network error") + ")");
      }
    );
  }

  /** A catch handler that shows a failed call's reason in `node` (nothing for a stale call). */
  function shows(node, prefix) {
    return function (err) {
      if (err && err.stale) {
        return;
      }
      showText(node, prefix + (err && err.reason ? err.reason : String(err)));
    };
  }

  // --- the key -----------------------------------------------------------------------------

  /** Shows the key form (with `why`, if any) and nothing else; forgets everything shown. */
  function lock(state, text, why) {
    unlocked = false;
    stopRefresh();
    setStatus(state, text);
    main.hidden = true;
    keyPanel.hidden = false;
    forgetButton.hidden = true;
    keyButton.disabled = false;
    if (why) {
      showText(keyError, why);
    } else {
      hide(keyError);
    }
    clearAll();
    keyInput.value = "";
    keyInput.focus();
  }

  function unlock() {
    unlocked = true;
    setStatus("connected", "key ok");
    keyPanel.hidden = true;
    hide(keyError);
    keyInput.value = "";
    main.hidden = false;
    forgetButton.hidden = false;
    startRefresh();
  }

  function forgetKey(state, text, why) {
    generation++;
    apiKey = null;
    saveKey(null);
    lock(state, text, why);
  }

  /** A 401: the key is wrong (or no longer the server's). */
  function keyRefused(reason) {
    forgetKey("refused", "wrong key", "wrong key: " + reason + ". Paste the API key again.");
  }

  /** Tries `key`: the rooms are the first call; a key the server takes is kept for the tab. */
  function useKey(key) {
    generation++;
    apiKey = key;
    saveKey(key);
    stopRefresh();
    setStatus("checking", "checking key\u2026");
    keyButton.disabled = true;
    hide(keyError);
    api("GET", "rooms")
      .then(function (rooms) {
        unlock();
        renderRooms(rooms);
        loadBans();
        if (view) {
          loadMessages();
        }
      })
      .catch(function (err) {
        if (err && err.stale) {
          return;
        }
        // Not the key's fault (the API is off, the server is away): the key stays, try again.
        keyPanel.hidden = false;
        keyButton.disabled = false;
        setStatus(err.status === 0 ? "offline" : "refused", err.status === 0 ? "unreachable" : "error");
        showText(keyError, "Could not check the key: " + err.reason);
      });
  }

  keyForm.addEventListener("submit", function (e) {
    e.preventDefault();
    var key = keyInput.value.trim();
    if (!key) {
      showText(keyError, "Paste the API key first.");
      keyInput.focus();
      return;
    }
    useKey(key);
  });

  forgetButton.addEventListener("click", function () {
    forgetKey("locked", "no key", null);
  });

  // --- refreshing --------------------------------------------------------------------------

  function refreshAll() {
    if (!unlocked) {
      return;
    }
    loadRooms();
    loadBans();
    if (view) {
      loadMessages();
    }
  }

  function startRefresh() {
    stopRefresh();
    refreshTimer = setInterval(function () {
      if (!document.hidden) {
        refreshAll();
      }
    }, REFRESH_MS);
  }

  function stopRefresh() {
    if (refreshTimer !== null) {
      clearInterval(refreshTimer);
      refreshTimer = null;
    }
  }

  document.addEventListener("visibilitychange", function () {
    if (!document.hidden) {
      refreshAll();
    }
  });

  refreshButton.addEventListener("click", refreshAll);

  function clearAll() {
    view = null;
    roomList.textContent = "";
    hide(roomsError);
    roomsEmpty.hidden = true;
    clearMessages();
    messagesHeading.textContent = "Messages";
    messagesHint.hidden = false;
    banList.textContent = "";
    hide(bansError);
    hide(banError);
    bansEmpty.hidden = true;
    banForm.reset();
  }

  // --- rooms -------------------------------------------------------------------------------

  var loadRooms = serial(function () {
    return api("GET", "rooms").then(renderRooms).catch(shows(roomsError, "Could not list the rooms: "));
  });

  function roomItem(room) {
    var li = el("li");
    li.dataset.room = room;
    var button = el("button", "room");
    button.type = "button";
    button.appendChild(el("span", "room-name", roomLabel(room)));
    button.appendChild(el("span", "room-online"));
    button.appendChild(el("span", "room-last"));
    button.title = roomLabel(room);
    button.addEventListener("click", function () {
      selectRoom(room);
    });
    li.appendChild(button);
    return li;
  }

  function renderRooms(rooms) {
    hide(roomsError);
    var list = Array.isArray(rooms)
      ? rooms.filter(function (r) {
          return r && typeof r.room === "string" && r.room;
        })
      : [];
    var rows = Object.create(null);
    Array.prototype.forEach.call(roomList.children, function (li) {
      rows[li.dataset.room] = li;
    });
    var keep = Object.create(null);
    list.forEach(function (r) {
      var li = rows[r.room] || roomItem(r.room);
      var online = typeof r.online === "number" ? r.online : 0;
      li.dataset.online = String(online);
      li.querySelector(".room-online").textContent = online + " online";
      li.querySelector(".room-last").textContent = typeof r.last_id === "number" && r.last_id > 0 ? "last #" + r.last_id : "no messages";
      keep[r.room] = true;
      roomList.appendChild(li); // in the server's order
    });
    Object.keys(rows).forEach(function (room) {
      if (!keep[room]) {
        roomList.removeChild(rows[room]);
      }
    });
    markSelected();
    roomsEmpty.hidden = list.length > 0;
  }

  function markSelected() {
    Array.prototype.forEach.call(roomList.children, function (li) {
      var button = li.querySelector("button");
      if (view && li.dataset.room === view.room) {
        button.setAttribute("aria-current", "true");
      } else {
        button.removeAttribute("aria-current");
      }
    });
  }

  // --- messages ----------------------------------------------------------------------------

  function messagesPath(room, before) {
    var path = "messages?room=" + encodeURIComponent(room) + "&limit=" + PAGE_SIZE;
    if (before) {
      path += "&before=" + encodeURIComponent(String(before));
    }
    return path;
  }

  function messagesOf(data) {
    var list = data && Array.isArray(data.messages) ? data.messages : [];
    return list.filter(function (m) {
      return m && typeof m.id === "number" && m.id > 0;
    });
  }

  function beforeOf(data) {
    return data && typeof data.before === "number" && data.before > 0 ? data.before : null;
  }

  function clearMessages() {
    messageList.textContent = "";
    messagesEmpty.hidden = true;
    hide(messagesError);
    olderButton.hidden = true;
    olderButton.disabled = false;
  }

  function selectRoom(room) {
    view = { room: room, ids: Object.create(null), before: null, loaded: false, edits: 0 };
    markSelected();
    messagesHeading.textContent = "Messages in " + roomLabel(room);
    messagesHint.hidden = true;
    clearMessages();
    loadMessages();
  }

  /** The room's newest page, merged into the rows shown. */
  var loadMessages = serial(function () {
    var v = view;
    if (!v) {
      return null;
    }
    var edits = v.edits;
    return api("GET", messagesPath(v.room))
      .then(function (data) {
        if (v !== view) {
          return;
        }
        if (v.edits !== edits) {
          loadMessages(); // a row was deleted meanwhile: this page may still hold it
          return;
        }
        hide(messagesError);
        mergeNewest(v, messagesOf(data), beforeOf(data));
        showMessagesState(v);
      })
      .catch(function (err) {
        if (v === view) {
          shows(messagesError, "Could not load the messages: ")(err);
        }
      });
  });

  function mergeNewest(v, messages, before) {
    var ids = Object.keys(v.ids).map(Number);
    var newestShown = ids.length ? Math.max.apply(null, ids) : 0;
    var oldestFetched = messages.length ? messages[messages.length - 1].id : 0;
    if (!v.loaded || (before !== null && oldestFetched > newestShown)) {
      // The first page, or more came than a page holds since: start again from this page.
      messageList.textContent = "";
      v.ids = Object.create(null);
      v.before = before;
      v.loaded = true;
      messages.forEach(function (m) {
        addRow(v, m);
      });
      return;
    }
    // Between the page's oldest and the newest, the page is the truth: rows not in it are gone.
    var low = before === null ? 0 : oldestFetched;
    var fetched = Object.create(null);
    messages.forEach(function (m) {
      fetched[m.id] = true;
    });
    ids.forEach(function (id) {
      if (id >= low && !fetched[id]) {
        removeRow(v, id);
      }
    });
    messages.forEach(function (m) {
      if (!v.ids[m.id]) {
        addRow(v, m);
      }
    });
  }

  /** Adds a message's row where its id puts it (newest first). */
  function addRow(v, m) {
    if (v.ids[m.id]) {
      return;
    }
    var li = messageRow(v, m);
    v.ids[m.id] = li;
    var next = null;
    for (var i = 0; i < messageList.children.length; i++) {
      if (Number(messageList.children[i].dataset.id) < m.id) {
        next = messageList.children[i];
        break;
      }
    }
    messageList.insertBefore(li, next);
  }

  function removeRow(v, id) {
    var li = v.ids[id];
    if (li) {
      delete v.ids[id];
      if (li.parentNode) {
        li.parentNode.removeChild(li);
      }
    }
  }

  function messageRow(v, m) {
    var li = el("li", "message");
    li.dataset.id = String(m.id);
    var body = el("div", "body");
    var meta = el("div", "meta");
    var name = typeof m.name === "string" && m.name ? m.name : "";
    var user = typeof m.user === "string" && m.user ? m.user : "";
    var author = el("span", "author", name || user || "guest");
    if (!user) {
      author.title = "not a verified user";
    }
    meta.appendChild(author);
    if (user && name) {
      meta.appendChild(el("span", "user", "user " + user));
    }
    meta.appendChild(timeElement(m.at));
    meta.appendChild(el("span", "id", "#" + m.id));
    body.appendChild(meta);
    var content = el("p", "content", typeof m.content === "string" ? m.content : "");
    content.dir = "auto";
    body.appendChild(content);
    rowAction(li, body, "delete danger", "Delete", "Delete message " + m.id, function (button, rowError) {
      deleteMessage(v, m.id, button, rowError);
    }, "Delete #" + m.id + "?");
    return li;
  }

  function deleteMessage(v, id, button, rowError) {
    var path = "messages/" + encodeURIComponent(String(id));
    deleteFromRow(path, button, rowError, "Deleting\u2026", "Not deleted: ", function () {
      v.edits++;
      removeRow(v, id);
      if (v === view) {
        showMessagesState(v);
      }
    });
  }

  olderButton.addEventListener("click", function () {
    var v = view;
    if (!v || !v.before || olderButton.disabled) {
      return;
    }
    olderButton.disabled = true;
    api("GET", messagesPath(v.room, v.before))
      .then(function (data) {
        if (v !== view) {
          return;
        }
        hide(messagesError);
        messagesOf(data).forEach(function (m) {
          addRow(v, m);
        });
        v.before = beforeOf(data);
        showMessagesState(v);
      })
      .catch(function (err) {
        if (v === view) {
          shows(messagesError, "Could not load older messages: ")(err);
        }
      })
      .then(function () {
        olderButton.disabled = false;
      });
  });

  function showMessagesState(v) {
    var rows = messageList.children.length;
    messagesEmpty.hidden = !(v.loaded && rows === 0 && !v.before);
    olderButton.hidden = !v.before;
  }

  // --- bans --------------------------------------------------------------------------------

  var loadBans = serial(function () {
    var edits = banEdits;
    return api("GET", "bans")
      .then(function (data) {
        if (edits !== banEdits) {
          loadBans(); // a ban was added or lifted meanwhile: ask again
          return;
        }
        hide(bansError);
        renderBans(data && Array.isArray(data.bans) ? data.bans : []);
      })
      .catch(shows(bansError, "Could not list the bans: "));
  });

  function renderBans(bans) {
    var rows = Object.create(null);
    Array.prototype.forEach.call(banList.children, function (li) {
      rows[li.dataset.id] = li;
    });
    var keep = Object.create(null);
    bans.forEach(function (b) {
      if (!b || typeof b.id !== "number") {
        return;
      }
      var key = String(b.id);
      var li = rows[key] || banRow(b);
      keep[key] = true;
      banList.appendChild(li);
    });
    Object.keys(rows).forEach(function (key) {
      if (!keep[key]) {
        banList.removeChild(rows[key]);
      }
    });
    bansEmpty.hidden = banList.children.length > 0;
  }

  function banRow(b) {
    var li = el("li", "ban");
    li.dataset.id = String(b.id);
    var body = el("div", "body");
    var what = el("p", "what");
    if (typeof b.user === "string" && b.user) {
      li.dataset.user = b.user;
      what.appendChild(el("span", "label", "user "));
      what.appendChild(el("strong", "ban-user", b.user));
    }
    if (typeof b.ip === "string" && b.ip) {
      li.dataset.ip = b.ip;
      if (what.childNodes.length) {
        what.appendChild(document.createTextNode(" \u00b7 "));
      }
      what.appendChild(el("span", "label", "IP "));
      what.appendChild(el("strong", "ban-ip", b.ip));
    }
    body.appendChild(what);
    var hasReason = typeof b.reason === "string" && b.reason;
    body.appendChild(el("p", hasReason ? "reason" : "reason muted", hasReason ? b.reason : "no reason given"));
    var dates = el("p", "when");
    dates.appendChild(document.createTextNode("since "));
    dates.appendChild(timeElement(b.created_at));
    if (typeof b.expires_at === "number") {
      dates.appendChild(document.createTextNode(" \u00b7 until "));
      dates.appendChild(timeElement(b.expires_at));
    } else {
      dates.appendChild(document.createTextNode(" \u00b7 never expires"));
    }
    body.appendChild(dates);
    rowAction(li, body, "lift danger", "Lift", "Lift ban " + b.id, function (button, rowError) {
      liftBan(b.id, li, button, rowError);
    }, "Lift ban " + b.id + "?");
    return li;
  }

  function liftBan(id, li, button, rowError) {
    var path = "bans/" + encodeURIComponent(String(id));
    deleteFromRow(path, button, rowError, "Lifting\u2026", "Not lifted: ", function () {
      banEdits++;
      if (li.parentNode) {
        li.parentNode.removeChild(li);
      }
      bansEmpty.hidden = banList.children.length > 0;
      loadBans();
    });
  }

  banForm.addEventListener("submit", function (e) {
    e.preventDefault();
    var user = banUser.value.trim();
    var ip = banIp.value.trim();
    var reason = banReason.value.trim();
    if (!user && !ip) {
      showText(banError, "Give a user id, an IP address (or range), or both.");
      banUser.focus();
      return;
    }
    var body = {};
    if (user) {
      body.user = user;
    }
    if (ip) {
      body.ip = ip;
    }
    if (banSeconds.value) {
      body.seconds = Number(banSeconds.value);
    }
    if (reason) {
      body.reason = reason;
    }
    banSubmit.disabled = true;
    hide(banError);
    api("POST", "bans", body)
      .then(function () {
        banEdits++;
        banForm.reset();
        loadBans();
        banUser.focus();
      })
      .catch(shows(banError, "Not banned: "))
      .then(function () {
        banSubmit.disabled = false;
      });
  });

  // --- start -------------------------------------------------------------------------------

  var key = savedKey();
  if (key) {
    keyPanel.hidden = true; // asked again only if the server no longer takes it
    useKey(key);
  } else {
    lock("locked", "no key", null);
  }
})();
