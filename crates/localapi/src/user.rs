//! The user this process runs as, for permission messages and their fixes.
//!
//! The name comes from the system's user database through `getpwuid_r` (nix), so NSS
//! sources (LDAP, systemd's `DynamicUser=` users from nss-systemd) are found, not only
//! `/etc/passwd`.

use std::sync::OnceLock;

use nix::unistd::{Uid, User};

/// The effective user of this process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CurrentUser {
    /// Effective uid.
    pub uid: u32,
    /// Its name in the user database, when it has one.
    pub name: Option<String>,
}

impl CurrentUser {
    /// The name, or the uid as text when the user database has no entry for it.
    pub fn name_or_uid(&self) -> String {
        self.name.clone().unwrap_or_else(|| self.uid.to_string())
    }

    /// `uid 1000 (caddy)`, or `uid 1000` when the uid has no name.
    pub fn label(&self) -> String {
        match &self.name {
            Some(name) => format!("uid {} ({name})", self.uid),
            None => format!("uid {}", self.uid),
        }
    }
}

/// The effective user, looked up once per process.
pub fn current_user() -> &'static CurrentUser {
    static USER: OnceLock<CurrentUser> = OnceLock::new();
    USER.get_or_init(|| {
        let uid = nix::unistd::geteuid();
        CurrentUser { uid: uid.as_raw(), name: user_name(uid) }
    })
}

fn user_name(uid: Uid) -> Option<String> {
    User::from_uid(uid).ok().flatten().map(|u| u.name).filter(|n| !n.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_is_named_and_labels_read_well() {
        assert_eq!(user_name(Uid::from_raw(0)).as_deref(), Some("root"));
        let named = CurrentUser { uid: 239, name: Some("caddy".into()) };
        assert_eq!((named.label(), named.name_or_uid()), ("uid 239 (caddy)".into(), "caddy".into()));
        let bare = CurrentUser { uid: 61234, name: None };
        assert_eq!((bare.label(), bare.name_or_uid()), ("uid 61234".into(), "61234".into()));
        assert_eq!(current_user().uid, nix::unistd::geteuid().as_raw());
    }
}
