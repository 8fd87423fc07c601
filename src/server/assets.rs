//! The page and the client library, built into relay: `static/` as it was when relay was
//! compiled, or the page read from `STATIC_DIR` on every request.

use bytes::Bytes;
use std::path::Path;

/// The socket.io-client release the page is written for, and whose browser build relay serves.
pub const CLIENT_VERSION: &str = "4.8.3";

/// The files of the npm package socket.io-client at [`CLIENT_VERSION`] (its `dist/`) that the
/// stock server serves under `/socket.io/` (socket.io's `serveClient`: the builds pages load and
/// the source maps browsers' devtools ask for), unmodified: the Node test suite compares each
/// with the package it installs.
const CLIENT_FILES: [(&str, &[u8]); 8] = [
    (
        "socket.io.js",
        include_bytes!("../../static/vendor/socket.io.js"),
    ),
    (
        "socket.io.js.map",
        include_bytes!("../../static/vendor/socket.io.js.map"),
    ),
    (
        "socket.io.min.js",
        include_bytes!("../../static/vendor/socket.io.min.js"),
    ),
    (
        "socket.io.min.js.map",
        include_bytes!("../../static/vendor/socket.io.min.js.map"),
    ),
    (
        "socket.io.esm.min.js",
        include_bytes!("../../static/vendor/socket.io.esm.min.js"),
    ),
    (
        "socket.io.esm.min.js.map",
        include_bytes!("../../static/vendor/socket.io.esm.min.js.map"),
    ),
    (
        "socket.io.msgpack.min.js",
        include_bytes!("../../static/vendor/socket.io.msgpack.min.js"),
    ),
    (
        "socket.io.msgpack.min.js.map",
        include_bytes!("../../static/vendor/socket.io.msgpack.min.js.map"),
    ),
];

/// The client file a path under `/socket.io/` names, with its bytes and content type.
pub fn client_file(path: &str) -> Option<(&'static [u8], &'static str)> {
    let name = path.strip_prefix("/socket.io/")?;
    let (_, bytes) = CLIENT_FILES.iter().find(|(file, _)| *file == name)?;
    let content_type = if name.ends_with(".map") {
        "application/json; charset=utf-8"
    } else {
        "application/javascript; charset=utf-8"
    };
    Some((bytes, content_type))
}

/// The page's files, by name, with their content types.
const PAGE: [(&str, &str, &[u8]); 7] = [
    (
        "index.html",
        "text/html; charset=utf-8",
        include_bytes!("../../static/index.html"),
    ),
    (
        "app.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../static/app.js"),
    ),
    (
        "style.css",
        "text/css; charset=utf-8",
        include_bytes!("../../static/style.css"),
    ),
    (
        "favicon.svg",
        "image/svg+xml",
        include_bytes!("../../static/favicon.svg"),
    ),
    (
        "admin.html",
        "text/html; charset=utf-8",
        include_bytes!("../../static/admin.html"),
    ),
    (
        "admin.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../static/admin.js"),
    ),
    (
        "admin.css",
        "text/css; charset=utf-8",
        include_bytes!("../../static/admin.css"),
    ),
];

/// The page file a path names (`/` is `index.html`, `/favicon.ico` the SVG), with its type.
pub fn page_file(path: &str) -> Option<(&'static str, &'static str)> {
    let name = match path {
        "/" | "/index.html" => "index.html",
        "/admin" => "admin.html",
        "/favicon.ico" => "favicon.svg",
        other => other.strip_prefix('/')?,
    };
    PAGE.iter()
        .find(|(file, _, _)| *file == name)
        .map(|(file, content_type, _)| (*file, *content_type))
}

/// The page with the server's message limit written into its
/// `<meta name="relay-max-message-bytes" content="…">` (the page checks lengths against it); a page
/// without that tag is left as it is.
pub fn with_max_message_bytes(page: Bytes, max: usize) -> Bytes {
    const TAG: &[u8] = b"<meta name=\"relay-max-message-bytes\" content=\"";
    let Some(start) = page.windows(TAG.len()).position(|w| w == TAG) else {
        return page;
    };
    let value = start + TAG.len();
    let Some(len) = page[value..].iter().position(|&b| b == b'"') else {
        return page;
    };
    let mut out = Vec::with_capacity(page.len() + 8);
    out.extend_from_slice(&page[..value]);
    out.extend_from_slice(max.to_string().as_bytes());
    out.extend_from_slice(&page[value + len..]);
    Bytes::from(out)
}

/// A page file's bytes: from `dir` when given (only the page's own files, by exact name: nothing
/// else in the folder leaks), else the built-in copy. `name` comes from [`page_file`].
pub async fn read_page_file(dir: Option<&Path>, name: &str) -> std::io::Result<Bytes> {
    match dir {
        Some(dir) => tokio::fs::read(dir.join(name)).await.map(Bytes::from),
        None => PAGE
            .iter()
            .find(|(file, _, _)| *file == name)
            .map(|(_, _, bytes)| Bytes::from_static(bytes))
            .ok_or_else(|| std::io::ErrorKind::NotFound.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_gets_the_servers_message_limit() {
        let page = Bytes::from_static(
            b"<head><meta name=\"relay-max-message-bytes\" content=\"65535\"></head>",
        );
        assert_eq!(
            with_max_message_bytes(page, 100),
            Bytes::from_static(
                b"<head><meta name=\"relay-max-message-bytes\" content=\"100\"></head>"
            )
        );
        let other = Bytes::from_static(b"<head></head>");
        assert_eq!(with_max_message_bytes(other.clone(), 100), other);
        let built_in = read_page_file_now("index.html");
        assert!(with_max_message_bytes(built_in, 7)
            .windows(11)
            .any(|w| w == b"content=\"7\""));
    }

    fn read_page_file_now(name: &str) -> Bytes {
        PAGE.iter()
            .find(|(file, _, _)| *file == name)
            .map(|(_, _, bytes)| Bytes::from_static(bytes))
            .unwrap()
    }

    #[test]
    fn the_client_files_are_the_stock_servers() {
        let (js, t) = client_file("/socket.io/socket.io.js").unwrap();
        assert!(t.starts_with("application/javascript"));
        assert!(js.ends_with(b"//# sourceMappingURL=socket.io.js.map\n"));
        let (min, _) = client_file("/socket.io/socket.io.min.js").unwrap();
        assert!(min.ends_with(b"//# sourceMappingURL=socket.io.min.js.map\n"));
        let (map, t) = client_file("/socket.io/socket.io.min.js.map").unwrap();
        assert!(t.starts_with("application/json"));
        assert!(map.starts_with(b"{"));
        assert!(client_file("/socket.io/package.json").is_none());
        assert!(client_file("/socket.io.js").is_none());
    }

    #[test]
    fn only_the_page_files_are_named() {
        assert_eq!(page_file("/").map(|f| f.0), Some("index.html"));
        assert_eq!(page_file("/admin").map(|f| f.0), Some("admin.html"));
        assert_eq!(
            page_file("/admin.js").map(|f| f.1),
            Some("text/javascript; charset=utf-8")
        );
        assert_eq!(
            page_file("/admin.css").map(|f| f.1),
            Some("text/css; charset=utf-8")
        );
        assert_eq!(page_file("/favicon.ico").map(|f| f.0), Some("favicon.svg"));
        assert_eq!(
            page_file("/app.js").map(|f| f.1),
            Some("text/javascript; charset=utf-8")
        );
        assert_eq!(page_file("/../Cargo.toml"), None);
        assert_eq!(page_file("/vendor/socket.io.min.js"), None);
    }
}
