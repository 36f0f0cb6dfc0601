//! A real `octet-server` process on a free loopback port, and clients for it.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

use octet_server::pb;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;
use tonic::{Request, Status};

/// The server process; killed when dropped.
pub struct ServerProc {
    pub child: Child,
    pub addr: String,
}

impl ServerProc {
    /// Starts the server on `127.0.0.1:0` over `data` and waits for its address.
    pub fn start(data: &Path, extra: &[&str]) -> ServerProc {
        Self::start_reading(data, extra, 0).0
    }

    /// [`ServerProc::start`], then reads `more` further stdout lines (`http on
    /// ADDR`, `metrics on ADDR`) and returns them.
    pub fn start_reading(data: &Path, extra: &[&str], more: usize) -> (ServerProc, Vec<String>) {
        let mut child = Command::new(env!("CARGO_BIN_EXE_octet-server"))
            .arg("--addr")
            .arg("127.0.0.1:0")
            .arg("--data")
            .arg(data)
            .args(extra)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn octet-server");
        let stdout = child.stdout.take().expect("stdout");
        let mut reader = BufReader::new(stdout);
        let mut line = String::new();
        reader
            .read_line(&mut line)
            .expect("read the listening line");
        let addr = line
            .trim()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
            .to_string();
        let lines = (0..more)
            .map(|_| {
                let mut l = String::new();
                reader.read_line(&mut l).expect("read a line");
                l.trim().to_string()
            })
            .collect();
        (ServerProc { child, addr }, lines)
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// SIGKILL: no drain, no flush.
    pub fn kill9(mut self) {
        self.child.kill().expect("kill");
        self.child.wait().expect("wait");
    }

    /// SIGTERM, then waits for a clean exit.
    pub fn terminate(mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        let ok = Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("kill -TERM");
        assert!(ok.success());
        self.child.wait().expect("wait")
    }
}

impl Drop for ServerProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Adds an API key header (or nothing) to every call.
#[derive(Clone)]
pub struct Key(pub Option<(&'static str, String)>);

impl tonic::service::Interceptor for Key {
    fn call(&mut self, mut req: Request<()>) -> Result<Request<()>, Status> {
        if let Some((h, v)) = &self.0 {
            req.metadata_mut().insert(*h, v.parse().expect("ascii key"));
        }
        Ok(req)
    }
}

pub type Ch = InterceptedService<Channel, Key>;

/// One client per service over one channel.
pub struct Clients {
    pub collections: pb::collections_client::CollectionsClient<Ch>,
    pub points: pb::points_client::PointsClient<Ch>,
    pub search: pb::search_client::SearchClient<Ch>,
    pub admin: pb::admin_client::AdminClient<Ch>,
}

pub async fn channel(url: &str) -> Channel {
    Channel::from_shared(url.to_string())
        .expect("url")
        .connect()
        .await
        .expect("connect")
}

pub async fn clients(url: &str, key: Key) -> Clients {
    let ch = channel(url).await;
    Clients {
        collections: pb::collections_client::CollectionsClient::with_interceptor(
            ch.clone(),
            key.clone(),
        ),
        points: pb::points_client::PointsClient::with_interceptor(ch.clone(), key.clone()),
        search: pb::search_client::SearchClient::with_interceptor(ch.clone(), key.clone()),
        admin: pb::admin_client::AdminClient::with_interceptor(ch, key),
    }
}

/// A deterministic vector (splitmix-style), no two ids alike.
pub fn vector(id: u64, dim: usize) -> Vec<f32> {
    (0..dim as u64)
        .map(|j| {
            let mut z = id
                .wrapping_mul(0x9E37_79B9_7F4A_7C15)
                .wrapping_add(j.wrapping_mul(0xBF58_476D_1CE4_E5B9));
            z ^= z >> 31;
            z = z.wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^= z >> 29;
            (z % 2001) as f32 / 1000.0 - 1.0
        })
        .collect()
}

pub fn point(id: u64, dim: usize, tenant: &str) -> pb::Point {
    pb::Point {
        id,
        vector: vector(id, dim),
        payload_json: format!(r#"{{"text":"chunk {id}","tenant":"{tenant}","n":{id}}}"#),
    }
}

pub fn tenant_filter(tenant: &str) -> pb::Filter {
    pb::Filter {
        must: vec![pb::Condition {
            condition: Some(pb::condition::Condition::Match(pb::MatchCondition {
                key: "tenant".into(),
                value: Some(pb::MatchValue {
                    value: Some(pb::match_value::Value::Keyword(tenant.into())),
                }),
            })),
        }],
        ..Default::default()
    }
}

pub fn config(dim: u32) -> pb::CollectionConfig {
    pb::CollectionConfig {
        dim,
        metric: pb::Metric::Cosine as i32,
        // Small seal threshold so tests reach sealed segments quickly.
        seal_threshold: 64,
        ..Default::default()
    }
}

/// Creates collection `name` with `config`.
pub async fn create(c: &mut Clients, name: &str, config: pb::CollectionConfig) {
    c.collections
        .create(pb::CreateCollectionRequest {
            name: name.into(),
            config: Some(config),
        })
        .await
        .unwrap_or_else(|s| panic!("create `{name}`: {s:?}"));
}

/// Live points in collection `name`.
pub async fn count(c: &mut Clients, name: &str) -> u64 {
    c.points
        .count(pb::CountRequest {
            collection: name.into(),
            filter: None,
        })
        .await
        .unwrap_or_else(|s| panic!("count `{name}`: {s:?}"))
        .into_inner()
        .count
}

/// A plain HTTP/1.1 GET (one request per connection): status code, headers
/// (lower-cased names) and body.
pub fn http_get(addr: &str, path: &str, headers: &[(&str, &str)]) -> (u16, String, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).expect("connect over HTTP");
    let mut req = format!("GET {path} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).expect("send the request");
    let mut raw = String::new();
    s.read_to_string(&mut raw).expect("read the response");
    let (head, body) = raw.split_once("\r\n\r\n").expect("a header block");
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status in {head:?}"));
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body)
    } else {
        body.to_string()
    };
    (status, head.to_ascii_lowercase(), body)
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    loop {
        let (size, rest) = body.split_once("\r\n").expect("a chunk size line");
        let n = usize::from_str_radix(size.trim(), 16).expect("a hex chunk size");
        if n == 0 {
            return out;
        }
        out.push_str(&rest[..n]);
        body = &rest[n + 2..];
    }
}
