//! Who a socket speaks for: a user verified from a signed token (a JWT in the CONNECT payload's
//! `auth.token`, the socket.io convention), or a guest who may give a name (`auth.name`), never
//! verified (protocol.md, "Identity"). Every message records its [`Author`].
//!
//! Tokens are checked with `jsonwebtoken` against the configured keys only: an HS256 secret
//! (`JWT_SECRET`) and/or a public key (`JWT_PUBLIC_KEY`, a PEM file: RS256, ES256, ES384 or
//! EdDSA). A token is accepted only with its key's algorithm, so `alg: none`, or an RS256 public
//! key used as an HMAC secret, never pass.
//!
//! Pure: CPU only, no I/O after start.
//!
//! Must not: decide what a user may do beyond the room list its token carries (moderation does).

use crate::room::Room;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use serde_json::Value;
use std::sync::Arc;

/// Longest token read, in bytes.
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;
/// Longest user id (`sub`), in bytes.
pub const MAX_USER_BYTES: usize = 128;
/// Longest display name from a token, in characters.
pub const MAX_TOKEN_NAME_CHARS: usize = 64;
/// Longest guest name, in characters (after trimming).
pub const MAX_GUEST_NAME_CHARS: usize = 32;
/// Clock leeway for `exp` and `nbf`, in seconds.
pub const LEEWAY_SECS: u64 = 5;

/// Who said a message: the verified user id (`sub`; `None` for a guest) and the display name
/// (the token's `name`, or the guest's own; `None` when there is none). Cheap to clone.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Author {
    pub user: Option<Arc<str>>,
    pub name: Option<Arc<str>>,
}

impl Author {
    /// A guest: no verified id.
    pub fn is_guest(&self) -> bool {
        self.user.is_none()
    }
}

/// A socket's identity, decided at its CONNECT.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Identity {
    pub author: Author,
    /// The token's `exp` (seconds since the epoch), for a verified user.
    pub expires: Option<u64>,
    /// The token's `role` (`moderator`, `admin`), kept for moderation.
    pub role: Option<String>,
}

/// `AUTH`: who may connect.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum AuthMode {
    /// Anyone; a token, when given and a key is configured, is verified.
    #[default]
    Guest,
    /// Only sockets with a valid token, in every namespace, `/` included.
    Token,
}

/// The claims relay reads.
#[derive(Debug, Deserialize)]
struct Claims {
    sub: Option<String>,
    name: Option<String>,
    /// A NumericDate: seconds since the epoch, a fraction allowed (RFC 7519 §2).
    exp: Option<f64>,
    /// As `exp`. jsonwebtoken checks both only when they read as a `u64`: a negative or
    /// fractional one, or one beyond `u64`, is checked here.
    nbf: Option<f64>,
    role: Option<String>,
    rooms: Option<RoomsClaim>,
}

/// `rooms`: a list of room names (`/` for the main one), or `"*"`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum RoomsClaim {
    All(String),
    List(Vec<String>),
}

/// Decides identities at CONNECT from the configured mode and keys.
pub struct Verifier {
    mode: AuthMode,
    keys: Vec<(DecodingKey, Algorithm)>,
    issuer: Option<String>,
    audience: Option<String>,
}

impl Verifier {
    /// From the settings: `secret` (HS256), `public_key_pem` (the contents of a PEM file: an RSA,
    /// EC P-256 or P-384, or Ed25519 public key), and the optional issuer and audience to
    /// require. Errors: a PEM that is none of those (a private key among them); `token` mode
    /// without any key.
    pub fn new(
        mode: AuthMode,
        secret: Option<&str>,
        public_key_pem: Option<&[u8]>,
        issuer: Option<String>,
        audience: Option<String>,
    ) -> Result<Verifier, String> {
        let mut keys = Vec::new();
        if let Some(secret) = secret.filter(|s| !s.is_empty()) {
            keys.push((
                DecodingKey::from_secret(secret.as_bytes()),
                Algorithm::HS256,
            ));
        }
        if let Some(pem) = public_key_pem {
            keys.push(public_key(pem)?);
        }
        if mode == AuthMode::Token && keys.is_empty() {
            return Err("AUTH=token needs JWT_SECRET or JWT_PUBLIC_KEY".into());
        }
        Ok(Verifier {
            mode,
            keys,
            issuer,
            audience,
        })
    }

    /// Guests only, no keys (tests, and relay without identity settings).
    pub fn guests() -> Verifier {
        Verifier {
            mode: AuthMode::Guest,
            keys: Vec::new(),
            issuer: None,
            audience: None,
        }
    }

    /// Whether every socket needs a valid token (`AUTH=token`).
    pub fn requires_token(&self) -> bool {
        self.mode == AuthMode::Token
    }

    /// The identity a CONNECT to `room` with `auth` gets (times checked against this machine's
    /// clock, by `jsonwebtoken`), or
    /// the CONNECT_ERROR message that refuses it: `token required`, `invalid token: <reason>`,
    /// `not allowed in this room`, `invalid name: <reason>`.
    pub fn identify(&self, auth: Option<&Value>, room: &Room) -> Result<Identity, String> {
        let token = auth.and_then(|a| a.get("token"));
        let token = match token {
            None | Some(Value::Null) => None,
            Some(Value::String(t)) => Some(t.as_str()),
            Some(_) => return Err("invalid token: not a JWT".into()),
        };
        match (token, self.keys.is_empty()) {
            (Some(token), false) => self.verify(token, room),
            _ if self.mode == AuthMode::Token => Err("token required".into()),
            _ => Ok(Identity {
                author: Author {
                    user: None,
                    name: guest_name(auth)?,
                },
                ..Identity::default()
            }),
        }
    }

    fn verify(&self, token: &str, room: &Room) -> Result<Identity, String> {
        let invalid = |why: &str| Err(format!("invalid token: {why}"));
        if token.len() > MAX_TOKEN_BYTES {
            return invalid("over 8 KiB");
        }
        let header = match jsonwebtoken::decode_header(token) {
            Ok(h) => h,
            Err(_) => return invalid("not a JWT"),
        };
        let Some((key, alg)) = self.keys.iter().find(|(_, alg)| *alg == header.alg) else {
            return invalid("signed with an algorithm this server does not take");
        };
        let mut validation = Validation::new(*alg);
        validation.leeway = LEEWAY_SECS;
        validation.validate_nbf = true;
        validation.validate_exp = true;
        validation.required_spec_claims.clear();
        // jsonwebtoken checks `iss` and `aud` only when the token has them: a configured issuer
        // or audience is required too, or any token the same key signed, for whatever use,
        // would do.
        match &self.issuer {
            Some(iss) => {
                validation.set_issuer(&[iss]);
                validation.required_spec_claims.insert("iss".into());
            }
            None => validation.iss = None,
        }
        match &self.audience {
            Some(aud) => {
                validation.set_audience(&[aud]);
                validation.required_spec_claims.insert("aud".into());
            }
            None => validation.validate_aud = false,
        }
        let claims = match jsonwebtoken::decode::<Claims>(token, key, &validation) {
            Ok(data) => data.claims,
            Err(e) => {
                use jsonwebtoken::errors::ErrorKind as K;
                return invalid(match e.kind() {
                    K::InvalidSignature => "bad signature",
                    K::ExpiredSignature => "expired",
                    K::ImmatureSignature => "not yet valid",
                    K::InvalidIssuer => "wrong issuer",
                    K::InvalidAudience => "wrong audience",
                    K::MissingRequiredClaim(c) if c == "iss" => "no issuer",
                    K::MissingRequiredClaim(c) if c == "aud" => "no audience",
                    K::InvalidAlgorithm => "signed with an algorithm this server does not take",
                    K::Json(_) => "claims of the wrong type",
                    _ => "not a JWT",
                });
            }
        };
        // What jsonwebtoken passed over (see `Claims::nbf`), with the same leeway.
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        let leeway = LEEWAY_SECS as f64;
        if claims.exp.is_some_and(|exp| exp + leeway <= now) {
            return invalid("expired");
        }
        if claims.nbf.is_some_and(|nbf| nbf - leeway > now) {
            return invalid("not yet valid");
        }
        let user = match claims.sub {
            Some(sub) if !sub.is_empty() && sub.len() <= MAX_USER_BYTES => sub,
            Some(sub) if !sub.is_empty() => return invalid("sub over 128 bytes"),
            _ => return invalid("no sub"),
        };
        if let Some(rooms) = &claims.rooms {
            let allowed = match rooms {
                RoomsClaim::All(all) => all == "*",
                RoomsClaim::List(list) => list.iter().any(|r| {
                    let r = r.strip_prefix('/').unwrap_or(r);
                    r == room.name()
                }),
            };
            if !allowed {
                return Err("not allowed in this room".into());
            }
        }
        // The issuer's word, but shown to everyone: control and format characters (a newline,
        // a right-to-left override) are dropped, as a guest's name may not hold them.
        let name = claims
            .name
            .map(|n| {
                let kept = without_hidden(&n);
                let cut = trim_blank(&kept)
                    .chars()
                    .take(MAX_TOKEN_NAME_CHARS)
                    .collect::<String>();
                // Again: the cut may leave only blanks and marks (64 joiners, then a letter).
                trim_blank(&cut).to_string()
            })
            .filter(|n| !n.is_empty());
        Ok(Identity {
            author: Author {
                user: Some(Arc::from(user)),
                name: name.map(Arc::from),
            },
            // A fraction of a second rounds down: the token ends no later than it says.
            expires: claims.exp.map(|exp| exp.max(0.0) as u64),
            role: claims.role,
        })
    }
}

/// The key and algorithm of `JWT_PUBLIC_KEY`'s PEM text: an RSA public key (RS256), an EC
/// public key on P-256 (ES256) or P-384 (ES384), or an Ed25519 public key (EdDSA). Errors say
/// what is wrong: a private key (tokens are checked with the public half, and `jsonwebtoken`
/// would take an RSA private key for a public key no signature matches), another curve, or no
/// key at all.
fn public_key(pem: &[u8]) -> Result<(DecodingKey, Algorithm), String> {
    if String::from_utf8_lossy(pem).contains("PRIVATE KEY-----") {
        return Err("JWT_PUBLIC_KEY holds a private key: give its public key \
                    (`openssl pkey -in key.pem -pubout`)"
            .into());
    }
    if let Ok(k) = DecodingKey::from_rsa_pem(pem) {
        return Ok((k, Algorithm::RS256));
    }
    if let Ok(k) = DecodingKey::from_ec_pem(pem) {
        return match ec_curve(pem) {
            Some(alg) => Ok((k, alg)),
            None => Err(
                "JWT_PUBLIC_KEY is an EC key on a curve relay does not take \
                         (P-256 for ES256, P-384 for ES384)"
                    .into(),
            ),
        };
    }
    if let Ok(k) = DecodingKey::from_ed_pem(pem) {
        return Ok((k, Algorithm::EdDSA));
    }
    Err("JWT_PUBLIC_KEY is not an RSA, EC (P-256, P-384) or Ed25519 public key in PEM".into())
}

/// The algorithm of an EC public key's PEM, from its curve: the named curve of its
/// `SubjectPublicKeyInfo` (RFC 5480 §2.1.1: `SEQUENCE { SEQUENCE { id-ecPublicKey, namedCurve },
/// BIT STRING }`), which `jsonwebtoken` does not look at. `None` for any other curve or shape.
fn ec_curve(pem: &[u8]) -> Option<Algorithm> {
    use simple_asn1::{oid, ASN1Block};
    let der = pem::parse(pem).ok()?.into_contents();
    let blocks = simple_asn1::from_der(&der).ok()?;
    let ASN1Block::Sequence(_, spki) = blocks.first()? else {
        return None;
    };
    let ASN1Block::Sequence(_, algorithm) = spki.first()? else {
        return None;
    };
    let ASN1Block::ObjectIdentifier(_, curve) = algorithm.get(1)? else {
        return None;
    };
    if *curve == oid!(1, 2, 840, 10045, 3, 1, 7) {
        Some(Algorithm::ES256) // secp256r1 (P-256)
    } else if *curve == oid!(1, 3, 132, 0, 34) {
        Some(Algorithm::ES384) // secp384r1 (P-384)
    } else {
        None
    }
}

/// `name` without the blank characters at its ends: white space, and the characters that show
/// as nothing though Unicode does not call them space (the Hangul fillers U+115F, U+1160,
/// U+3164, U+FFA0, the blank braille pattern U+2800, the Khmer inherent vowels U+17B4 and
/// U+17B5, the Khitan filler U+16FE4); empty when nothing in it shows by
/// itself (only blanks, joiners, variation selectors or combining marks), so a name cannot look
/// empty.
pub(crate) fn trim_blank(name: &str) -> &str {
    let blank = |c: char| {
        c.is_whitespace()
            || matches!(
                c,
                '\u{115F}'
                    | '\u{1160}'
                    | '\u{3164}'
                    | '\u{FFA0}'
                    | '\u{2800}'
                    | '\u{17B4}'
                    | '\u{17B5}'
                    | '\u{16FE4}'
            )
    };
    // What only joins or changes the characters beside it: the joiners, the combining grapheme
    // joiner, variation selectors, and the blocks of combining marks.
    let modifier = |c: char| {
        matches!(c,
            '\u{200C}' | '\u{200D}' | '\u{034F}'
            | '\u{FE00}'..='\u{FE0F}' | '\u{E0100}'..='\u{E01EF}' | '\u{180B}'..='\u{180F}'
            | '\u{0300}'..='\u{036F}' | '\u{1AB0}'..='\u{1AFF}' | '\u{1DC0}'..='\u{1DFF}'
            | '\u{20D0}'..='\u{20FF}' | '\u{FE20}'..='\u{FE2F}')
    };
    let trimmed = name.trim_matches(blank);
    match trimmed.chars().all(|c| blank(c) || modifier(c)) {
        true => "",
        false => trimmed,
    }
}

/// A guest's own name (`auth.name`): 1–32 characters after trimming blanks ([`trim_blank`]),
/// none of them a control or format character; `None` when not given.
fn guest_name(auth: Option<&Value>) -> Result<Option<Arc<str>>, String> {
    let name = match auth.and_then(|a| a.get("name")) {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::String(n)) => trim_blank(n),
        Some(_) => return Err("invalid name: must be a string".into()),
    };
    if name.is_empty() {
        return Err("invalid name: empty".into());
    }
    if name.chars().count() > MAX_GUEST_NAME_CHARS {
        return Err(format!(
            "invalid name: over {MAX_GUEST_NAME_CHARS} characters"
        ));
    }
    if has_hidden(name) {
        return Err("invalid name: control or format characters".into());
    }
    Ok(Some(Arc::from(name)))
}

/// Whether each of `name`'s characters hides or reorders text ([`is_control_or_format`]); the
/// tag characters of an emoji subdivision flag (U+1F3F4, tags, U+E007F CANCEL TAG: the flags of
/// England, Scotland and Wales) do not.
fn hidden(name: &str) -> Vec<bool> {
    let chars: Vec<char> = name.chars().collect();
    let mut hidden: Vec<bool> = chars.iter().map(|&c| is_control_or_format(c)).collect();
    let mut i = 0;
    while i < chars.len() {
        if chars[i] == '\u{1F3F4}' {
            let tags = chars[i + 1..]
                .iter()
                .take_while(|c| ('\u{E0020}'..='\u{E007E}').contains(*c))
                .count();
            let end = i + 1 + tags;
            if tags > 0 && chars.get(end) == Some(&'\u{E007F}') {
                hidden[i + 1..=end].iter_mut().for_each(|h| *h = false);
                i = end;
            }
        }
        i += 1;
    }
    hidden
}

/// Whether `name` holds a character that hides or reorders text (see [`hidden`]).
pub(crate) fn has_hidden(name: &str) -> bool {
    hidden(name).contains(&true)
}

/// `name` without the characters that hide or reorder text (see [`hidden`]).
pub(crate) fn without_hidden(name: &str) -> String {
    name.chars()
        .zip(hidden(name))
        .filter(|(_, h)| !h)
        .map(|(c, _)| c)
        .collect()
}

/// Control characters (Cc) and the format characters (Cf) that reorder or hide text: bidi
/// controls, zero-width spaces, the BOM, soft hyphen, tags. The zero-width joiner and non-joiner
/// (U+200D, U+200C) are letters' business, not hiding: emoji sequences (👩‍💻, 🏳️‍🌈) and Persian or
/// Indic names need them.
fn is_control_or_format(c: char) -> bool {
    c.is_control()
        || matches!(c,
            '\u{00AD}' | '\u{061C}' | '\u{180E}' | '\u{200B}' | '\u{200E}'..='\u{200F}'
            | '\u{202A}'..='\u{202E}' | '\u{2060}'..='\u{2064}' | '\u{2066}'..='\u{206F}'
            | '\u{FEFF}' | '\u{FFF9}'..='\u{FFFB}' | '\u{E0000}'..='\u{E007F}'
            // The rest of Unicode's format characters (Cf): Arabic and Syriac number signs,
            // Kaithi, Egyptian hieroglyph, shorthand and musical format controls.
            | '\u{0600}'..='\u{0605}' | '\u{06DD}' | '\u{070F}' | '\u{0890}'..='\u{0891}'
            | '\u{08E2}' | '\u{110BD}' | '\u{110CD}' | '\u{13430}'..='\u{1343F}'
            | '\u{1BCA0}'..='\u{1BCA3}' | '\u{1D173}'..='\u{1D17A}')
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{encode, EncodingKey, Header};
    use serde_json::json;

    const SECRET: &str = "test-secret";

    fn now() -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
    }

    fn token(claims: Value) -> String {
        encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(SECRET.as_bytes()),
        )
        .unwrap()
    }

    fn verifier(mode: AuthMode) -> Verifier {
        Verifier::new(mode, Some(SECRET), None, None, None).unwrap()
    }

    fn connect(v: &Verifier, auth: Value) -> Result<Identity, String> {
        v.identify(Some(&auth), &Room::named("general"))
    }

    #[test]
    fn a_valid_token_names_its_user() {
        let v = verifier(AuthMode::Token);
        let t = token(json!({"sub": "u1", "name": "Ana", "exp": now() + 60, "role": "admin"}));
        let id = connect(&v, json!({ "token": t })).unwrap();
        assert_eq!(id.author.user.as_deref(), Some("u1"));
        assert_eq!(id.author.name.as_deref(), Some("Ana"));
        assert_eq!(id.role.as_deref(), Some("admin"));
        // What could reorder or hide text around the name is dropped.
        let t = token(json!({"sub": "u2", "name": "Eve\u{202E}gnp.exe\n\u{0}"}));
        let id = connect(&v, json!({ "token": t })).unwrap();
        assert_eq!(id.author.name.as_deref(), Some("Evegnp.exe"));
        let t = token(json!({"sub": "u3", "name": "\u{200B}\n"}));
        assert_eq!(
            connect(&v, json!({ "token": t })).unwrap().author.name,
            None
        );
        // Trimmed as a guest's is, blanks that show as nothing too.
        let t = token(json!({"sub": "u4", "name": "  Ana \u{3164}"}));
        let id = connect(&v, json!({ "token": t })).unwrap();
        assert_eq!(id.author.name.as_deref(), Some("Ana"));
        let t = token(json!({"sub": "u6", "name": format!("{}X", "\u{200D}".repeat(64))}));
        assert_eq!(
            connect(&v, json!({ "token": t })).unwrap().author.name,
            None,
            "what is left after the cut shows nothing"
        );
        let wales = "\u{1F3F4}\u{E0067}\u{E0062}\u{E0077}\u{E006C}\u{E0073}\u{E007F}";
        let t = token(json!({"sub": "u7", "name": format!("Dai {wales}")}));
        let id = connect(&v, json!({ "token": t })).unwrap();
        assert_eq!(
            id.author.name.as_deref(),
            Some(format!("Dai {wales}").as_str())
        );
        let t = token(json!({"sub": "u5", "name": "\u{2800}"}));
        assert_eq!(
            connect(&v, json!({ "token": t })).unwrap().author.name,
            None
        );
    }

    #[test]
    fn every_token_fault_has_its_reason() {
        let v = Verifier::new(
            AuthMode::Token,
            Some(SECRET),
            None,
            Some("me".into()),
            Some("chat".into()),
        )
        .unwrap();
        let ok = json!({"sub": "u", "iss": "me", "aud": "chat"});
        let with = |extra: Value| {
            let mut c = ok.clone();
            c.as_object_mut()
                .unwrap()
                .extend(extra.as_object().unwrap().clone());
            token(c)
        };
        let cases = [
            (json!({}), "token required"),
            (json!({"token": 5}), "invalid token: not a JWT"),
            (json!({"token": "abc"}), "invalid token: not a JWT"),
            (
                json!({"token": "x".repeat(9000)}),
                "invalid token: over 8 KiB",
            ),
            (
                json!({"token": with(json!({"exp": now() - 60}))}),
                "invalid token: expired",
            ),
            (
                json!({"token": with(json!({"nbf": now() + 60}))}),
                "invalid token: not yet valid",
            ),
            (
                json!({"token": with(json!({"iss": "other"}))}),
                "invalid token: wrong issuer",
            ),
            (
                json!({"token": with(json!({"aud": "other"}))}),
                "invalid token: wrong audience",
            ),
            (
                json!({"token": with(json!({"sub": ""}))}),
                "invalid token: no sub",
            ),
            // A configured issuer and audience are required, not only checked when present.
            (
                json!({"token": token(json!({"sub": "u", "aud": "chat"}))}),
                "invalid token: no issuer",
            ),
            (
                json!({"token": token(json!({"sub": "u", "iss": "me"}))}),
                "invalid token: no audience",
            ),
            (
                json!({"token": with(json!({"rooms": ["help"]}))}),
                "not allowed in this room",
            ),
        ];
        for (auth, want) in cases {
            assert_eq!(connect(&v, auth.clone()).unwrap_err(), want, "{auth}");
        }
        assert!(connect(&v, json!({"token": with(json!({"rooms": ["general"]}))})).is_ok());
        assert!(connect(&v, json!({"token": with(json!({"rooms": "*"}))})).is_ok());
        // Another key's signature.
        let forged = encode(
            &Header::new(Algorithm::HS256),
            &ok,
            &EncodingKey::from_secret(b"other"),
        )
        .unwrap();
        assert_eq!(
            connect(&v, json!({ "token": forged })).unwrap_err(),
            "invalid token: bad signature"
        );
        // alg: none — a header and claims with no signature.
        let b64 = |v: &Value| {
            use base64::Engine;
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
        };
        let none = format!(
            "{}.{}.",
            b64(&json!({"alg": "none", "typ": "JWT"})),
            b64(&ok)
        );
        assert!(connect(&v, json!({ "token": none }))
            .unwrap_err()
            .starts_with("invalid token: "));
    }

    #[test]
    fn an_exp_with_a_fraction_is_a_date_and_rounds_down() {
        // RFC 7519's NumericDate may carry a fraction (Python's `time.time() + 3600` does).
        let v = verifier(AuthMode::Token);
        let exp = now() as f64 + 60.75;
        let id = connect(&v, json!({"token": token(json!({"sub": "u", "exp": exp}))})).unwrap();
        assert_eq!(id.expires, Some(exp as u64));
        // Dates jsonwebtoken does not read as a u64 are still dates.
        for (claims, why) in [
            (json!({"sub": "u", "exp": -1}), "invalid token: expired"),
            (json!({"sub": "u", "exp": -1e10}), "invalid token: expired"),
            (
                json!({"sub": "u", "nbf": 1e30}),
                "invalid token: not yet valid",
            ),
            (
                json!({"sub": "u", "nbf": now() as f64 + 60.5}),
                "invalid token: not yet valid",
            ),
        ] {
            assert_eq!(
                connect(&v, json!({ "token": token(claims) })).unwrap_err(),
                why
            );
        }
        let past = now() as f64 - 60.5;
        assert_eq!(
            connect(
                &v,
                json!({"token": token(json!({"sub": "u", "exp": past}))})
            )
            .unwrap_err(),
            "invalid token: expired"
        );
    }

    #[test]
    fn guests_may_name_themselves_within_the_rules() {
        let v = Verifier::guests();
        let id = connect(&v, json!({"name": "  Bo  "})).unwrap();
        assert_eq!(
            id.author,
            Author {
                user: None,
                name: Some(Arc::from("Bo"))
            }
        );
        assert!(id.author.is_guest());
        assert_eq!(connect(&v, json!({})).unwrap().author, Author::default());
        for bad in [
            json!(""),
            json!(" "),
            json!(7),
            json!("a\u{202E}b"),
            json!("a\u{200B}b"),
            json!("x".repeat(33)),
            // Characters that show as nothing: no name at all.
            json!("\u{3164}"),
            json!("\u{2800}\u{2800}"),
            json!(" \u{FFA0} "),
            json!("\u{3164}\u{200D}\u{3164}"),
            json!("\u{200C}"),
            json!("\u{034F}"),
            json!("\u{2800}\u{FE0F}\u{2800}"),
            json!("\u{0301}\u{0301}"),
            json!("\u{17B4}\u{17B5}"),
            json!("\u{1D173}x"),
            json!("\u{0600}"),
            // Tag characters outside a flag: no black flag before them, or no CANCEL TAG after.
            json!("a\u{E0067}\u{E0062}\u{E007F}"),
            json!("\u{1F3F4}\u{E0067}\u{E0062}"),
        ] {
            assert!(connect(&v, json!({ "name": bad }))
                .unwrap_err()
                .starts_with("invalid name: "));
        }
        // Joiners are part of names and emoji, not hiding: 👩‍💻, 🏳️‍🌈, Persian with a ZWNJ.
        for good in [
            "👩\u{200D}💻 Ana",
            "Sam 🏳\u{FE0F}\u{200D}🌈",
            "مهدی\u{200C}زاده",
            // A subdivision flag: the black flag, tag characters, CANCEL TAG (Scotland).
            "Iain \u{1F3F4}\u{E0067}\u{E0062}\u{E0073}\u{E0063}\u{E0074}\u{E007F}",
        ] {
            let id = connect(&v, json!({ "name": good })).unwrap();
            assert_eq!(id.author.name.as_deref(), Some(good));
        }
        // A token without a key to check it against: a guest, as the tutorial's clients are.
        assert_eq!(
            connect(&v, json!({"token": "whatever"})).unwrap().author,
            Author::default()
        );
    }
}
