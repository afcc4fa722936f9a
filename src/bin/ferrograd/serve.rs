//! `ferrograd serve`: the playground page over HTTP on this machine.
//!
//! Serves only what the page needs (index.html, embed.html, www/, pkg/, data/ and the chart
//! library), the guide (book/) and the browser benchmark (bench/),
//! with `application/wasm` for the module and the cross-origin-isolation headers that let a
//! browser enable wasm threads. `--throttle` slows the data files down on purpose, to watch
//! (and test) training start while the data still arrives.

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Component, Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context, Result};

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
    /// Leave out the cross-origin-isolation headers, as plain static hosting does.
    #[arg(long)]
    no_isolation: bool,
}

/// Paths the page needs; anything else is a 404, so that the server shows no more of the
/// folder than the page.
const SERVED: &[&str] = &[
    "index.html",
    "embed.html",
    "www/",
    "pkg/",
    "data/",
    "node_modules/uplot/dist/",
    "node_modules/wasm-feature-detect/dist/",
    "book/",
    "bench/",
];

pub fn serve(args: ServeArgs) -> Result<()> {
    let root = args.root.canonicalize().with_context(|| format!("--root {}", args.root.display()))?;
    if !root.join("index.html").is_file() {
        return Err(anyhow!("--root {}: there is no index.html", root.display()));
    }
    if !root.join("pkg/ferrograd_bg.wasm").is_file() {
        eprintln!("warning: {} has no pkg/ferrograd_bg.wasm; build it with scripts/play.sh", root.display());
    }
    let listener = TcpListener::bind((args.host.as_str(), args.port))
        .map_err(|e| anyhow!("cannot listen on {}:{}: {e}", args.host, args.port))?;
    println!("ferrograd playground at http://{}/", listener.local_addr()?);
    io::stdout().flush()?;
    let options = Options { throttle: args.throttle, isolation: !args.no_isolation };
    for stream in listener.incoming() {
        let Ok(stream) = stream else { continue };
        let root = root.clone();
        // One thread per connection and one request per connection: a slow (throttled)
        // download holds up nothing else, and no idle keep-alive connection holds a thread
        // that a new request waits for (tiny_http's pool did exactly that to the page's
        // first burst of module requests).
        thread::spawn(move || {
            if let Err(e) = respond(stream, &root, options) {
                if !matches!(e.kind(), io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset) {
                    eprintln!("serve: {e}");
                }
            }
        });
    }
    Ok(())
}

#[derive(Clone, Copy)]
struct Options {
    throttle: Option<u64>,
    isolation: bool,
}

/// Reads one request's head and answers it; the connection closes afterwards.
fn respond(stream: TcpStream, root: &Path, options: Options) -> io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut request_line = String::new();
    reader.by_ref().take(8192).read_line(&mut request_line)?;
    // The headers are not needed; read them so the client sees its request consumed.
    let mut header_bytes = 0;
    loop {
        let mut line = String::new();
        let n = reader.by_ref().take(8192).read_line(&mut line)?;
        header_bytes += n;
        if n == 0 || line == "\r\n" || line == "\n" || header_bytes > 65536 {
            break;
        }
    }
    let mut out = stream;
    let mut parts = request_line.split_whitespace();
    let (Some(method), Some(target)) = (parts.next(), parts.next()) else {
        return reply(&mut out, 400, "text/plain", options, Body::Text("bad request line"), false);
    };
    let head_only = method == "HEAD";
    if method != "GET" && !head_only {
        return reply(
            &mut out,
            405,
            "text/plain",
            options,
            Body::Text("only GET and HEAD are served"),
            false,
        );
    }
    let path = target.split(['?', '#']).next().unwrap_or("/");
    let file = servable(path).and_then(|relative| {
        let file_path = root.join(&relative);
        let file = File::open(&file_path).ok().filter(|f| f.metadata().is_ok_and(|m| m.is_file()))?;
        Some((relative, file_path, file))
    });
    let Some((relative, file_path, file)) = file else {
        return reply(&mut out, 404, "text/plain", options, Body::Text("not found"), head_only);
    };
    let length = file.metadata()?.len();
    let rate = options.throttle.filter(|_| relative.starts_with("data/"));
    let body = match rate {
        Some(rate) => {
            Body::File(Box::new(Throttled { inner: file, rate, start: Instant::now(), sent: 0 }), length)
        }
        None => Body::File(Box::new(file), length),
    };
    reply(&mut out, 200, content_type(&file_path), options, body, head_only)
}

enum Body {
    Text(&'static str),
    File(Box<dyn Read + Send>, u64),
}

fn reply(
    out: &mut TcpStream,
    status: u16,
    content_type: &str,
    options: Options,
    body: Body,
    head_only: bool,
) -> io::Result<()> {
    let reason = match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        _ => "Method Not Allowed",
    };
    let length = match &body {
        Body::Text(text) => text.len() as u64,
        Body::File(_, length) => *length,
    };
    let mut head = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {length}\r\n\
         Cache-Control: no-cache\r\nX-Content-Type-Options: nosniff\r\nConnection: close\r\n"
    );
    if options.isolation {
        head.push_str(
            "Cross-Origin-Opener-Policy: same-origin\r\nCross-Origin-Embedder-Policy: require-corp\r\n\
             Cross-Origin-Resource-Policy: same-origin\r\n",
        );
    }
    head.push_str("\r\n");
    out.write_all(head.as_bytes())?;
    if !head_only {
        match body {
            Body::Text(text) => out.write_all(text.as_bytes())?,
            Body::File(mut reader, _) => {
                io::copy(&mut reader, out)?;
            }
        }
    }
    out.flush()
}

/// The file a URL path names, if it is one the page needs; `..` and the like are refused.
fn servable(url_path: &str) -> Option<String> {
    let path = url_path.trim_start_matches('/');
    // A folder's address serves its index.html, as static hosting does.
    let relative =
        if path.is_empty() || path.ends_with('/') { format!("{path}index.html") } else { path.to_owned() };
    let relative = relative.as_str();
    let clean = Path::new(relative).components().all(|c| matches!(c, Component::Normal(_)));
    let allowed = SERVED
        .iter()
        .any(|prefix| relative == *prefix || (prefix.ends_with('/') && relative.starts_with(prefix)));
    (clean && allowed).then(|| relative.to_owned())
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
        "woff2" => "font/woff2",
        "woff" => "font/woff",
        "ttf" => "font/ttf",
        "ico" => "image/x-icon",
        "txt" | "md" => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    }
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
        assert_eq!(servable("/book/").as_deref(), Some("book/index.html"));
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
