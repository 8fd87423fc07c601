//! The storage contract, one suite run against both implementations: MySQL/MariaDB (`TEST_MYSQL`,
//! a fresh database per test) and SQLite (a fresh file per test). Each property is one function
//! taking a [`Backend`]; `on_both_stores!` turns each into a test per backend, so the two can never
//! drift apart.

mod common;

use common::Backend;
use relay::chat::NewMessage;
use relay::log::{Author, Entry};
use relay::room::Room;
use relay::store::{Inserted, Store};

/// A fresh, empty database of one backend, removed on [`Fresh::remove`].
struct Fresh {
    backend: Backend,
    url: String,
    name: String,
}

impl Fresh {
    fn new(backend: Backend) -> Fresh {
        let (name, url) = backend.fresh();
        Fresh { backend, url, name }
    }

    async fn open(&self) -> Store {
        Store::connect(&self.url).await.expect("store opens")
    }

    /// Makes the empty database (or SQLite directory) itself, as an operator would before
    /// relay first starts on it.
    async fn create(&self) {
        match self.backend {
            Backend::Mysql => {
                use mysql_async::prelude::*;
                let mut conn = mysql_async::Conn::from_url(&common::mysql_base())
                    .await
                    .unwrap();
                conn.query_drop(format!("CREATE DATABASE `{}`", self.name))
                    .await
                    .unwrap();
                let _ = conn.disconnect().await;
            }
            Backend::Sqlite => std::fs::create_dir_all(common::sqlite_dir(&self.name)).unwrap(),
        }
    }

    /// Runs one SQL statement outside relay, as an operator would.
    async fn execute(&self, sql: &str) {
        match self.backend {
            Backend::Mysql => {
                use mysql_async::prelude::*;
                let mut conn = mysql_async::Conn::from_url(&self.url).await.unwrap();
                conn.query_drop(sql).await.unwrap();
                let _ = conn.disconnect().await;
            }
            Backend::Sqlite => {
                let path = common::sqlite_file(&self.name);
                let sql = sql.to_string();
                tokio::task::spawn_blocking(move || {
                    let conn = rusqlite::Connection::open(path).unwrap();
                    conn.busy_timeout(std::time::Duration::from_secs(5))
                        .unwrap();
                    conn.execute_batch(&sql).unwrap();
                })
                .await
                .unwrap();
            }
        }
    }

    /// The number a `SELECT COUNT(*) …` answers, read outside relay.
    async fn count(&self, sql: &str) -> u64 {
        match self.backend {
            Backend::Mysql => {
                use mysql_async::prelude::*;
                let mut conn = mysql_async::Conn::from_url(&self.url).await.unwrap();
                let n: Option<u64> = conn.query_first(sql).await.unwrap();
                let _ = conn.disconnect().await;
                n.unwrap()
            }
            Backend::Sqlite => {
                let path = common::sqlite_file(&self.name);
                let sql = sql.to_string();
                tokio::task::spawn_blocking(move || {
                    let conn = rusqlite::Connection::open(path).unwrap();
                    conn.query_row(&sql, [], |r| r.get::<_, i64>(0)).unwrap() as u64
                })
                .await
                .unwrap()
            }
        }
    }

    async fn remove(self) {
        self.backend.remove(&self.name).await
    }
}

fn msg(offset: &str, content: &str) -> NewMessage {
    in_room("", offset, content)
}

fn in_room(room: &str, offset: &str, content: &str) -> NewMessage {
    NewMessage {
        room: Room::named(room),
        author: Default::default(),
        at: 0,
        client_offset: offset.into(),
        content: content.into(),
        deletes: 0,
    }
}

async fn insert(store: &Store, messages: &[NewMessage]) -> Vec<Inserted> {
    let refs: Vec<&NewMessage> = messages.iter().collect();
    store.insert(&refs).await.expect("insert")
}

fn stored(result: &[Inserted]) -> Vec<u64> {
    result
        .iter()
        .map(|r| match r {
            Inserted::Stored(id) => *id,
            Inserted::Duplicate(id) => panic!("expected a new row, got duplicate of {id}"),
        })
        .collect()
}

/// Every row after `after`, read in pages of `page`.
async fn all_after(store: &Store, mut after: u64, page: usize) -> Vec<Entry> {
    let mut rows = Vec::new();
    loop {
        let got = store.page_after(None, after, page).await.expect("page");
        assert!(got.len() <= page, "a page holds at most its limit");
        let full = got.len() == page;
        if let Some(last) = got.last() {
            after = last.id;
        }
        rows.extend(got);
        if !full {
            return rows;
        }
    }
}

async fn empty_store_starts_at_zero(backend: Backend) {
    let db = Fresh::new(backend);
    let store = db.open().await;
    assert_eq!(store.max_id().await.unwrap(), 0);
    assert!(store.page_after(None, 0, 10).await.unwrap().is_empty());
    assert!(store.newest(10).await.unwrap().is_empty());
    assert!(store.insert(&[]).await.unwrap().is_empty());
    store.ping().await.unwrap();
    assert!(store.content_limit() >= 65_535);
    store.close().await;
    db.remove().await;
}

async fn ids_ascend_in_insertion_order(backend: Backend) {
    let db = Fresh::new(backend);
    let store = db.open().await;
    let first = stored(
        &insert(
            &store,
            &[msg("a", "one"), msg("b", "two"), msg("c", "three")],
        )
        .await,
    );
    let second = stored(&insert(&store, &[msg("d", "four")]).await);
    let ids: Vec<u64> = first.iter().chain(&second).copied().collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "{ids:?}");
    assert_eq!(store.max_id().await.unwrap(), ids[3]);
    let rows = store.page_after(None, 0, 10).await.unwrap();
    let expected: Vec<Entry> = ids
        .iter()
        .zip(["one", "two", "three", "four"])
        .map(|(&id, c)| Entry::message(id, c.into()))
        .collect();
    assert_eq!(rows, expected);
    assert_eq!(
        store.page_after(None, ids[1], 10).await.unwrap(),
        expected[2..]
    );
    store.close().await;
    db.remove().await;
}

async fn a_retry_gets_the_first_copys_id(backend: Backend) {
    let db = Fresh::new(backend);
    let store = db.open().await;
    let a = stored(&insert(&store, &[msg("a", "original")]).await)[0];
    // A retry in a later batch, between new messages: only the new ones are written.
    let r = insert(
        &store,
        &[
            msg("b", "new"),
            msg("a", "retried, other text"),
            msg("c", "newer"),
        ],
    )
    .await;
    assert!(matches!(r[0], Inserted::Stored(b) if b > a), "{r:?}");
    assert_eq!(r[1], Inserted::Duplicate(a));
    assert!(matches!((&r[0], &r[2]), (Inserted::Stored(b), Inserted::Stored(c)) if c > b));
    // A batch of nothing but retries writes nothing.
    let again = insert(&store, &[msg("c", "x"), msg("a", "y")]).await;
    assert_eq!(again[1], Inserted::Duplicate(a));
    let rows = all_after(&store, 0, 100).await;
    let contents: Vec<&str> = rows.iter().map(|r| r.content()).collect();
    assert_eq!(contents, ["original", "new", "newer"]);
    store.close().await;
    db.remove().await;
}

async fn offsets_match_byte_for_byte(backend: Backend) {
    let db = Fresh::new(backend);
    let store = db.open().await;
    // Case, trailing space, Unicode normal forms (é precomposed and decomposed), width.
    let offsets = ["off", "Off", "off ", "\u{e9}", "e\u{301}", "ａ", "a"];
    let batch: Vec<NewMessage> = offsets.iter().map(|o| msg(o, o)).collect();
    let ids = stored(&insert(&store, &batch).await);
    assert_eq!(ids.len(), offsets.len());
    // And each is found again exactly.
    let again = insert(&store, &batch).await;
    assert_eq!(
        again,
        ids.iter()
            .map(|&id| Inserted::Duplicate(id))
            .collect::<Vec<_>>()
    );
    store.close().await;
    db.remove().await;
}

async fn content_round_trips_exactly(backend: Backend) {
    let db = Fresh::new(backend);
    let store = db.open().await;
    let contents = [
        "plain".to_string(),
        "  padded  ".to_string(),
        "emoji 🎉👩‍👩‍👧 and 𝄞".to_string(),
        "right-to-left: שלום".to_string(),
        "lines\nand\ttabs\r\n".to_string(),
        "quotes ' \" \\ ; -- /*".to_string(),
        "x".repeat(60_000),
        String::new(),
    ];
    let batch: Vec<NewMessage> = contents
        .iter()
        .enumerate()
        .map(|(i, c)| msg(&format!("o{i}"), c))
        .collect();
    stored(&insert(&store, &batch).await);
    let rows = store.page_after(None, 0, 100).await.unwrap();
    let back: Vec<String> = rows.iter().map(|r| r.content().to_string()).collect();
    assert_eq!(back, contents);
    store.close().await;
    db.remove().await;
}

async fn pages_cover_every_row_once(backend: Backend) {
    let db = Fresh::new(backend);
    let store = db.open().await;
    let mut ids = Vec::new();
    let mut n = 0;
    for size in [1, 256, 7, 100, 256, 80] {
        let batch: Vec<NewMessage> = (n..n + size)
            .map(|i| msg(&format!("m{i}"), &format!("message {i}")))
            .collect();
        n += size;
        ids.extend(stored(&insert(&store, &batch).await));
    }
    assert_eq!(ids.len(), 700);
    for page in [1, 97, 500, 1000] {
        let rows = all_after(&store, 0, page).await;
        assert_eq!(
            rows.iter().map(|r| r.id).collect::<Vec<_>>(),
            ids,
            "pages of {page}"
        );
    }
    let from_middle = all_after(&store, ids[349], 64).await;
    assert_eq!(from_middle.len(), 350);
    assert_eq!(from_middle[0].content(), "message 350");
    let newest = store.newest(10).await.unwrap();
    assert_eq!(newest.iter().map(|r| r.id).collect::<Vec<_>>(), ids[690..]);
    assert_eq!(store.newest(5000).await.unwrap().len(), 700);
    store.close().await;
    db.remove().await;
}

async fn rows_and_offsets_survive_a_reopen(backend: Backend) {
    let db = Fresh::new(backend);
    let store = db.open().await;
    let ids = stored(&insert(&store, &[msg("a", "1"), msg("b", "2")]).await);
    store.close().await;

    let store = db.open().await;
    assert_eq!(store.max_id().await.unwrap(), ids[1]);
    let r = insert(&store, &[msg("b", "retry after restart"), msg("c", "3")]).await;
    assert_eq!(r[0], Inserted::Duplicate(ids[1]));
    assert!(matches!(r[1], Inserted::Stored(c) if c > ids[1]));
    assert_eq!(all_after(&store, 0, 10).await.len(), 3);
    store.close().await;
    db.remove().await;
}

async fn ids_are_never_reused(backend: Backend) {
    let db = Fresh::new(backend);
    let store = db.open().await;
    let ids = stored(&insert(&store, &[msg("a", "1"), msg("b", "2"), msg("c", "3")]).await);
    // An operator deletes the newest row: a client that saw it must not miss the next one.
    db.execute(&format!("DELETE FROM messages WHERE id = {}", ids[2]))
        .await;
    let next = stored(&insert(&store, &[msg("d", "4")]).await)[0];
    assert!(next > ids[2], "id {next} reused (deleted {})", ids[2]);
    store.close().await;
    db.remove().await;
}

async fn reads_see_each_commit_as_soon_as_insert_returns(backend: Backend) {
    let db = Fresh::new(backend);
    let store = db.open().await;
    // Readers page through the table while the writer commits; each sees ascending ids and,
    // once an insert has returned, every row it stored.
    let writer = {
        let store = store.clone();
        tokio::spawn(async move {
            let mut last = 0;
            for b in 0..40 {
                let batch: Vec<NewMessage> =
                    (0..25).map(|i| msg(&format!("w{b}-{i}"), "x")).collect();
                let ids = stored(&insert(&store, &batch).await);
                last = *ids.last().unwrap();
                let seen = store.max_id().await.unwrap();
                assert!(
                    seen >= last,
                    "insert returned {last} but max_id says {seen}"
                );
            }
            last
        })
    };
    let mut readers = Vec::new();
    for _ in 0..3 {
        let store = store.clone();
        readers.push(tokio::spawn(async move {
            for _ in 0..20 {
                let rows = all_after(&store, 0, 50).await;
                assert!(rows.windows(2).all(|w| w[0].id < w[1].id));
                tokio::task::yield_now().await;
            }
        }));
    }
    let last = writer.await.unwrap();
    for r in readers {
        r.await.unwrap();
    }
    assert_eq!(all_after(&store, 0, 300).await.len(), 1000);
    assert_eq!(store.max_id().await.unwrap(), last);
    store.close().await;
    db.remove().await;
}

async fn the_batch_limit_fits_in_one_insert(backend: Backend) {
    let db = Fresh::new(backend);
    let store = db.open().await;
    let batch: Vec<NewMessage> = (0..relay::store::MAX_BATCH)
        .map(|i| msg(&format!("{i:0>255}"), &"y".repeat(200)))
        .collect();
    let ids = stored(&insert(&store, &batch).await);
    assert_eq!(ids.len(), relay::store::MAX_BATCH);
    assert!(ids.windows(2).all(|w| w[0] < w[1]));
    store.close().await;
    db.remove().await;
}

async fn pages_before_an_id_are_the_newest_rows_below_it(backend: Backend) {
    let db = Fresh::new(backend);
    let store = db.open().await;
    let batch: Vec<NewMessage> = (0..30)
        .map(|i| msg(&format!("b{i}"), &format!("before {i}")))
        .collect();
    let ids = stored(&insert(&store, &batch).await);
    let page = store.page_before(&Room::main(), ids[20], 5).await.unwrap();
    assert_eq!(page.iter().map(|r| r.id).collect::<Vec<_>>(), ids[15..20]);
    assert_eq!(page[0].content(), "before 15");
    // Paging down to the first row, with no duplicate at the seams.
    let mut seen = Vec::new();
    let mut before = u64::MAX;
    loop {
        let page = store.page_before(&Room::main(), before, 7).await.unwrap();
        let Some(first) = page.first() else { break };
        before = first.id;
        seen.splice(0..0, page.iter().map(|r| r.id));
    }
    assert_eq!(seen, ids);
    assert!(store
        .page_before(&Room::main(), ids[0], 10)
        .await
        .unwrap()
        .is_empty());
    store.close().await;
    db.remove().await;
}

async fn a_saved_session_is_claimed_once_until_it_is_saved_again(backend: Backend) {
    use relay::store::SessionRecord;
    let db = Fresh::new(backend);
    let store = db.open().await;
    let record = |pid: &str, sid: &str, expires_at_ms| SessionRecord {
        pid: pid.into(),
        sid: sid.into(),
        expires_at_ms,
    };
    let now = 1_000_000;
    store
        .save_sessions(
            &[record("p1", "s1", now + 100), record("p2", "s2", now - 1)],
            now,
        )
        .await
        .unwrap();
    assert_eq!(store.claim_session("nope", now).await.unwrap(), None);
    assert_eq!(
        store.claim_session("p2", now).await.unwrap(),
        None,
        "expired"
    );
    assert_eq!(
        store.claim_session("p1", now).await.unwrap().as_deref(),
        Some("s1")
    );
    assert_eq!(store.claim_session("p1", now).await.unwrap(), None, "held");
    // The client disconnects again: the same pid can be taken up again.
    store
        .save_sessions(&[record("p1", "s1", now + 200)], now)
        .await
        .unwrap();
    assert_eq!(
        store
            .claim_session("p1", now + 150)
            .await
            .unwrap()
            .as_deref(),
        Some("s1")
    );
    assert_eq!(store.claim_session("p1", now + 150).await.unwrap(), None);
    // A claimed session's row is gone: one that then ends cleanly is not saved again, and
    // nothing of it stays (before, every such row stayed for ever).
    let rows = "SELECT COUNT(*) FROM relay_sessions";
    assert_eq!(db.count(rows).await, 0);
    // Rows an older relay left claimed (expires_at 0) go with the next purge.
    db.execute("INSERT INTO relay_sessions (pid, sid, expires_at) VALUES ('old', 's0', 0)")
        .await;
    store
        .save_sessions(&[record("p3", "s3", now + 100)], now)
        .await
        .unwrap();
    assert_eq!(db.count(rows).await, 1, "only p3 left");
    store.close().await;
    db.remove().await;
}

/// Rooms share one id sequence and one clientOffset space; a room's pages hold its rows alone.
async fn rooms_page_apart_on_one_sequence(backend: Backend) {
    let db = Fresh::new(backend);
    let store = db.open().await;
    let mut batch = Vec::new();
    for i in 0..30 {
        let room = ["", "general", "help"][i % 3];
        batch.push(in_room(room, &format!("r-{i}"), &format!("{room}:{i}")));
    }
    let ids: Vec<u64> = insert(&store, &batch)
        .await
        .into_iter()
        .map(|r| match r {
            Inserted::Stored(id) => id,
            other => panic!("{other:?}"),
        })
        .collect();
    // One clientOffset space: the same offset in another room is a duplicate of the first.
    let again = insert(&store, &[in_room("help", "r-0", "other")]).await;
    assert_eq!(again, [Inserted::Duplicate(ids[0])]);
    let general = Room::named("general");
    let page = store.page_after(Some(&general), 0, 100).await.unwrap();
    let want: Vec<u64> = (0..30).filter(|i| i % 3 == 1).map(|i| ids[i]).collect();
    assert_eq!(page.iter().map(|e| e.id).collect::<Vec<_>>(), want);
    assert!(page
        .iter()
        .all(|e| e.room == general && e.content().starts_with("general:")));
    let after = store.page_after(Some(&general), want[3], 2).await.unwrap();
    assert_eq!(after.iter().map(|e| e.id).collect::<Vec<_>>(), want[4..6]);
    let before = store.page_before(&general, want[5], 3).await.unwrap();
    assert_eq!(before.iter().map(|e| e.id).collect::<Vec<_>>(), want[2..5]);
    // `/` is its own room too, and the whole log still reads in one chain with each row's room.
    let main = store.page_after(Some(&Room::main()), 0, 100).await.unwrap();
    assert_eq!(main.len(), 10);
    let all = store.page_after(None, 0, 100).await.unwrap();
    assert_eq!(all.iter().map(|e| e.id).collect::<Vec<_>>(), ids);
    assert_eq!(all[1].room, general);
    assert_eq!(all[2].room, Room::named("help"));
    let newest = store.newest(2).await.unwrap();
    assert_eq!(newest[1].room, Room::named("help"));
    assert_eq!(
        store.rooms().await.unwrap(),
        [
            (Room::main(), ids[27]),
            (general.clone(), ids[28]),
            (Room::named("help"), ids[29])
        ]
    );
    store.close().await;
    db.remove().await;
}

/// A table made by the tutorial's own DDL (no room, author or time) is upgraded in place at
/// start: its rows are `/`'s, of no known author or time, untouched; rooms and authors work on it.
async fn a_table_from_before_rooms_is_upgraded_in_place(backend: Backend) {
    let db = Fresh::new(backend);
    db.create().await;
    db.execute(match backend {
        Backend::Mysql => {
            "CREATE TABLE messages (id INT PRIMARY KEY AUTO_INCREMENT, \
             client_offset VARCHAR(255) UNIQUE, content TEXT); \
             INSERT INTO messages (client_offset, content) VALUES ('a', 'one'), ('b', 'two'); \
             CREATE TABLE relay_moderation (id BIGINT UNSIGNED NOT NULL AUTO_INCREMENT, \
             at BIGINT UNSIGNED NOT NULL, actor VARBINARY(128) NOT NULL, \
             action VARBINARY(16) NOT NULL, subject VARBINARY(128) NOT NULL, \
             reason TEXT CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NULL, PRIMARY KEY (id))"
        }
        Backend::Sqlite => {
            "CREATE TABLE messages (id INTEGER PRIMARY KEY AUTOINCREMENT, \
             client_offset TEXT UNIQUE, content TEXT); \
             INSERT INTO messages (client_offset, content) VALUES ('a', 'one'), ('b', 'two')"
        }
    })
    .await;
    let store = db.open().await;
    // relay_moderation.subject, 128 bytes before, takes a ban's subject: a 128-byte user and
    // an IPv6 block.
    let subject = format!(
        "ban 1: user {} ip 2001:db8:1234:5678:9abc:def0:1234:5678/128",
        "u".repeat(128)
    );
    let action = relay::store::Action {
        at: 1,
        actor: "api".into(),
        action: "ban",
        subject,
        reason: None,
    };
    store.record_action(&action).await.expect("recorded");
    let old = store.page_after(None, 0, 10).await.unwrap();
    assert_eq!(
        old,
        [
            Entry::message(1, "one".into()),
            Entry::message(2, "two".into())
        ]
    );
    let mut authored = in_room("general", "c", "three");
    authored.author = Author {
        user: Some("u1".into()),
        name: Some("Ana é".into()),
    };
    authored.at = 1_700_000_000_123;
    insert(&store, &[authored]).await;
    let general = store
        .page_after(Some(&Room::named("general")), 0, 10)
        .await
        .unwrap();
    assert_eq!(general.iter().map(|e| e.id).collect::<Vec<_>>(), [3]);
    assert_eq!(general[0].author.user.as_deref(), Some("u1"));
    assert_eq!(general[0].author.name.as_deref(), Some("Ana é"));
    assert_eq!(general[0].at, 1_700_000_000_123);
    assert_eq!(
        (old[0].author.user.clone(), old[0].at),
        (None, 0),
        "older rows: unknown"
    );
    assert_eq!(
        store.page_after(Some(&Room::main()), 0, 10).await.unwrap(),
        old
    );
    // A deletion on the upgraded table: its own entry, and its message's content gone.
    let mut deletion = msg(&relay::chat::deletion_offset(1), "");
    deletion.deletes = 1;
    insert(&store, &[deletion]).await;
    let all = store.page_after(None, 0, 10).await.unwrap();
    assert_eq!(
        (all[0].id, all[0].is_deleted(), all[0].content()),
        (1, true, "")
    );
    assert_eq!((all[3].id, all[3].deletes()), (4, Some(1)));
    assert_eq!(
        store.page_before(&Room::main(), 10, 10).await.unwrap(),
        [Entry::message(2, "two".into())],
        "history holds neither the deleted message nor its deletion"
    );
    store.close().await;
    // Starting again on the upgraded table changes nothing.
    let store = db.open().await;
    assert_eq!(store.page_after(None, 0, 10).await.unwrap().len(), 4);
    store.close().await;
    db.remove().await;
}

on_both_stores!(
    rooms_page_apart_on_one_sequence,
    a_table_from_before_rooms_is_upgraded_in_place,
    pages_before_an_id_are_the_newest_rows_below_it,
    a_saved_session_is_claimed_once_until_it_is_saved_again,
    empty_store_starts_at_zero,
    ids_ascend_in_insertion_order,
    a_retry_gets_the_first_copys_id,
    offsets_match_byte_for_byte,
    content_round_trips_exactly,
    pages_cover_every_row_once,
    rows_and_offsets_survive_a_reopen,
    ids_are_never_reused,
    reads_see_each_commit_as_soon_as_insert_returns,
    the_batch_limit_fits_in_one_insert,
);

#[tokio::test]
async fn unknown_urls_are_refused_with_the_expected_forms() {
    for url in ["postgres://x/y", "relay.db", "sqlite:", "sqlite::memory:"] {
        let err = Store::connect(url).await.err().expect("refused");
        assert!(err.to_string().contains("DATABASE_URL"), "{url}: {err}");
    }
}
