//! The user this process runs as, for permission messages and fixes.

use std::sync::OnceLock;

struct CurrentUser {
    uid: Option<u32>,
    name: Option<String>,
}

fn current_user() -> &'static CurrentUser {
    static USER: OnceLock<CurrentUser> = OnceLock::new();
    USER.get_or_init(|| {
        let uid = std::fs::read_to_string("/proc/self/status").ok().and_then(|s| effective_uid_from_status(&s));
        let name = uid
            .and_then(|uid| std::fs::read_to_string("/etc/passwd").ok().and_then(|p| user_name_from_passwd(&p, uid)));
        CurrentUser { uid, name }
    })
}

/// The effective uid from a `/proc/self/status` text (`Uid:\treal\teffective\tsaved\tfs`).
fn effective_uid_from_status(status: &str) -> Option<u32> {
    let line = status.lines().find(|l| l.starts_with("Uid:"))?;
    let mut fields = line["Uid:".len()..].split_whitespace();
    let real = fields.next()?;
    fields.next().unwrap_or(real).parse().ok()
}

fn user_name_from_passwd(passwd: &str, uid: u32) -> Option<String> {
    passwd.lines().find_map(|l| {
        let mut f = l.split(':');
        let name = f.next()?;
        let _pw = f.next()?;
        let u: u32 = f.next()?.parse().ok()?;
        (u == uid && !name.is_empty()).then(|| name.to_owned())
    })
}

pub(crate) fn current_user_name() -> Option<String> {
    let u = current_user();
    u.name.clone().or_else(|| u.uid.map(|uid| uid.to_string()))
}

/// `uid 1000 (caddy)`, `uid 1000`, or `this user` when /proc is unavailable.
pub(crate) fn current_user_label() -> String {
    let u = current_user();
    match (u.uid, &u.name) {
        (Some(uid), Some(name)) => format!("uid {uid} ({name})"),
        (Some(uid), None) => format!("uid {uid}"),
        _ => "this user".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uid_and_name() {
        assert_eq!(effective_uid_from_status("Name:\tx\nUid:\t1000\t1001\t1000\t1000\n"), Some(1001));
        assert_eq!(effective_uid_from_status("Name:\tx\n"), None);
        assert_eq!(
            user_name_from_passwd("root:x:0:0::/root:/bin/sh\ncaddy:x:239:239::/var/lib/caddy:/sbin/nologin\n", 239),
            Some("caddy".to_owned())
        );
        assert_eq!(user_name_from_passwd("root:x:0:0::/root:/bin/sh\n", 5), None);
    }
}
