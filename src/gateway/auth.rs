//! Platform logins (`05`, a forwarding platform's login, docs/GBT32960.md §2): the
//! `--platform-credentials` file and the check of a login's username and password.
//!
//! Passwords are compared in constant time (an xor-fold over the whole 20-byte field) and
//! never logged or formatted: [`Credentials`]' `Debug` shows only how many users it holds.

use std::collections::HashMap;
use std::path::Path;

use anyhow::{Context, Result, bail};

/// Width of the username field of a platform login.
pub const USERNAME_LEN: usize = 12;
/// Width of the password field of a platform login.
pub const PASSWORD_LEN: usize = 20;

/// The platforms allowed to log in: username → password, each padded with NUL to its
/// field's width.
#[derive(Clone)]
pub struct Credentials {
    users: HashMap<Vec<u8>, [u8; PASSWORD_LEN]>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Credentials({} users)", self.users.len())
    }
}

/// A field without its padding: trailing NUL or space bytes are not part of it.
fn unpadded(field: &[u8]) -> &[u8] {
    let end = field
        .iter()
        .rposition(|&b| b != 0 && b != b' ')
        .map_or(0, |i| i + 1);
    &field[..end]
}

fn padded<const N: usize>(s: &[u8]) -> [u8; N] {
    let mut out = [0u8; N];
    out[..s.len()].copy_from_slice(s);
    out
}

impl Credentials {
    /// Reads `username:password` lines (blank lines and `#` comments skipped; the line is
    /// trimmed). Usernames are 1–12 and passwords 1–20 printable ASCII characters; an
    /// error names the line, never the password.
    pub fn read(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read --platform-credentials {}", path.display()))?;
        Self::parse(&text).with_context(|| format!("in --platform-credentials {}", path.display()))
    }

    pub fn parse(text: &str) -> Result<Self> {
        let mut users = HashMap::new();
        for (i, line) in text.lines().enumerate() {
            let n = i + 1;
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let Some((user, pass)) = line.split_once(':') else {
                bail!("line {n} is not `username:password`");
            };
            let printable = |s: &str| s.bytes().all(|b| b.is_ascii_graphic() || b == b' ');
            if user.is_empty() || user.len() > USERNAME_LEN || !printable(user) {
                bail!(
                    "line {n}: the username must be 1 to {USERNAME_LEN} printable ASCII characters"
                );
            }
            let (user, pass) = (user.trim_end(), pass.trim_start());
            if pass.is_empty() || pass.len() > PASSWORD_LEN || !printable(pass) {
                bail!(
                    "line {n}: the password of {user:?} must be 1 to {PASSWORD_LEN} printable ASCII characters"
                );
            }
            if users
                .insert(user.as_bytes().to_vec(), padded(pass.as_bytes()))
                .is_some()
            {
                bail!("line {n}: username {user:?} is listed twice");
            }
        }
        if users.is_empty() {
            bail!("no `username:password` line");
        }
        Ok(Credentials { users })
    }

    /// Whether a login's username (12-byte field) and password (20-byte field) match a
    /// listed user. The password comparison takes the same time whatever the bytes (and
    /// whether the username is listed).
    pub fn check(&self, username: &[u8], password: &[u8]) -> bool {
        let user = unpadded(username);
        let given: [u8; PASSWORD_LEN] =
            padded(unpadded(&password[..PASSWORD_LEN.min(password.len())]));
        let (known, want) = match self.users.get(user) {
            Some(p) => (true, *p),
            None => (false, [0xFF; PASSWORD_LEN]),
        };
        let diff = want
            .iter()
            .zip(&given)
            .fold(0u8, |acc, (a, b)| acc | (a ^ b));
        known & (diff == 0)
    }

    /// The username of a login's 12-byte field, for logs.
    pub fn username(field: &[u8]) -> String {
        String::from_utf8_lossy(unpadded(field)).into_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_only_the_listed_password() {
        let c = Credentials::parse("# platforms\n\nfwd01:s3cret\nfwd02 : other pass \n").unwrap();
        let field = |s: &str, n: usize| {
            let mut v = s.as_bytes().to_vec();
            v.resize(n, 0);
            v
        };
        assert!(c.check(&field("fwd01", 12), &field("s3cret", 20)));
        assert!(c.check(&field("fwd02", 12), &field("other pass", 20)));
        let mut spaces = b"s3cret".to_vec();
        spaces.resize(20, b' ');
        assert!(c.check(&field("fwd01", 12), &spaces));
        assert!(!c.check(&field("fwd01", 12), &field("s3cre", 20)));
        assert!(!c.check(&field("fwd01", 12), &field("s3cretx", 20)));
        assert!(!c.check(&field("fwd02", 12), &field("s3cret", 20)));
        assert!(!c.check(&field("nobody", 12), &field("s3cret", 20)));
        assert!(!format!("{c:?}").contains("s3cret"));
    }

    #[test]
    fn bad_lines_are_named_without_the_password() {
        for (text, why) in [
            ("fwd01", "line 1 is not"),
            ("x:\n", "password"),
            ("toolongusername:p", "username"),
            ("u:123456789012345678901", "password"),
            ("u:a\nu:b", "twice"),
            ("# none", "no `username"),
        ] {
            let e = format!("{:#}", Credentials::parse(text).unwrap_err());
            assert!(e.contains(why), "{text:?}: {e}");
            assert!(!e.contains("123456789012345678901"), "{e}");
        }
    }
}
