//! Which browser pages may open a session (the `Origin` check, RFC 6454 origins): the server's own
//! page always, and the origins `ALLOWED_ORIGINS` lists (or any, with `*`). Requests without an
//! `Origin` header do not come from a browser page and are not concerned.
//!
//! Origins compare as origins, not as header text: scheme and host case-insensitively, and the
//! port with the scheme's default filled in, so `https://chat.example.com` is the origin of a
//! request whose `Host` is `chat.example.com:443` (what nginx's common
//! `proxy_set_header Host $host:$server_port` sends) or `chat.example.com`.
//!
//! Pure: header text in, a decision out.

/// An origin: `scheme://host[:port]`, the port filled in from the scheme when absent.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Origin {
    scheme: String,
    host: String,
    port: Option<u16>,
}

/// The port a scheme implies when none is written.
fn default_port(scheme: &str) -> Option<u16> {
    match scheme {
        "http" | "ws" => Some(80),
        "https" | "wss" => Some(443),
        _ => None,
    }
}

/// Splits `host[:port]` (a bracketed IPv6 literal keeps its colons); lowercases the host.
fn host_and_port(authority: &str) -> Option<(String, Option<u16>)> {
    let (host, port) = if let Some(rest) = authority.strip_prefix('[') {
        let (inner, after) = rest.split_once(']')?;
        let port = match after {
            "" => None,
            p => Some(p.strip_prefix(':')?),
        };
        (format!("[{inner}]"), port)
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h.to_string(), Some(p)),
            None => (authority.to_string(), None),
        }
    };
    if host.is_empty() || host.contains(['/', '@', ' ']) {
        return None;
    }
    let port = match port {
        Some(p) => Some(p.parse::<u16>().ok()?),
        None => None,
    };
    Some((host.to_ascii_lowercase(), port))
}

impl Origin {
    fn parse(text: &str) -> Option<Origin> {
        let (scheme, rest) = text.trim().trim_end_matches('/').split_once("://")?;
        let scheme = scheme.to_ascii_lowercase();
        let (host, port) = host_and_port(rest)?;
        let port = port.or_else(|| default_port(&scheme));
        Some(Origin { scheme, host, port })
    }

    /// Whether this is the origin of a request with this `Host` header. The scheme is not
    /// compared: behind a TLS-terminating proxy relay cannot know the request's. A `Host` without
    /// a port matches an origin on its scheme's default port.
    fn is_served_at(&self, host_header: &str) -> bool {
        let Some((host, port)) = host_and_port(host_header.trim()) else {
            return false;
        };
        host == self.host
            && match port {
                Some(p) => self.port == Some(p),
                None => self.port.is_some() && self.port == default_port(&self.scheme),
            }
    }
}

/// The configured rule.
#[derive(Debug, Clone)]
pub struct OriginPolicy {
    any: bool,
    allowed: Vec<Origin>,
}

impl OriginPolicy {
    /// From `ALLOWED_ORIGINS`' entries: `*`, or origins like `https://chat.example.com`. Empty
    /// entries are skipped. Errors name the entry that is not an origin.
    pub fn new(entries: &[String]) -> Result<OriginPolicy, String> {
        let mut policy = OriginPolicy {
            any: false,
            allowed: Vec::new(),
        };
        for entry in entries.iter().map(|e| e.trim()).filter(|e| !e.is_empty()) {
            if entry == "*" {
                policy.any = true;
            } else {
                let origin = Origin::parse(entry).ok_or_else(|| {
                    format!("ALLOWED_ORIGINS: {entry:?} is not an origin (scheme://host[:port])")
                })?;
                policy.allowed.push(origin);
            }
        }
        Ok(policy)
    }

    /// Whether a request with these `Origin` and `Host` headers may open a session.
    pub fn allows(&self, origin: Option<&str>, host: Option<&str>) -> bool {
        let Some(origin) = origin else {
            return true; // not a browser page
        };
        if self.any {
            return true;
        }
        let Some(origin) = Origin::parse(origin) else {
            return false; // "null" (a file:// page, a sandboxed frame) and anything unreadable
        };
        host.is_some_and(|h| origin.is_served_at(h)) || self.allowed.contains(&origin)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(entries: &[&str]) -> OriginPolicy {
        OriginPolicy::new(&entries.iter().map(|e| e.to_string()).collect::<Vec<_>>()).unwrap()
    }

    #[test]
    fn same_origin_compares_origins_not_text() {
        let p = policy(&[]);
        let ok = |o: &str, h: &str| p.allows(Some(o), Some(h));
        assert!(ok("https://chat.example.com", "chat.example.com:443"));
        assert!(ok("https://chat.example.com", "chat.example.com"));
        assert!(ok("http://chat.example.com", "chat.example.com:80"));
        assert!(ok("HTTP://Chat.Example.COM", "chat.example.com"));
        assert!(ok("http://127.0.0.1:3000", "127.0.0.1:3000"));
        assert!(ok("http://[::1]:3000", "[::1]:3000"));
        assert!(ok("https://chat.example.com/", "chat.example.com"));
        // A different port, host or a non-origin stays refused.
        assert!(!ok("https://chat.example.com", "chat.example.com:80"));
        assert!(!ok("http://chat.example.com:8080", "chat.example.com"));
        assert!(!ok("http://127.0.0.1:3001", "127.0.0.1:3000"));
        assert!(!ok("http://evil.example.com", "chat.example.com"));
        assert!(!ok("http://chat.example.com.evil.com", "chat.example.com"));
        assert!(!ok("null", "chat.example.com"));
        assert!(!p.allows(Some("http://chat.example.com"), None));
        // Not a browser page.
        assert!(p.allows(None, None));
    }

    #[test]
    fn listed_origins_add_to_the_page_own() {
        let p = policy(&[
            "https://other.example.com",
            " http://third.example.com:8080/ ",
            "",
        ]);
        assert!(p.allows(
            Some("https://other.example.com:443"),
            Some("chat.example.com")
        ));
        assert!(p.allows(
            Some("http://third.example.com:8080"),
            Some("chat.example.com")
        ));
        assert!(p.allows(Some("http://chat.example.com"), Some("chat.example.com")));
        assert!(!p.allows(Some("http://other.example.com"), Some("chat.example.com")));
        assert!(policy(&["*"]).allows(Some("null"), None));
    }

    #[test]
    fn entries_that_are_not_origins_are_refused_with_their_text() {
        let err = OriginPolicy::new(&["chat.example.com".to_string()]).unwrap_err();
        assert!(err.contains("\"chat.example.com\""), "{err}");
        assert!(OriginPolicy::new(&["https://x:99999".to_string()]).is_err());
    }
}
