//! The page and the client library, built into relay: `static/` as it was when relay was
//! compiled, or the page read from `STATIC_DIR` on every request.

use bytes::Bytes;
use std::path::Path;

/// The socket.io-client release the page is written for, and whose browser build relay serves.
pub const CLIENT_VERSION: &str = "4.8.3";

/// `dist/socket.io.min.js` of the npm package socket.io-client at [`CLIENT_VERSION`], unmodified
/// (the Node test suite compares it with the package it installs).
pub const CLIENT_JS: &[u8] = include_bytes!("../../static/vendor/socket.io.min.js");

/// The page's files, by name, with their content types.
const PAGE: [(&str, &str, &[u8]); 4] = [
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
];

/// The page file a path names (`/` is `index.html`, `/favicon.ico` the SVG), with its type.
pub fn page_file(path: &str) -> Option<(&'static str, &'static str)> {
    let name = match path {
        "/" | "/index.html" => "index.html",
        "/favicon.ico" => "favicon.svg",
        other => other.strip_prefix('/')?,
    };
    PAGE.iter()
        .find(|(file, _, _)| *file == name)
        .map(|(file, content_type, _)| (*file, *content_type))
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
    fn only_the_page_files_are_named() {
        assert_eq!(page_file("/").map(|f| f.0), Some("index.html"));
        assert_eq!(page_file("/favicon.ico").map(|f| f.0), Some("favicon.svg"));
        assert_eq!(
            page_file("/app.js").map(|f| f.1),
            Some("text/javascript; charset=utf-8")
        );
        assert_eq!(page_file("/../Cargo.toml"), None);
        assert_eq!(page_file("/vendor/socket.io.min.js"), None);
    }
}
