//! A private PostgreSQL cluster for one test that must stop and start the database server itself
//! (the shared server of `DATABASE_URL` is never restarted: other tests run on it). `initdb` in a
//! temporary folder, `pg_ctl start` on a free loopback port; [`PrivatePostgres::restart`] stops
//! it (fast shutdown: every connection is cut, as a crash or a failover would) and starts it
//! again on the same port. Stopped immediately and removed on drop. Bounded: each `pg_ctl` waits
//! at most 60 s.

use std::path::{Path, PathBuf};
use std::process::Command;

pub struct PrivatePostgres {
    bin: PathBuf,
    data: PathBuf,
    pub port: u16,
}

/// The newest installed server's programs (`/usr/lib/postgresql/<v>/bin`, as Debian installs
/// them; `infra/services.sh` installs the package when a machine has none).
fn server_bin() -> Option<PathBuf> {
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .flatten()
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = entry.path().join("bin");
            bin.join("initdb").exists().then_some((version, bin))
        })
        .collect();
    found.sort();
    found.pop().map(|(_, bin)| bin)
}

fn is_root() -> bool {
    // `id -u` rather than libc: the harness has no unsafe code.
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|out| out.stdout.starts_with(b"0\n"))
}

/// `program args…`, as `postgres` when we are root (initdb and the server refuse root).
fn run(program: &Path, args: &[&str]) -> Result<(), String> {
    let mut command = if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(program);
        c
    } else {
        Command::new(program)
    };
    let out = command
        .args(args)
        .output()
        .map_err(|e| format!("{}: {e}", program.display()))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{} {args:?}: {}{}",
            program.display(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

impl PrivatePostgres {
    /// A new cluster, started. Panics with what to install when the machine has no server
    /// programs (the suite's own script installs them).
    pub fn start() -> PrivatePostgres {
        let bin = server_bin().expect(
            "PostgreSQL's server programs (/usr/lib/postgresql/<v>/bin); ./infra/test.sh installs them",
        );
        let data = std::env::temp_dir().join(format!("pt-pg-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&data).expect("a folder for the cluster");
        if is_root() {
            let chowned = Command::new("chown")
                .args(["postgres:", data.to_str().unwrap()])
                .status()
                .is_ok_and(|s| s.success());
            assert!(chowned, "the cluster's folder belongs to postgres");
        }
        let data_str = data.to_str().expect("a utf-8 temp path").to_owned();
        run(
            &bin.join("initdb"),
            &[
                "-D",
                &data_str,
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
                "--no-sync",
            ],
        )
        .expect("initdb");
        let cluster = PrivatePostgres {
            bin,
            data,
            port: free_port(),
        };
        cluster.pg_ctl_start();
        cluster
    }

    fn pg_ctl_start(&self) {
        let data = self.data.to_str().unwrap();
        let options = format!(
            "-p {} -k {data} -c listen_addresses=127.0.0.1 -c max_connections=60 -c fsync=off",
            self.port
        );
        let log = format!("{data}/server.log");
        run(
            &self.bin.join("pg_ctl"),
            &[
                "-D", data, "-l", &log, "-w", "-t", "60", "-o", &options, "start",
            ],
        )
        .expect("pg_ctl start");
    }

    fn pg_ctl_stop(&self, mode: &str) -> Result<(), String> {
        run(
            &self.bin.join("pg_ctl"),
            &[
                "-D",
                self.data.to_str().unwrap(),
                "-w",
                "-t",
                "60",
                "-m",
                mode,
                "stop",
            ],
        )
    }

    /// The URL of the cluster's `postgres` database (for [`crate::TestDb::on`]).
    pub fn admin_url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// Fast shutdown (every session is cut off) and nothing listening on the port.
    pub fn stop(&self) {
        self.pg_ctl_stop("fast").expect("pg_ctl stop");
    }

    /// Started again on the same port, with what it had.
    pub fn start_again(&self) {
        self.pg_ctl_start();
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        let _ = self.pg_ctl_stop("immediate");
        let _ = std::fs::remove_dir_all(&self.data);
    }
}
