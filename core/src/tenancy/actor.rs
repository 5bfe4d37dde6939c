//! Who acts: a person signed in (staff, a shop tenant) or the system itself — a worker of the
//! platform (the rating worker, the power rules, the command line). Services take a
//! [`crate::auth::Principal`], whose [`Actor`] says which; the audit log records a system actor as
//! `system:<worker>` with no user id, so no worker ever passes for a platform admin.

use serde::Serialize;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Actor {
    /// The signed-in user named by the principal.
    Person,
    /// A platform worker acting on its own (rules, schedules, the CLI).
    System { worker: String },
}

impl Actor {
    /// How the audit log names this actor when it is the system.
    pub fn system_label(&self) -> Option<String> {
        match self {
            Actor::Person => None,
            Actor::System { worker } => Some(format!("system:{worker}")),
        }
    }
}
