//! An ssh destination as the user names it (docs/design.md, "The ssh destination: the SFTP
//! client"): `[user@]host:/absolute/path` (scp and rsync's form) or
//! `ssh://[user@]host[:port]/absolute/path`, reached with the system `ssh` (or the user's
//! `--ssh-command`), whose SFTP subsystem serves the storage (`sftp.rs`).
//!
//! The rule that tells one from a local path: a colon before the first slash, something before
//! it that is not a Windows drive letter (`C:\acq`), and an absolute path after it; and no local
//! path of that very name (`./a:b` has its slash first; a folder really named `host:` is local).

use std::io;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::sftp::{Options, Reply, Request, Session, SftpError};

/// Where on which host.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Remote {
    /// `host` or `user@host`, as given to ssh.
    pub host: String,
    pub port: Option<u16>,
    /// Absolute on the server.
    pub path: PathBuf,
}

impl Remote {
    /// The ssh destination `text` names, if it names one (see the module's rule).
    pub fn parse(text: &str) -> Option<Remote> {
        // Only a name of the remote forms is looked for here (a path with no colon is never a
        // look at the filesystem: on a dead share a stat hangs, and this is asked on the
        // service's loop).
        let remote = Remote::parse_form(text)?;
        if Path::new(text).symlink_metadata().is_ok() {
            return None;
        }
        Some(remote)
    }

    /// The ssh destination `text` names by its form alone.
    fn parse_form(text: &str) -> Option<Remote> {
        if let Some(rest) = text.strip_prefix("ssh://") {
            let (authority, path) = rest.split_at(rest.find('/')?);
            let (host, port) = match authority.rsplit_once(':') {
                Some((h, p)) => (h, Some(p.parse().ok()?)),
                None => (authority, None),
            };
            return (!host.is_empty()).then(|| Remote { host: host.into(), port, path: path.into() });
        }
        let (host, path) = text.split_once(':')?;
        let drive = host.len() == 1 && host.chars().all(|c| c.is_ascii_alphabetic());
        if host.is_empty() || host.contains('/') || host.contains('\\') || drive || !path.starts_with('/') {
            return None;
        }
        Some(Remote { host: host.into(), port: None, path: path.into() })
    }

    /// How the user sees it, for messages.
    pub fn shown(&self) -> String {
        match self.port {
            Some(p) => format!("ssh://{}:{p}{}", self.host, self.path.display()),
            None => format!("{}:{}", self.host, self.path.display()),
        }
    }

    /// The command that starts its SFTP session: `ssh -o BatchMode=yes` (never a prompt that
    /// hangs an unattended run), or the user's `ssh_command` split at spaces (no quoting: like
    /// rsync's `-e`, a program and its options), then the port, `-s`, `--`, the host and `sftp`
    /// (as OpenSSH's own sftp does: after `--` a host beginning with `-` is a host, never an option
    /// such as `-oProxyCommand=…`). A custom command gets no BatchMode: it is the user's to add.
    pub fn command(&self, ssh_command: Option<&str>) -> Command {
        self.ssh(ssh_command, &["-s", "--", self.host.as_str(), "sftp"])
    }

    /// The command that starts a shell on the host (`remote_exec::Shell`): the same ssh as
    /// [`Remote::command`]'s, running `sh` in place of the SFTP subsystem.
    pub fn shell(&self, ssh_command: Option<&str>) -> Command {
        self.ssh(ssh_command, &["--", self.host.as_str(), "sh"])
    }

    fn ssh(&self, ssh_command: Option<&str>, then: &[&str]) -> Command {
        let default = "ssh -o BatchMode=yes";
        let mut words = ssh_command.unwrap_or(default).split_whitespace();
        let mut c = Command::new(words.next().unwrap_or("ssh"));
        c.args(words);
        if let Some(p) = self.port {
            c.args(["-p", &p.to_string()]);
        }
        c.args(then);
        c
    }

    /// Starts an SFTP session to it. The error is one line a person can act on: what ssh said
    /// last (an unknown host, a host key not trusted, authentication refused, no SFTP subsystem).
    pub fn connect(&self, ssh_command: Option<&str>) -> Result<Session, String> {
        let options = Options { handshake_timeout: std::time::Duration::from_secs(60), ..Options::default() };
        Session::spawn(self.command(ssh_command), options).map_err(|e| match e {
            SftpError::ConnectionLost(why) if why.is_empty() => format!("cannot reach {}", self.shown()),
            SftpError::ConnectionLost(why) => format!("cannot reach {}: {why}", self.shown()),
            other => format!("cannot reach {}: {other}", self.shown()),
        })
    }
}

impl Remote {
    /// Why `e`, met opening the destination's folder, is for a person to act on (one line), if
    /// it is: its parent missing (only the folder itself is made), permission denied, a file.
    pub fn refusal(&self, e: &io::Error) -> Option<String> {
        let shown = self.shown();
        match e.kind() {
            io::ErrorKind::NotFound => Some(format!(
                "destination {shown}: its folder {} does not exist (softcopy makes only the last one)",
                self.path.parent().unwrap_or(&self.path).display()
            )),
            io::ErrorKind::PermissionDenied => Some(format!("destination {shown}: permission denied")),
            io::ErrorKind::NotADirectory => Some(format!("destination {shown} is a file, not a folder")),
            _ => None,
        }
    }

    /// Checks, before a copy starts, what a person must act on: the host reached over SFTP (ssh's
    /// own words when not), and the folder there or its parent there to make it in. Makes nothing.
    pub fn check(&self, ssh_command: Option<&str>) -> Result<(), String> {
        let session = self.connect(ssh_command)?;
        let cannot = |e: io::Error| self.refusal(&e).unwrap_or_else(|| format!("destination {}: {e}", self.shown()));
        let look = |p: &Path| -> io::Result<crate::sftp::Attrs> {
            let path = p.to_string_lossy().replace('\\', "/");
            match session.call(&Request::Stat(path.as_bytes()))? {
                Reply::Attrs(a) => Ok(a),
                _ => Err(io::Error::other("unexpected reply")),
            }
        };
        match look(&self.path) {
            Ok(a) if a.is_dir() => Ok(()),
            Ok(_) => Err(cannot(io::ErrorKind::NotADirectory.into())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => match look(self.path.parent().unwrap_or(&self.path)) {
                Ok(a) if a.is_dir() => Ok(()),
                Ok(_) => Err(cannot(io::ErrorKind::NotFound.into())),
                Err(e) => Err(cannot(e)),
            },
            Err(e) => Err(cannot(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scp_and_ssh_forms_are_remote_and_local_paths_with_a_colon_stay_local() {
        let r = |t: &str| Remote::parse(t);
        assert_eq!(r("cluster:/lab/raw"), Some(Remote { host: "cluster".into(), port: None, path: "/lab/raw".into() }));
        assert_eq!(r("me@c.org:/x").map(|r| r.host), Some("me@c.org".into()));
        let ssh = r("ssh://me@c.org:2222/lab/x").unwrap();
        assert_eq!((ssh.host.as_str(), ssh.port, ssh.path.as_path()), ("me@c.org", Some(2222), Path::new("/lab/x")));
        assert_eq!(r("ssh://c.org/x").map(|r| r.port), Some(None));
        for local in ["./a:b", "/data/a:b", "a:b", "C:\\acq", "C:/acq", "", ":/x", "ssh://c.org", "ssh://:22/x"] {
            assert_eq!(r(local), None, "{local}");
        }
    }

    #[test]
    fn the_default_command_never_prompts_and_a_custom_one_is_the_users() {
        let args = |c: &Command| c.get_args().map(|a| a.to_string_lossy().into_owned()).collect::<Vec<_>>();
        let r = Remote::parse("ssh://me@c.org:2222/x").unwrap();
        let c = r.command(None);
        assert_eq!(c.get_program(), "ssh");
        assert_eq!(args(&c), ["-o", "BatchMode=yes", "-p", "2222", "-s", "--", "me@c.org", "sftp"]);
        let c = r.command(Some("ssh -i /k/lab_key"));
        assert_eq!(args(&c), ["-i", "/k/lab_key", "-p", "2222", "-s", "--", "me@c.org", "sftp"]);
        // A host that looks like an option stays a host.
        let c = Remote::parse("-oProxyCommand=touch:/x").unwrap().command(None);
        assert_eq!(args(&c)[2..], ["-s", "--", "-oProxyCommand=touch", "sftp"]);
        let c = r.shell(Some("ssh -i /k/lab_key"));
        assert_eq!(args(&c), ["-i", "/k/lab_key", "-p", "2222", "--", "me@c.org", "sh"]);
    }
}
