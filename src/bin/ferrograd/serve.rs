//! `ferrograd serve`: the playground page over HTTP on this machine.
//!
//! Serves only what the page needs (index.html, www/, pkg/, data/ and the chart library),
//! with `application/wasm` for the module and the cross-origin-isolation headers that let a
//! browser enable wasm threads. `--throttle` slows the data files down on purpose, to watch
//! (and test) training start while the data still arrives.

use std::fs::File;
use std::io::{self, Read, Write};
use std::path::{Component, Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context, Result};
use tiny_http::{Header, Method, Request, Response, Server, StatusCode};

#[derive(clap::Args)]
pub struct ServeArgs {
    /// The folder holding index.html (the repository root).
    #[arg(long, default_value = ".")]
    root: PathBuf,
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    /// 0 picks any free port.
    #[arg(long, default_value_t = 8080)]
    port: u16,
    /// Serve files under data/ at this many bytes per second.
    #[arg(long)]
    throttle: Option<u64>,
}

/// Paths the page needs; anything else is a 404, so that the server shows no more of the
/// folder than the page.
const SERVED: &[&str] = &["index.html", "www/", "pkg/", "data/", "node_modules/uplot/dist/"];

pub fn serve(args: ServeArgs) -> Result<()> {
    let root = args.root.canonicalize().with_context(|| format!("--root {}", args.root.display()))?;
    if !root.join("index.html").is_file() {
        return Err(anyhow!("--root {}: there is no index.html", root.display()));
    }
    if !root.join("pkg/ferrograd_bg.wasm").is_file() {
        eprintln!("warning: {} has no pkg/ferrograd_bg.wasm; build it with scripts/play.sh", root.display());
    }
    let server = Server::http((args.host.as_str(), args.port))
        .map_err(|e| anyhow!("cannot listen on {}:{}: {e}", args.host, args.port))?;
    let address = server.server_addr().to_ip().ok_or_else(|| anyhow!("not an IP address"))?;
    println!("ferrograd playground at http://{address}/");
    io::stdout().flush()?;
    for request in server.incoming_requests() {
        let root = root.clone();
        let throttle = args.throttle;
        // One thread per request, so that a slow (throttled) download holds up nothing else.
        thread::spawn(move || {
            if let Err(e) = respond(request, &root, throttle) {
                eprintln!("serve: {e}");
            }
        });
    }
    Ok(())
}

fn respond(request: Request, root: &Path, throttle: Option<u64>) -> io::Result<()> {
    if !matches!(request.method(), Method::Get | Method::Head) {
        return request.respond(text(405, "only GET and HEAD are served"));
    }
    let path = request.url().split(['?', '#']).next().unwrap_or("/").to_owned();
    let Some(relative) = servable(&path) else {
        return request.respond(text(404, "not found"));
    };
    let file_path = root.join(&relative);
    let Ok(file) = File::open(&file_path) else {
        return request.respond(text(404, "not found"));
    };
    let length = file.metadata()?.len() as usize;
    let rate = throttle.filter(|_| relative.starts_with("data/"));
    let body: Box<dyn Read + Send> = match rate {
        Some(rate) => Box::new(Throttled { inner: file, rate, start: Instant::now(), sent: 0 }),
        None => Box::new(file),
    };
    let mut headers = isolation_headers();
    headers.push(header("Content-Type", content_type(&file_path)));
    headers.push(header("Cache-Control", "no-cache"));
    let response = Response::new(StatusCode(200), headers, body, Some(length), None);
    request.respond(response)
}

/// The file a URL path names, if it is one the page needs; `..` and the like are refused.
fn servable(url_path: &str) -> Option<String> {
    let decoded = url_path.trim_start_matches('/');
    let relative = if decoded.is_empty() { "index.html" } else { decoded };
    let clean = Path::new(relative).components().all(|c| matches!(c, Component::Normal(_)));
    let allowed = SERVED
        .iter()
        .any(|prefix| relative == *prefix || (prefix.ends_with('/') && relative.starts_with(prefix)));
    (clean && allowed).then(|| relative.to_owned())
}

fn isolation_headers() -> Vec<Header> {
    vec![
        header("Cross-Origin-Opener-Policy", "same-origin"),
        header("Cross-Origin-Embedder-Policy", "require-corp"),
        header("Cross-Origin-Resource-Policy", "same-origin"),
        header("X-Content-Type-Options", "nosniff"),
    ]
}

fn content_type(path: &Path) -> &'static str {
    match path.extension().and_then(|e| e.to_str()).unwrap_or("") {
        "html" => "text/html; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "json" => "application/json",
        "wasm" => "application/wasm",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "gz" => "application/gzip",
        _ => "application/octet-stream",
    }
}

fn header(name: &str, value: &str) -> Header {
    Header::from_bytes(name.as_bytes(), value.as_bytes()).expect("valid header")
}

fn text(status: u16, body: &str) -> Response<io::Cursor<Vec<u8>>> {
    let mut response = Response::from_string(body).with_status_code(status);
    for h in isolation_headers() {
        response.add_header(h);
    }
    response
}

/// Reads at no more than `rate` bytes per second on average.
struct Throttled<R> {
    inner: R,
    rate: u64,
    start: Instant,
    sent: u64,
}

impl<R: Read> Read for Throttled<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let due = Duration::from_secs_f64(self.sent as f64 / self.rate as f64);
        if let Some(wait) = due.checked_sub(self.start.elapsed()) {
            thread::sleep(wait);
        }
        let slice = (self.rate as usize / 20).clamp(256, buf.len().max(256)).min(buf.len());
        let n = self.inner.read(&mut buf[..slice])?;
        self.sent += n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::servable;

    #[test]
    fn only_the_page_and_its_parts_are_served() {
        assert_eq!(servable("/").as_deref(), Some("index.html"));
        assert_eq!(servable("/www/main.js").as_deref(), Some("www/main.js"));
        assert_eq!(
            servable("/data/mnist/t10k-labels-idx1-ubyte.gz").as_deref(),
            Some("data/mnist/t10k-labels-idx1-ubyte.gz")
        );
        assert_eq!(servable("/www/../Cargo.toml"), None);
        assert_eq!(servable("/Cargo.toml"), None);
        assert_eq!(servable("/.git/config"), None);
        assert_eq!(servable("/node_modules/playwright-core/index.js"), None);
    }
}
