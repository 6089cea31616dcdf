//! The endpoint of `[stats] listen`: routes, the token that guards them, and the dashboard's
//! files, which are part of the binary (a daemon on a closed network has no CDN to reach).
//!
//! | route | answer |
//! |---|---|
//! | `GET /health` | `ok`, never guarded: for load balancers and liveness probes |
//! | `GET /` | the dashboard page (`host/assets/dashboard.html`) |
//! | `GET /assets/…` | its script and style, and uPlot's (vendored, MIT) |
//! | `GET /api/series?since=T` | what the page draws ([`super::series`]) |
//! | `GET /stats` | every pipeline as JSON |
//! | `GET /metrics` | the OpenMetrics exposition ([`super::metrics`]) |
//!
//! With `[stats] token`, every route but `/health` wants it, as `Authorization: Bearer
//! TOKEN` or as the cookie that `/?token=TOKEN` sets (HttpOnly, SameSite=Strict) before it
//! redirects to `/`, so that a browser can use the page and its requests carry the token
//! without the page's script ever seeing it. Tokens are compared in constant time.
//!
//! Depends on `tiny_http`, [`crate::pool::Shutdown`] and the parent module.

use std::{net::SocketAddr, time::Duration};

use super::{metrics, series::History, Stats};
use crate::pool::Shutdown;

const PAGE: &str = include_str!("../../assets/dashboard.html");
const SCRIPT: &str = include_str!("../../assets/dashboard.js");
const STYLE: &str = include_str!("../../assets/dashboard.css");
const UPLOT_SCRIPT: &str = include_str!("../../assets/vendor/uplot/uPlot.iife.min.js");
const UPLOT_STYLE: &str = include_str!("../../assets/vendor/uplot/uPlot.min.css");

/// The cookie `/?token=` sets.
const COOKIE: &str = "golconde_token";

/// What the page may load: its own files, nothing from elsewhere.
const PAGE_POLICY: &str = "default-src 'self'; img-src 'self' data:; style-src 'self' \
                           'unsafe-inline'; script-src 'self'; connect-src 'self'; \
                           frame-ancestors 'none'; base-uri 'none'; form-action 'none'";

/// Serves the endpoint on `listen` until shutdown, and samples every pipeline once a
/// second for the dashboard; returns the address actually bound (the port may be 0 in the
/// configuration). With `token`, every route but `/health` wants it.
pub fn serve(
    listen: &str,
    token: Option<String>,
    stats: Stats,
    shutdown: Shutdown,
) -> Result<SocketAddr, String> {
    let server = tiny_http::Server::http(listen)
        .map_err(|e| format!("[stats] listen = `{listen}`: cannot listen: {e}"))?;
    let address = server
        .server_addr()
        .to_ip()
        .ok_or_else(|| format!("[stats] listen = `{listen}`: not an IP address"))?;
    let history = History::default();
    {
        let (history, stats, shutdown) = (history.clone(), stats.clone(), shutdown.clone());
        std::thread::Builder::new()
            .name("stats/sample".into())
            .spawn(move || loop {
                history.sample(&stats);
                if shutdown.sleep(super::series::EVERY) {
                    return;
                }
            })
            .map_err(|e| format!("starting the stats sampler thread: {e}"))?;
    }
    let endpoint = Endpoint {
        token: Token::new(token),
        stats,
        history,
    };
    std::thread::Builder::new()
        .name("stats".into())
        .spawn(move || {
            while !shutdown.is_triggered() {
                let Ok(Some(request)) = server.recv_timeout(Duration::from_millis(200)) else {
                    continue;
                };
                let headers: Vec<(String, String)> = request
                    .headers()
                    .iter()
                    .map(|h| (h.field.as_str().to_string(), h.value.to_string()))
                    .collect();
                let get = *request.method() == tiny_http::Method::Get;
                let reply = endpoint.answer(get, request.url(), &headers);
                let _ = request.respond(reply.into_response());
            }
        })
        .map_err(|e| format!("starting the stats thread: {e}"))?;
    Ok(address)
}

/// What the endpoint answers from.
struct Endpoint {
    token: Token,
    stats: Stats,
    history: History,
}

/// An answer, before it is a `tiny_http` response.
#[derive(Debug)]
struct Reply {
    status: u16,
    content_type: &'static str,
    body: String,
    headers: Vec<(&'static str, String)>,
}

impl Reply {
    fn new(status: u16, content_type: &'static str, body: impl Into<String>) -> Reply {
        Reply {
            status,
            content_type,
            body: body.into(),
            headers: Vec::new(),
        }
    }

    fn text(status: u16, body: impl Into<String>) -> Reply {
        Reply::new(status, "text/plain; charset=utf-8", body)
    }

    fn with(mut self, name: &'static str, value: impl Into<String>) -> Reply {
        self.headers.push((name, value.into()));
        self
    }

    fn into_response(self) -> tiny_http::Response<std::io::Cursor<Vec<u8>>> {
        let header = |name: &str, value: &str| {
            tiny_http::Header::from_bytes(name.as_bytes(), value.as_bytes())
                .expect("a valid header")
        };
        let mut response = tiny_http::Response::from_string(self.body)
            .with_status_code(self.status)
            .with_header(header("Content-Type", self.content_type))
            .with_header(header("Cache-Control", "no-store"))
            .with_header(header("X-Content-Type-Options", "nosniff"));
        for (name, value) in &self.headers {
            response.add_header(header(name, value));
        }
        response
    }
}

impl Endpoint {
    fn answer(&self, get: bool, url: &str, headers: &[(String, String)]) -> Reply {
        let (path, query) = url.split_once('?').unwrap_or((url, ""));
        if !get {
            return Reply::text(405, "only GET is served here\n").with("Allow", "GET");
        }
        if path == "/health" {
            return Reply::text(200, "ok\n");
        }
        if path == "/" {
            if let Some(given) = query_value(query, "token") {
                return self.sign_in(&given);
            }
        }
        if !self.token.allows(headers) {
            return Reply::text(
                401,
                "401 Unauthorized: this endpoint is protected by `[stats] token`. Send the \
                 token as `Authorization: Bearer TOKEN`, or open /?token=TOKEN once in a \
                 browser (it sets a cookie and takes you to the dashboard). /health needs \
                 no token.\n",
            )
            .with("WWW-Authenticate", "Bearer realm=\"golconde\"");
        }
        match path {
            "/" => Reply::new(200, "text/html; charset=utf-8", PAGE)
                .with("Content-Security-Policy", PAGE_POLICY)
                .with("Referrer-Policy", "no-referrer")
                .with("X-Frame-Options", "DENY"),
            "/assets/dashboard.js" => Reply::new(200, "text/javascript; charset=utf-8", SCRIPT),
            "/assets/dashboard.css" => Reply::new(200, "text/css; charset=utf-8", STYLE),
            "/assets/uPlot.iife.min.js" => {
                Reply::new(200, "text/javascript; charset=utf-8", UPLOT_SCRIPT)
            }
            "/assets/uPlot.min.css" => Reply::new(200, "text/css; charset=utf-8", UPLOT_STYLE),
            "/api/series" => {
                let since = query_value(query, "since").and_then(|s| s.parse().ok());
                Reply::new(200, "application/json", self.history.json(since))
            }
            "/stats" => Reply::new(200, "application/json", self.stats.json()),
            "/metrics" => Reply::new(200, metrics::CONTENT_TYPE, self.stats.prometheus()),
            _ => Reply::text(
                404,
                "not found: try / (the dashboard), /stats, /metrics, /api/series or /health\n",
            ),
        }
    }

    /// `/?token=…`: a right token becomes a cookie, and the browser goes on to `/` (so that
    /// the token does not stay in its address bar and history).
    fn sign_in(&self, given: &str) -> Reply {
        let Some(expected) = &self.token.0 else {
            return Reply::text(303, "").with("Location", "/");
        };
        if !same(given.as_bytes(), expected) {
            return Reply::text(
                401,
                "401 Unauthorized: that is not the token of `[stats] token`\n",
            );
        }
        Reply::text(303, "")
            .with("Location", "/")
            .with(
                "Set-Cookie",
                format!(
                    "{COOKIE}={}; Path=/; HttpOnly; SameSite=Strict",
                    hex(expected)
                ),
            )
            .with("Referrer-Policy", "no-referrer")
    }
}

/// The token every route but `/health` wants, if one is configured.
struct Token(Option<Vec<u8>>);

impl Token {
    fn new(token: Option<String>) -> Token {
        Token(token.map(String::into_bytes))
    }

    /// Whether a request with these headers carries the token (always, without one).
    fn allows(&self, headers: &[(String, String)]) -> bool {
        let Some(expected) = &self.0 else {
            return true;
        };
        let mut allowed = false;
        for (name, value) in headers {
            if name.eq_ignore_ascii_case("authorization") {
                if let Some((scheme, given)) = value.trim().split_once(' ') {
                    if scheme.eq_ignore_ascii_case("bearer") {
                        allowed |= same(given.trim().as_bytes(), expected);
                    }
                }
            } else if name.eq_ignore_ascii_case("cookie") {
                for cookie in value.split(';') {
                    if let Some((key, given)) = cookie.trim().split_once('=') {
                        if key == COOKIE {
                            allowed |= unhex(given).is_some_and(|given| same(&given, expected));
                        }
                    }
                }
            }
        }
        allowed
    }
}

/// Whether `a` and `b` are equal, taking the same time whatever their contents (the time
/// depends on the longer length only).
fn same(a: &[u8], b: &[u8]) -> bool {
    let mut difference = (a.len() ^ b.len()) as u64;
    for i in 0..a.len().max(b.len()) {
        let x = a.get(i).copied().unwrap_or(0);
        let y = b.get(i).copied().unwrap_or(0);
        difference |= u64::from(x ^ y);
    }
    std::hint::black_box(difference) == 0
}

/// The token as a cookie holds it: any byte can be in a token, few can be in a cookie.
fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) || !text.is_ascii() {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).ok())
        .collect()
}

/// The value of `key` in a query string, percent-decoded.
fn query_value(query: &str, key: &str) -> Option<String> {
    query.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (k == key).then(|| percent_decode(v))
    })
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                match text
                    .get(i + 1..i + 3)
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                {
                    Some(b) => {
                        out.push(b);
                        i += 3;
                    }
                    None => {
                        out.push(b'%');
                        i += 1;
                    }
                }
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoint(token: Option<&str>) -> Endpoint {
        Endpoint {
            token: Token::new(token.map(String::from)),
            stats: Stats::default(),
            history: History::default(),
        }
    }

    fn header(name: &str, value: &str) -> Vec<(String, String)> {
        vec![(name.to_string(), value.to_string())]
    }

    #[test]
    fn tokens_compare_whole() {
        assert!(same(b"s3cret", b"s3cret"));
        assert!(!same(b"s3cret", b"s3creT"));
        assert!(!same(b"s3cret", b"s3cre"));
        assert!(!same(b"", b"x"));
        assert!(same(b"", b""));
    }

    #[test]
    fn the_token_guards_every_route_but_health() {
        let guarded = endpoint(Some("s3cret"));
        for path in [
            "/",
            "/stats",
            "/metrics",
            "/api/series",
            "/assets/dashboard.js",
        ] {
            let reply = guarded.answer(true, path, &[]);
            assert_eq!(reply.status, 401, "{path}");
            assert!(
                reply.body.contains("Authorization: Bearer"),
                "{}",
                reply.body
            );
            let wrong = guarded.answer(true, path, &header("Authorization", "Bearer nope"));
            assert_eq!(wrong.status, 401, "{path}");
            let right = guarded.answer(true, path, &header("authorization", "bearer s3cret"));
            assert_eq!(right.status, 200, "{path}");
        }
        assert_eq!(guarded.answer(true, "/health", &[]).status, 200);
        assert_eq!(guarded.answer(true, "/nope", &[]).status, 401);
        let open = endpoint(None);
        assert_eq!(open.answer(true, "/metrics", &[]).status, 200);
        assert_eq!(open.answer(true, "/nope", &[]).status, 404);
        assert_eq!(open.answer(false, "/metrics", &[]).status, 405);
    }

    #[test]
    fn a_browser_signs_in_with_a_cookie() {
        let guarded = endpoint(Some("a b&c"));
        assert_eq!(guarded.answer(true, "/?token=wrong", &[]).status, 401);
        let reply = guarded.answer(true, "/?token=a%20b%26c", &[]);
        assert_eq!(reply.status, 303);
        let cookie = reply
            .headers
            .iter()
            .find(|(name, _)| *name == "Set-Cookie")
            .map(|(_, value)| value.clone())
            .unwrap();
        assert!(cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"));
        let pair = cookie.split(';').next().unwrap();
        let with_cookie = header("Cookie", &format!("theme=dark; {pair}"));
        assert_eq!(
            guarded.answer(true, "/api/series", &with_cookie).status,
            200
        );
        let forged = header("Cookie", "golconde_token=616263");
        assert_eq!(guarded.answer(true, "/api/series", &forged).status, 401);
        assert_eq!(
            guarded
                .answer(true, "/", &header("Cookie", "golconde_token=zz"))
                .status,
            401
        );
    }

    #[test]
    fn the_page_and_its_files_are_served() {
        let open = endpoint(None);
        let page = open.answer(true, "/", &[]);
        assert!(page.body.contains("uPlot.iife.min.js"), "{}", page.body);
        assert!(page
            .headers
            .iter()
            .any(|(name, value)| *name == "Content-Security-Policy" && value.contains("'self'")));
        for file in [
            "/assets/dashboard.js",
            "/assets/dashboard.css",
            "/assets/uPlot.iife.min.js",
            "/assets/uPlot.min.css",
        ] {
            let reply = open.answer(true, file, &[]);
            assert_eq!(reply.status, 200, "{file}");
            assert!(!reply.body.is_empty(), "{file}");
        }
        let series: serde_json::Value =
            serde_json::from_str(&open.answer(true, "/api/series?since=5", &[]).body).unwrap();
        assert_eq!(series["pipelines"], serde_json::json!([]));
    }

    #[test]
    fn queries_are_percent_decoded() {
        assert_eq!(
            query_value("a=1&token=x%2By+z%zz", "token").as_deref(),
            Some("x+y z%zz")
        );
        assert_eq!(query_value("since=5", "token"), None);
        assert_eq!(unhex(&hex(b"\x00\xffa")), Some(b"\x00\xffa".to_vec()));
        assert_eq!(unhex("abc"), None);
    }
}
