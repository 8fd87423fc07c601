-- relay's one table. Load by hand with `mariadb chat < schema.sql` (or `mysql chat < schema.sql`);
-- relay also runs this file at start, so it must stay idempotent.
--
-- id            BIGINT: at tens of thousands of messages a second an INT runs out in days.
-- client_offset the client's idempotency key (its retry of a message carries the same one).
--               VARBINARY so that it compares byte for byte on MySQL 8 and MariaDB alike: no
--               case folding and no PAD SPACE ("a" and "a " are different offsets). 1020 bytes
--               hold the 255 characters relay accepts.
-- content       utf8mb4 TEXT (65,535 bytes): any Unicode text, stored byte-exact.
CREATE TABLE IF NOT EXISTS messages (
  id            BIGINT UNSIGNED NOT NULL AUTO_INCREMENT,
  client_offset VARBINARY(1020) NOT NULL,
  content       TEXT CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
  PRIMARY KEY (id),
  UNIQUE KEY messages_client_offset (client_offset)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin
