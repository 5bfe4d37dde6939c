//! A private Mosquitto for one test, on a free port, killed (and its folder removed) on drop.
//! [`Broker::start`] lets anyone in; [`Broker::with_dynamic_security`] loads the Debian package's
//! dynamic-security plugin with an admin login made by `mosquitto_ctrl dynsec init`, and refuses
//! anonymous clients, as the broker `infra/services.sh` starts does.

use crate::wait_until;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::Duration;

/// Where Debian's package puts the plugin.
pub const DYNSEC_PLUGIN: &str = "/usr/lib/x86_64-linux-gnu/mosquitto_dynamic_security.so";

pub struct Broker {
    child: Child,
    pub port: u16,
    /// The dynamic-security admin login, when the plugin is loaded.
    pub admin: Option<(String, String)>,
    dir: PathBuf,
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn program(name: &str) -> String {
    let sbin = format!("/usr/sbin/{name}");
    let bin = format!("/usr/bin/{name}");
    [sbin, bin]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .unwrap_or_else(|| name.to_owned())
}

impl Broker {
    /// An open broker (anonymous clients may do anything).
    pub async fn start() -> Broker {
        Self::launch(false).await
    }

    /// A broker with the dynamic-security plugin; only `admin` can log in at first.
    pub async fn with_dynamic_security() -> Broker {
        Self::launch(true).await
    }

    async fn launch(dynsec: bool) -> Broker {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .expect("a free port")
            .local_addr()
            .expect("an address")
            .port();
        let dir = std::env::temp_dir().join(format!("pt-mosquitto-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).expect("a temporary folder");
        // As infra/services.sh's broker: a queue deep enough that a slow subscriber loses nothing.
        let mut conf =
            format!("listener {port} 127.0.0.1\npersistence false\nmax_queued_messages 100000\n");
        let mut admin = None;
        if dynsec {
            let file = dir.join("dynamic-security.json");
            let password = uuid::Uuid::new_v4().simple().to_string();
            let made = Command::new(program("mosquitto_ctrl"))
                .args(["dynsec", "init"])
                .arg(&file)
                .args(["powertab-admin", &password])
                .output()
                .expect("mosquitto_ctrl (Debian package mosquitto) is installed");
            assert!(made.status.success(), "dynsec init: {made:?}");
            conf.push_str(&format!(
                "allow_anonymous false\nplugin {DYNSEC_PLUGIN}\nplugin_opt_config_file {}\n",
                file.display()
            ));
            admin = Some(("powertab-admin".to_owned(), password));
        } else {
            conf.push_str("allow_anonymous true\n");
        }
        let conf_file = dir.join("mosquitto.conf");
        std::fs::write(&conf_file, conf).expect("the broker's configuration");
        let child = Command::new(program("mosquitto"))
            .arg("-c")
            .arg(&conf_file)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("mosquitto (Debian package) is installed");
        let up = wait_until(Duration::from_secs(10), || async {
            tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
        })
        .await;
        assert!(up, "mosquitto listens on {port}");
        Broker {
            child,
            port,
            admin,
            dir,
        }
    }
}
