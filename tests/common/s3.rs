//! S3 for the tests: Garage, a production S3 server. The shared one that `scripts/test.sh`
//! starts (`STRATA_TEST_S3_*`), or a private one a test can stop and restart (outages).
//! Objects are read and written with Python's boto3 and tarfile: readers independent of
//! Strata's own S3 and tar code.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const KEY_ID: &str = "GK0123456789abcdef01234567";
pub const SECRET: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

/// Where a test's packs go: a server, a bucket, and a prefix no other test uses.
pub struct S3Place {
    pub endpoint: String,
    pub bucket: String,
    pub key_id: String,
    pub secret: String,
    pub prefix: String,
}

impl S3Place {
    /// The shared server from `scripts/test.sh`, under a fresh prefix.
    pub fn shared() -> S3Place {
        let var = |name: &str| {
            std::env::var(name).unwrap_or_else(|_| {
                panic!("{name} is not set: the S3 tests need the Garage server that scripts/test.sh starts")
            })
        };
        S3Place {
            endpoint: var("STRATA_TEST_S3_ENDPOINT"),
            bucket: var("STRATA_TEST_S3_BUCKET"),
            key_id: var("STRATA_TEST_S3_ACCESS_KEY_ID"),
            secret: var("STRATA_TEST_S3_SECRET_ACCESS_KEY"),
            prefix: unique_prefix(),
        }
    }

    /// A `[[nearline.targets]]` table for this place; credentials go in files under `dir`.
    pub fn target_toml(&self, name: &str, dir: &Path, extra: &str) -> String {
        let id_file = dir.join(format!("{name}-key-id"));
        let secret_file = dir.join(format!("{name}-secret"));
        std::fs::write(&id_file, format!("{}\n", self.key_id)).expect("write key id");
        std::fs::write(&secret_file, format!("{}\n", self.secret)).expect("write secret");
        format!(
            "[[nearline.targets]]\nname = \"{name}\"\nkind = \"s3\"\nendpoint = \"{}\"\nregion = \"garage\"\n\
             bucket = \"{}\"\nprefix = \"{}\"\naccess_key_id_file = \"{}\"\nsecret_access_key_file = \"{}\"\n{extra}\n",
            self.endpoint,
            self.bucket,
            self.prefix,
            id_file.display(),
            secret_file.display()
        )
    }

    fn boto3(&self, script: &str, args: &[&str]) -> String {
        let program = format!(
            "import boto3, sys, json, hashlib, tarfile, io\n\
             s3 = boto3.client('s3', endpoint_url=sys.argv[1], region_name='garage', \
             aws_access_key_id=sys.argv[2], aws_secret_access_key=sys.argv[3])\n\
             bucket = sys.argv[4]\nargs = sys.argv[5:]\n{script}"
        );
        let mut all = vec![
            "-c",
            program.as_str(),
            &self.endpoint,
            &self.key_id,
            &self.secret,
            &self.bucket,
        ];
        all.extend_from_slice(args);
        let output = super::dcmtk::python(&all, None);
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// Every object key under this place's prefix (and `more`), sorted.
    pub fn keys(&self, more: &str) -> Vec<String> {
        let prefix = format!("{}{more}", self.prefix);
        let listed = self.boto3(
            "p = s3.get_paginator('list_objects_v2')\n\
             for page in p.paginate(Bucket=bucket, Prefix=args[0]):\n\
             \x20   for o in page.get('Contents', []): print(o['Key'])",
            &[&prefix],
        );
        let mut keys: Vec<String> = listed.lines().map(str::to_string).collect();
        keys.sort();
        keys
    }

    /// Multipart uploads still open under the prefix (an interrupted upload must not leave any).
    pub fn open_uploads(&self) -> usize {
        self.boto3(
            "r = s3.list_multipart_uploads(Bucket=bucket, Prefix=args[0])\nprint(len(r.get('Uploads', [])))",
            &[&self.prefix],
        )
        .trim()
        .parse()
        .expect("count")
    }

    /// Reads a pack with Python's tarfile: the member names in order, the manifest, and each
    /// member's size and SHA-256.
    pub fn read_pack(&self, key: &str) -> serde_json::Value {
        let text = self.boto3(
            "body = s3.get_object(Bucket=bucket, Key=args[0])['Body'].read()\n\
             t = tarfile.open(fileobj=io.BytesIO(body), mode='r:')\n\
             names = t.getnames()\n\
             manifest = json.load(t.extractfile(names[0]))\n\
             members = {m.name: {'size': m.size, 'sha256': hashlib.sha256(t.extractfile(m).read()).hexdigest()} for m in t.getmembers()[1:]}\n\
             print(json.dumps({'names': names, 'manifest': manifest, 'members': members}))",
            &[key],
        );
        serde_json::from_str(&text).expect("pack description")
    }

    /// Overwrites an object with the same bytes but one flipped in the middle.
    pub fn corrupt(&self, key: &str) {
        self.boto3(
            "body = bytearray(s3.get_object(Bucket=bucket, Key=args[0])['Body'].read())\n\
             body[len(body) // 2] ^= 0xFF\n\
             s3.put_object(Bucket=bucket, Key=args[0], Body=bytes(body))",
            &[key],
        );
    }
}

fn unique_prefix() -> String {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!(
        "t{}-{}-{}/",
        std::process::id(),
        n,
        archive_core::index::now_millis() % 1_000_000
    )
}

/// The `garage` binary: `$STRATA_TEST_GARAGE`, else `~/.cargo/bin/garage`, else `PATH`.
pub fn garage_binary() -> PathBuf {
    if let Ok(path) = std::env::var("STRATA_TEST_GARAGE") {
        return PathBuf::from(path);
    }
    if let Ok(home) = std::env::var("HOME") {
        let candidate = Path::new(&home).join(".cargo/bin/garage");
        if candidate.exists() {
            return candidate;
        }
    }
    PathBuf::from("garage")
}

/// A private single-node Garage in a temporary directory.
pub struct Garage {
    dir: tempfile::TempDir,
    config: PathBuf,
    pub s3_port: u16,
    child: Option<Child>,
    logs: Vec<PathBuf>,
}

impl Garage {
    pub fn start() -> Garage {
        let dir = tempfile::tempdir().expect("tempdir");
        let s3_port = super::free_port();
        let rpc_port = super::free_port();
        let config = dir.path().join("garage.toml");
        let secret: String = (0..32)
            .map(|i| format!("{:02x}", (i * 37 + s3_port as usize) % 256))
            .collect();
        std::fs::write(
            &config,
            format!(
                "metadata_dir = \"{d}/meta\"\ndata_dir = \"{d}/data\"\ndb_engine = \"sqlite\"\n\
                 replication_factor = 1\nrpc_bind_addr = \"127.0.0.1:{rpc_port}\"\n\
                 rpc_public_addr = \"127.0.0.1:{rpc_port}\"\nrpc_secret = \"{secret}\"\n\
                 [s3_api]\ns3_region = \"garage\"\napi_bind_addr = \"127.0.0.1:{s3_port}\"\n\
                 root_domain = \".s3.garage.localhost\"\n",
                d = dir.path().display()
            ),
        )
        .expect("garage config");
        let mut garage = Garage {
            dir,
            config,
            s3_port,
            child: None,
            logs: Vec::new(),
        };
        garage.run_server();
        let node = garage.admin(&["node", "id", "-q"]);
        let node = node
            .split('@')
            .next()
            .unwrap_or_default()
            .trim()
            .to_string();
        garage.admin(&["layout", "assign", "-z", "dc1", "-c", "1G", &node]);
        garage.admin(&["layout", "apply", "--version", "1"]);
        garage.admin(&["key", "import", "--yes", KEY_ID, SECRET, "-n", "test"]);
        garage.admin(&["bucket", "create", "strata"]);
        garage.admin(&[
            "bucket", "allow", "--read", "--write", "--owner", "strata", "--key", "test",
        ]);
        garage
    }

    pub fn place(&self) -> S3Place {
        S3Place {
            endpoint: format!("http://127.0.0.1:{}", self.s3_port),
            bucket: "strata".into(),
            key_id: KEY_ID.into(),
            secret: SECRET.into(),
            prefix: unique_prefix(),
        }
    }

    fn run_server(&mut self) {
        let log_path = self
            .dir
            .path()
            .join(format!("server-{}.log", self.logs.len()));
        let log = std::fs::File::create(&log_path).expect("log");
        self.logs.push(log_path);
        let child = Command::new(garage_binary())
            .arg("-c")
            .arg(&self.config)
            .arg("server")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot run garage ({e}); scripts/test.sh installs it (cargo install garage)"
                )
            });
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", self.s3_port)).is_err() {
            assert!(Instant::now() < deadline, "garage did not start listening");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn admin(&self, args: &[&str]) -> String {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let output = Command::new(garage_binary())
                .arg("-c")
                .arg(&self.config)
                .args(args)
                .output()
                .expect("garage admin");
            if output.status.success() {
                return String::from_utf8_lossy(&output.stdout).into_owned();
            }
            assert!(
                Instant::now() < deadline,
                "garage {args:?}: {}",
                String::from_utf8_lossy(&output.stderr)
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// GetObject requests (whole or ranged) the server logged for `key` (bucket-relative),
    /// as the S3 server's own request log tells it.
    pub fn object_gets(&self, key: &str) -> usize {
        let wanted = format!("GET /strata/{key}?x-id=GetObject");
        self.logs
            .iter()
            .map(|log| {
                std::fs::read_to_string(log)
                    .unwrap_or_default()
                    .lines()
                    .filter(|line| line.contains(&wanted))
                    .count()
            })
            .sum()
    }

    /// SIGKILL: the S3 server is gone, as in an outage.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the same node again, with its data.
    pub fn resume(&mut self) {
        self.stop();
        self.run_server();
    }
}

impl Drop for Garage {
    fn drop(&mut self) {
        self.stop();
    }
}
