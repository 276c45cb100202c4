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

/// Sessions a look at the destination reads with (verification's readers overlap their waits).
const VIEW_SESSIONS: usize = 4;

/// Where on which host.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
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

    /// The ssh destination `text` names by its form alone (the caller decided it is not a local
    /// path: Python's `SshDestination`).
    pub fn parse_form(text: &str) -> Option<Remote> {
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
        let mut c = self.ssh_program(ssh_command);
        c.args(["-s", "--", self.host.as_str(), "sftp"]);
        c
    }

    /// The ssh command and its options, the port included, without the host: what every
    /// connection to it starts with.
    fn ssh_program(&self, ssh_command: Option<&str>) -> Command {
        let default = "ssh -o BatchMode=yes";
        let mut words = ssh_command.unwrap_or(default).split_whitespace();
        let mut c = Command::new(words.next().unwrap_or("ssh"));
        c.args(words);
        if let Some(p) = self.port {
            c.args(["-p", &p.to_string()]);
        }
        c
    }

    /// The command that runs a remote command on it (added by the caller after `--` and the
    /// host: the remote shell reads it), through the same ssh as its SFTP sessions.
    pub fn ssh(&self, ssh_command: Option<&str>) -> Command {
        let mut c = self.ssh_program(ssh_command);
        c.args(["--", self.host.as_str()]);
        c
    }

    /// The command that starts a shell on the host (`remote_exec::Shell`): the same ssh as
    /// [`Remote::command`]'s, running `sh` in place of the SFTP subsystem.
    pub fn shell(&self, ssh_command: Option<&str>) -> Command {
        let mut c = self.ssh(ssh_command);
        c.arg("sh");
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

/// What must be there before a copy to an ssh destination starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Needed {
    /// The folder, or its parent to make it in (one acquisition's copy).
    FolderOrParent,
    /// The folder itself (the service's: each acquisition's copy is made in it, as for a local
    /// destination root, docs/design.md "Service").
    Folder,
}

impl Remote {
    /// The folder `name` in this one (one component: an acquisition's name in the service's root,
    /// which need not be UTF-8: SFTP's names are bytes).
    pub fn join(&self, name: &Path) -> Option<Remote> {
        let mut parts = name.components();
        let one = matches!((parts.next(), parts.next()), (Some(std::path::Component::Normal(_)), None));
        let plain = one && !name.as_os_str().as_encoded_bytes().contains(&b'\\');
        // Joined with `/` on every platform: it is the server's path (`Path::join` would put
        // Windows' separator in it, and in what is shown).
        let mut path = self.path.clone().into_os_string();
        if !path.as_encoded_bytes().ends_with(b"/") {
            path.push("/");
        }
        path.push(name.as_os_str());
        plain.then(|| Remote { path: PathBuf::from(path), ..self.clone() })
    }

    /// The destination for one-off looks (the service's start, `softcopy verify`, a note): one
    /// session, nothing made, nothing claimed. NotFound when the folder is not there; a host
    /// that cannot be reached is `NotConnected` with ssh's own words.
    pub fn open_dest(&self, ssh_command: Option<&str>) -> io::Result<crate::dest::Dest> {
        let session = self.connect(ssh_command).map_err(|why| io::Error::new(io::ErrorKind::NotConnected, why))?;
        let sftp = crate::dest::sftp::Sftp::open(session, &self.path)?;
        crate::dest::Dest::open_store(crate::dest::Store::Sftp(sftp), &self.path, None)
    }

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

    /// The destination there as it is, to look at (`softcopy verify`): never made, no marker
    /// withdrawn; with `hashed`, its copies hashed by the server where it has a hasher
    /// (`server_hash.rs`). The error is one line (see [`Remote::connect`], [`Remote::refusal`]).
    pub fn view(&self, ssh_command: Option<&str>, hashed: bool) -> Result<super::Dest, String> {
        let session = self.connect(ssh_command)?;
        let cannot = |e: io::Error| self.refusal(&e).unwrap_or_else(|| format!("destination {}: {e}", self.shown()));
        let sftp = super::sftp::Sftp::open(session, &self.path).map_err(cannot)?;
        let (again, command) = (self.clone(), ssh_command.map(str::to_string));
        let sftp = sftp.reconnecting(std::sync::Arc::new(move || again.connect(command.as_deref())), VIEW_SESSIONS)?;
        let dest = super::Dest::open_store(super::Store::Sftp(sftp), &self.path, None).map_err(cannot)?;
        if hashed {
            let exec = super::server_hash::Exec::new(self.clone(), ssh_command.map(str::to_string));
            if let Ok(Some(algo)) = super::server_hash::detect(&exec) {
                dest.hash_on_server(super::server_hash::Hasher { exec, algo });
            }
        }
        Ok(dest)
    }

    /// Checks, before a copy starts, what a person must act on: the host reached over SFTP (ssh's
    /// own words when not), the folder there (or, when `needed` allows, its parent there to make
    /// it in), and (given the local `source`) that it is not the source's own storage
    /// (`Remote::not_the_source`). Makes nothing.
    pub fn check(&self, ssh_command: Option<&str>, needed: Needed, source: Option<&Path>) -> Result<(), String> {
        let session = self.connect(ssh_command)?;
        let cannot = |e: io::Error| self.refusal(&e).unwrap_or_else(|| format!("destination {}: {e}", self.shown()));
        let look = |p: &Path| -> io::Result<crate::sftp::Attrs> {
            let path = p.to_string_lossy().replace('\\', "/");
            match session.call(&Request::Stat(path.as_bytes()))? {
                Reply::Attrs(a) => Ok(a),
                _ => Err(io::Error::other("unexpected reply")),
            }
        };
        let parent = self.path.parent().unwrap_or(&self.path);
        let found = match look(&self.path) {
            Ok(a) if a.is_dir() => &self.path,
            Ok(_) => return Err(cannot(io::ErrorKind::NotADirectory.into())),
            Err(e) if e.kind() == io::ErrorKind::NotFound && needed == Needed::Folder => {
                return Err(format!(
                    "destination {} does not exist: make it first (softcopy makes the folders in it)",
                    self.shown()
                ))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => match look(parent) {
                Ok(a) if a.is_dir() => parent,
                Ok(_) => return Err(cannot(io::ErrorKind::NotFound.into())),
                Err(e) => return Err(cannot(e)),
            },
            Err(e) => return Err(cannot(e)),
        };
        source.map_or(Ok(()), |s| self.not_the_source(&session, found, s))
    }

    /// Refuses a destination on the source's own storage, inside the source or around it (the
    /// ssh host is this machine, or both mount one share at the same path), with no write: the
    /// server's REALPATH of `found` (the destination's nearest folder that exists) and the
    /// source's local canonical path are one inside the other, and that folder as the server
    /// shows it is the one here at that path (size, mode, owner, whole-second mtime, names).
    /// Another machine with the same path rarely matches all of that; a mount at another path,
    /// or a server that shows other owners (squashed), is not recognised (docs/design.md, "The
    /// ssh destination").
    fn not_the_source(&self, session: &Session, found: &Path, source: &Path) -> Result<(), String> {
        let (Ok(source), Ok(resolved)) = (source.canonicalize(), realpath(session, found)) else { return Ok(()) };
        let dest = resolved.join(self.path.strip_prefix(found).unwrap_or(Path::new("")));
        let (inside, around) = (dest.starts_with(&source), source.starts_with(&dest));
        if !(inside || around) || !same_folder(session, &resolved) {
            return Ok(());
        }
        let (how, shown) = (if inside { "inside" } else { "around" }, self.shown());
        Err(format!(
            "destination {shown} is {how} the source {} on this same storage (the ssh host is this machine, or \
             shares it at the same path): refused, the copy would copy itself",
            source.display()
        ))
    }
}

/// The server's canonical path of `path`.
fn realpath(session: &Session, path: &Path) -> io::Result<PathBuf> {
    match session.call(&Request::Realpath(path.to_string_lossy().as_bytes()))? {
        Reply::Names(n) if n.len() == 1 => Ok(PathBuf::from(String::from_utf8_lossy(&n[0].filename).into_owned())),
        _ => Err(io::Error::other("unexpected reply")),
    }
}

/// Whether the folder at `path` on the server is the one at `path` here: its attributes and its
/// names alike (a folder of another machine made at the same path differs in one of them).
#[cfg(unix)]
fn same_folder(session: &Session, path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    let bytes = path.to_string_lossy().into_owned().into_bytes();
    let (Ok(Reply::Attrs(there)), Ok(here)) = (session.call(&Request::Stat(&bytes)), std::fs::metadata(path)) else {
        return false;
    };
    let ours = crate::sftp::Attrs {
        size: Some(here.size()),
        uid_gid: Some((here.uid(), here.gid())),
        permissions: Some(here.mode()),
        times: there.times.map(|(a, _)| (a, here.mtime() as u32)),
    };
    let names_here = std::fs::read_dir(path).map(|d| d.flatten().map(|e| e.file_name().into_encoded_bytes()).collect());
    there == ours
        && names_here.ok().is_some_and(|mut h: Vec<Vec<u8>>| {
            listed(session, &bytes).is_some_and(|t| {
                h.sort();
                t == h
            })
        })
}

#[cfg(not(unix))]
fn same_folder(_session: &Session, _path: &Path) -> bool {
    false
}

/// The names in the folder `path` on the server, sorted (`.` and `..` left out); `None` when it
/// cannot be listed whole.
#[cfg(unix)]
fn listed(session: &Session, path: &[u8]) -> Option<Vec<Vec<u8>>> {
    let Ok(Reply::Handle(h)) = session.call(&Request::Opendir(path)) else { return None };
    let mut names = Vec::new();
    let whole = loop {
        match session.call(&Request::Readdir(&h)) {
            Ok(Reply::Names(n)) => {
                names.extend(n.into_iter().map(|n| n.filename).filter(|f| f != b"." && f != b".."));
            }
            Ok(Reply::Eof) => break true,
            _ => break false,
        }
    };
    let _ = session.call(&Request::Close(&h));
    names.sort();
    whole.then_some(names)
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
    fn a_name_joined_is_one_plain_component_and_keeps_the_host() {
        let r = Remote::parse("ssh://me@c.org:2222/lab/raw").unwrap();
        let x = r.join(Path::new("x.zarr")).unwrap();
        assert_eq!((x.shown(), x.port), ("ssh://me@c.org:2222/lab/raw/x.zarr".to_string(), Some(2222)));
        for bad in ["", ".", "..", "a/b", "/x", "a\\b"] {
            assert_eq!(r.join(Path::new(bad)), None, "{bad}");
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
