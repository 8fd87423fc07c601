-- relay's tables (messages; relay_sessions for connection-state recovery). Load by hand with
-- `mariadb chat < schema.sql` (or `mysql chat < schema.sql`);
-- relay also runs this file at start, so it must stay idempotent.
--
-- id            BIGINT: at tens of thousands of messages a second an INT runs out in days.
-- client_offset the client's idempotency key (its retry of a message carries the same one).
--               VARBINARY so that it compares byte for byte on MySQL 8 and MariaDB alike: no
--               case folding and no PAD SPACE ("a" and "a " are different offsets). 1020 bytes
--               hold the 255 characters relay accepts.
-- content       utf8mb4 TEXT (65,535 bytes): any Unicode text, stored byte-exact.
-- room          the room (Socket.IO namespace) it was said in, without its "/": '' is the main
--               namespace "/", so the tutorial's rows (and a table made before rooms) are "/"'s.
--               1-48 characters of [a-z0-9_-] (protocol.md, "Rooms").
-- user_id       the author's verified user id (a token's `sub`); NULL for a guest.
-- user_name     the author's display name (the token's `name`, or the guest's own), UTF-8; NULL
--               when there is none.
-- created_at    the server's time of the commit, milliseconds since the Unix epoch (0 for rows
--               stored before relay recorded it).
-- deletes       for a deletion (protocol.md, "Moderation"), the id of the message it deletes; 0
--               for a chat message. A deletion is an entry of the log like any message, with no
--               content, stored under the clientOffset `relay:delete:<id>` (so a deletion of one
--               message twice, or from two nodes at once, is one entry).
-- deleted       1 once a deletion deleted this message: its content is emptied in the same
--               transaction, and no replay, recovery or history page sends it again.
-- messages_room_id  makes a room's replay and history pages one ordered range read of the index.
--
-- A table made by an older schema.sql, or by the tutorial's own DDL (id, client_offset, content),
-- is upgraded in place at start: relay adds the columns it lacks (room, user_id, user_name,
-- created_at, deletes, deleted) and the index (ALGORITHM=INPLACE, LOCK=NONE: reads and writes go on meanwhile; no
-- row changes) and logs it.
CREATE TABLE IF NOT EXISTS messages (
  id            BIGINT UNSIGNED NOT NULL AUTO_INCREMENT,
  client_offset VARBINARY(1020) NOT NULL,
  content       TEXT CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
  room          VARBINARY(48) NOT NULL DEFAULT '',
  user_id       VARBINARY(128) NULL,
  user_name     VARBINARY(256) NULL,
  created_at    BIGINT UNSIGNED NOT NULL DEFAULT 0,
  deletes       BIGINT UNSIGNED NOT NULL DEFAULT 0,
  deleted       TINYINT UNSIGNED NOT NULL DEFAULT 0,
  PRIMARY KEY (id),
  UNIQUE KEY messages_client_offset (client_offset),
  KEY messages_room_id (room, id)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin
;

-- Socket.IO connection-state recovery (protocol.md §3, "Recovery"): a session that ended while
-- connected can be taken up again by its client, with the same socket id, until expires_at.
-- pid           the client's secret: 20 random url-safe characters, never derived from the sid.
-- sid           the Socket.IO socket id the client gets back.
-- expires_at    milliseconds since the Unix epoch (0: claimed, for the moment before the claim
--               deletes the row).
CREATE TABLE IF NOT EXISTS relay_sessions (
  pid           VARBINARY(32) NOT NULL,
  sid           VARBINARY(32) NOT NULL,
  expires_at    BIGINT UNSIGNED NOT NULL,
  PRIMARY KEY (pid),
  KEY relay_sessions_expires_at (expires_at)
) ENGINE = InnoDB
;

-- Bans (protocol.md, "Moderation"): a user (user_id: a token's sub) or an address (ip: CIDR text,
-- e.g. 10.0.0.0/8 or 1.2.3.4/32), from created_at until expires_at (ms since the Unix epoch; 0: for
-- good). Every node reads them every second: a ban applies on every node within a second.
CREATE TABLE IF NOT EXISTS relay_bans (
  id            BIGINT UNSIGNED NOT NULL AUTO_INCREMENT,
  user_id       VARBINARY(128) NULL,
  ip            VARBINARY(64) NULL,
  reason        TEXT CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NULL,
  created_at    BIGINT UNSIGNED NOT NULL,
  expires_at    BIGINT UNSIGNED NOT NULL,
  PRIMARY KEY (id)
) ENGINE = InnoDB
;

-- Every moderation action, who did it and when (protocol.md, "Moderation"): action is delete,
-- ban or unban (a disconnect through the server API is only logged); subject what it was done
-- to (a message id, a ban id, a user, an address); actor who did it (a moderator's sub, or for
-- the server API "api:" and the first 8 hex digits of the SHA-256 of the key used).
CREATE TABLE IF NOT EXISTS relay_moderation (
  id            BIGINT UNSIGNED NOT NULL AUTO_INCREMENT,
  at            BIGINT UNSIGNED NOT NULL,
  actor         VARBINARY(128) NOT NULL,
  action        VARBINARY(16) NOT NULL,
  subject       VARBINARY(512) NOT NULL,
  reason        TEXT CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NULL,
  PRIMARY KEY (id)
) ENGINE = InnoDB
;

-- Cluster mode (protocol.md §4a): the chat's identity, one random value per database, made by
-- the first node that starts in cluster mode. Nodes put it in their Redis keys and channels, so
-- two chats on one Redis never mix, even under one CLUSTER_NAME.
-- one           always 1: the table has one row.
-- chat          8 random url-safe characters.
CREATE TABLE IF NOT EXISTS relay_cluster (
  one           TINYINT UNSIGNED NOT NULL,
  chat          VARBINARY(32) NOT NULL,
  PRIMARY KEY (one)
) ENGINE = InnoDB
;

-- Cluster mode: the CLUSTER_NAME of the cluster on this database, recorded by the first node that
-- knows this table. The name is the commit lock's name: a node under another name would commit
-- without the others' lock, so it is refused at start.
-- one           always 1: the table has one row.
-- name          the CLUSTER_NAME (at most 48 characters).
CREATE TABLE IF NOT EXISTS relay_cluster_name (
  one           TINYINT UNSIGNED NOT NULL,
  name          VARBINARY(64) NOT NULL,
  PRIMARY KEY (one)
) ENGINE = InnoDB
;
