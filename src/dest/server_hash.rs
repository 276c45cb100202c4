//! The ssh server hashing its own copies (docs/design.md, "The ssh destination: proof by the
//! server's hash"): `--delete-source` frees a source only once its copy is proven identical by
//! content, and reading every copy back over the network costs the whole archive again. The
//! server's `b3sum` (BLAKE3, the hash `--checksum` keeps) or else its `sha256sum` hashes many copies
//! per command, run through the same ssh command as the SFTP sessions; the source side hashes its
//! bytes with the same algorithm. A host with neither has no hasher: copies are read back.
//!
//! What is trusted: a line that parses, for a name that was asked, from a command that exited 0
//! within its time. Anything else proves nothing (the caller reads those copies back, or keeps
//! their sources). Names are arbitrary bytes: they go NUL-separated on the command's stdin, never
//! into a command line, and come back escaped as coreutils escapes them.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::remote::Remote;

/// A hash the server can compute, and the source side with it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Algo {
    /// `b3sum`: BLAKE3, whose first 128 bits are `--checksum`'s hash.
    Blake3,
    /// `sha256sum` (GNU coreutils): everywhere.
    Sha256,
}

/// A full digest (both algorithms give 256 bits).
pub type Digest = [u8; 32];

impl Algo {
    /// The server's program for it.
    pub fn program(self) -> &'static str {
        match self {
            Algo::Blake3 => "b3sum",
            Algo::Sha256 => "sha256sum",
        }
    }

    /// The digest of everything `reader` yields.
    pub fn digest(self, mut reader: impl Read) -> io::Result<Digest> {
        let mut buf = vec![0u8; 1 << 20];
        let mut b3 = blake3::Hasher::new();
        let mut sha = <sha2::Sha256 as sha2::Digest>::new();
        loop {
            let n = match reader.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            match self {
                Algo::Blake3 => drop(b3.update(&buf[..n])),
                Algo::Sha256 => sha2::Digest::update(&mut sha, &buf[..n]),
            }
        }
        let mut out = [0u8; 32];
        match self {
            Algo::Blake3 => out.copy_from_slice(b3.finalize().as_bytes()),
            Algo::Sha256 => out.copy_from_slice(&sha2::Digest::finalize(sha)),
        }
        Ok(out)
    }
}

/// What a command run on the host gave back.
#[derive(Debug)]
pub struct Ran {
    /// Its exit code; `None` when it was ended by a signal.
    pub code: Option<i32>,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

impl Ran {
    /// The last line it printed on stderr, for messages.
    pub fn said(&self) -> String {
        let text = String::from_utf8_lossy(&self.stderr);
        text.lines().rfind(|l| !l.trim().is_empty()).unwrap_or("").trim().to_string()
    }
}

/// Runs commands on an ssh host, through the user's ssh command.
#[derive(Clone, Debug)]
pub struct Exec {
    remote: Remote,
    ssh_command: Option<String>,
}

impl Exec {
    pub fn new(remote: Remote, ssh_command: Option<String>) -> Exec {
        Exec { remote, ssh_command }
    }

    /// The command that runs `script` with `sh` on the host (whatever the user's login shell):
    /// `script` is the program's own text, never a name from the data.
    fn command(&self, script: &str) -> Command {
        debug_assert!(!script.contains('\''), "the script is quoted whole for the remote shell");
        let mut c = self.remote.ssh(self.ssh_command.as_deref());
        c.arg(format!("sh -c '{script}'"));
        c
    }

    /// Runs `script` on the host with `stdin` as its input; what it printed and how it exited.
    /// Err when it could not start, or did not end within `limit` (then it is killed).
    pub fn run(&self, script: &str, stdin: Vec<u8>, limit: Duration) -> Result<Ran, String> {
        let mut child = self
            .command(script)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot run ssh: {e}"))?;
        let mut input = child.stdin.take();
        let feeder = std::thread::spawn(move || {
            // A command that exits before reading all is told by its exit status, not here.
            let _ = input.as_mut().map(|i| i.write_all(&stdin));
        });
        let drain = |r: Option<Box<dyn Read + Send>>| {
            std::thread::spawn(move || {
                let mut out = Vec::new();
                let _ = r.map(|mut r| r.read_to_end(&mut out));
                out
            })
        };
        let out = drain(child.stdout.take().map(|s| Box::new(s) as Box<dyn Read + Send>));
        let err = drain(child.stderr.take().map(|s| Box::new(s) as Box<dyn Read + Send>));
        let deadline = Instant::now() + limit;
        let status = loop {
            match child.try_wait() {
                Ok(Some(status)) => break status,
                Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(5)),
                Ok(None) | Err(_) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(format!("the server's command did not end within {} s", limit.as_secs()));
                }
            }
        };
        let _ = feeder.join();
        let stdout = out.join().unwrap_or_default();
        let stderr = err.join().unwrap_or_default();
        Ok(Ran { code: status.code(), stdout, stderr })
    }
}

/// The fixed text every hasher is asked to hash at the start: a program of that name that does
/// not give its known digest is not used (no quote in it: it is part of the script).
const PROBE: &str = "softcopy";

/// The time the probe may take (one ssh connection and two tiny hashes).
const PROBE_LIMIT: Duration = Duration::from_secs(60);

/// Asks the host which hasher it has: `b3sum` if present and right, else `sha256sum`, else none
/// (then copies are read back). `xargs` is needed too (the names go through it). Err when the
/// host could not be asked (the caller reads copies back then too).
pub fn detect(exec: &Exec) -> Result<Option<Algo>, String> {
    let script = format!(
        "command -v xargs >/dev/null 2>&1 || exit 0; for t in b3sum sha256sum; do \
         command -v $t >/dev/null 2>&1 && echo $t && printf {PROBE} | $t; done; exit 0"
    );
    let ran = exec.run(&script, Vec::new(), PROBE_LIMIT)?;
    if ran.code != Some(0) {
        return Err(format!("the server could not be asked for its hash command: {}", ran.said()));
    }
    Ok(probed(&ran.stdout))
}

/// The hasher the probe's output names first whose digest of [`PROBE`] is right.
fn probed(stdout: &[u8]) -> Option<Algo> {
    let text = String::from_utf8_lossy(stdout);
    let lines: Vec<&str> = text.lines().collect();
    [Algo::Blake3, Algo::Sha256].into_iter().find(|algo| {
        let digest = algo.digest(PROBE.as_bytes()).map(|d| hex(&d)).unwrap_or_default();
        lines.windows(2).any(|w| w[0] == algo.program() && w[1].split_whitespace().next() == Some(&digest))
    })
}

fn hex(d: &[u8]) -> String {
    d.iter().map(|b| format!("{b:02x}")).collect()
}

/// The file at the root the check of [`sees_the_copies`] writes, hashes and removes (a name of
/// softcopy's own: never data, never an extra).
const PROBE_FILE: &str = ".softcopy-hash-probe";

/// Whether the server's shell sees the files the SFTP sessions write, at the same paths: an SFTP
/// server chrooted, or a shell on another filesystem namespace, would hash other files (or none)
/// under the copies' names. A file of fresh bytes is written at the root over SFTP and the server
/// must give those bytes' digest at its SFTP path; it is removed after. Call with the root claimed.
pub fn sees_the_copies(dest: &super::Dest, hasher: &Hasher) -> Result<(), String> {
    let name = std::path::Path::new(PROBE_FILE);
    let mut seed = blake3::Hasher::new();
    seed.update(format!("{:?} {}", std::time::SystemTime::now(), std::process::id()).as_bytes());
    let bytes = seed.finalize().as_bytes().to_vec();
    dest.write_file(name, std::path::Path::new(".softcopy-hash-probe.partial"), &bytes)
        .map_err(|e| format!("cannot write {PROBE_FILE}: {e}"))?;
    let path = super::sftp::bytes(&dest.root().join(name));
    let hashed = hash_many(&hasher.exec, hasher.algo, std::slice::from_ref(&path), PROBE_LIMIT);
    let _ = dest.remove_file(name);
    let want = hasher.algo.digest(&bytes[..]).map_err(|e| e.to_string())?;
    match hashed {
        Ok(d) if d.get(&path) == Some(&want) => Ok(()),
        Ok(_) => Err(format!("the server's {} does not see the files SFTP writes", hasher.algo.program())),
        Err(Failed::NotBack(why) | Failed::Untrusted(why)) => Err(why),
    }
}

/// Why a batch's hashes prove nothing.
#[derive(Debug, PartialEq, Eq)]
pub enum Failed {
    /// The server was not reached, or its command did not end in time: nothing came back.
    NotBack(String),
    /// The command ran and failed (a name it could not read), or printed what does not parse:
    /// none of its lines is trusted (the copies may be read back instead).
    Untrusted(String),
}

/// The time a batch may take: a minute, and 20 MiB/s of hashing on the server (a busy one).
pub fn limit_for(bytes: u64) -> Duration {
    Duration::from_secs(60 + bytes / (20 << 20))
}

/// Asks the server for the `algo` digests of the files at `paths` (absolute on the server), in
/// one command: the names NUL-separated on its stdin, through `xargs -0`. A name missing from
/// the answer has no digest.
pub fn hash_many(
    exec: &Exec,
    algo: Algo,
    paths: &[Vec<u8>],
    limit: Duration,
) -> Result<HashMap<Vec<u8>, Digest>, Failed> {
    let mut stdin = Vec::with_capacity(paths.iter().map(|p| p.len() + 1).sum());
    for p in paths {
        stdin.extend_from_slice(p);
        stdin.push(0);
    }
    let script = format!("exec xargs -0 {}", algo.program());
    let ran = exec.run(&script, stdin, limit).map_err(Failed::NotBack)?;
    match ran.code {
        Some(0) => {}
        // ssh's own failure (the connection): nothing is known.
        Some(255) | None => return Err(Failed::NotBack(format!("the connection failed: {}", ran.said()))),
        Some(code) => return Err(Failed::Untrusted(format!("{} exited {code}: {}", algo.program(), ran.said()))),
    }
    let asked: std::collections::HashSet<&[u8]> = paths.iter().map(Vec::as_slice).collect();
    let digests = parse(&ran.stdout).map_err(Failed::Untrusted)?;
    if let Some((name, _)) = digests.iter().find(|(name, _)| !asked.contains(name.as_slice())) {
        return Err(Failed::Untrusted(format!("a name not asked for: {}", String::from_utf8_lossy(name))));
    }
    Ok(digests)
}

/// The digests in a hasher's output, by name: each line `HEX  NAME` (or `HEX *NAME`), and a line
/// whose name holds a backslash or a newline begins with `\` and has them (and a carriage
/// return) escaped, as GNU coreutils and b3sum print them. Every line must parse, end with a
/// newline (a cut-off answer does not), and name a file once.
pub fn parse(out: &[u8]) -> Result<HashMap<Vec<u8>, Digest>, String> {
    let mut digests = HashMap::new();
    if out.is_empty() {
        return Ok(digests);
    }
    let Some(body) = out.strip_suffix(b"\n") else { return Err("the answer is cut off".into()) };
    for line in body.split(|&b| b == b'\n') {
        let (name, digest) = parse_line(line)
            .ok_or_else(|| format!("a line that does not parse: {:?}", String::from_utf8_lossy(line)))?;
        if digests.insert(name, digest).is_some() {
            return Err("a name given twice".into());
        }
    }
    Ok(digests)
}

fn parse_line(line: &[u8]) -> Option<(Vec<u8>, Digest)> {
    let (escaped, line) = match line.strip_prefix(b"\\") {
        Some(rest) => (true, rest),
        None => (false, line),
    };
    let (hex_part, rest) = (line.get(..64)?, line.get(64..)?);
    let mut digest = [0u8; 32];
    if !hex_part.iter().all(u8::is_ascii_hexdigit) {
        return None;
    }
    for (i, pair) in hex_part.chunks(2).enumerate() {
        digest[i] = u8::from_str_radix(std::str::from_utf8(pair).ok()?, 16).ok()?;
    }
    let name = rest.strip_prefix(b"  ").or_else(|| rest.strip_prefix(b" *"))?;
    if name.is_empty() {
        return None;
    }
    Some((if escaped { unescape(name)? } else { name.to_vec() }, digest))
}

/// `\\` → `\`, `\n` → newline, `\r` → carriage return; any other escape is not understood.
fn unescape(name: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(name.len());
    let mut bytes = name.iter();
    while let Some(&b) = bytes.next() {
        if b != b'\\' {
            out.push(b);
            continue;
        }
        out.push(match bytes.next()? {
            b'\\' => b'\\',
            b'n' => b'\n',
            b'r' => b'\r',
            _ => return None,
        });
    }
    Some(out)
}

/// The hasher found on a host, and how to reach it.
#[derive(Clone, Debug)]
pub struct Hasher {
    pub exec: Exec,
    pub algo: Algo,
}

/// What the server said of one copy.
#[derive(Debug, PartialEq, Eq)]
pub enum Answer {
    /// Its digest, of a regular file of `size` bytes seen unchanged (size, mtime) before and after
    /// the hash, with no link on the way.
    Digest { size: u64, digest: Digest },
    /// Not there.
    Gone,
    /// Not proven by the server: the copy may be read back to prove it.
    ReadBack(String),
    /// Not proven, and not to be read back either (a link, a connection that failed): its source
    /// is kept.
    Keep(String),
}

/// The server's digests of the copies `rels` below `storage`'s root, `bytes` in all, in one
/// command. Each is looked at (LSTAT: a regular file, no link on the way) before the hash and
/// again after it: `sha256sum` follows a link, so a link planted at a copy's name between the two
/// looks and gone again by the second is the window left (docs/design.md, "The ssh destination:
/// proof by the server's hash").
pub fn digests(storage: &super::sftp::Sftp, hasher: &Hasher, rels: &[&std::path::Path], bytes: u64) -> Vec<Answer> {
    let before = storage.look_all(rels);
    let mut answers: Vec<Option<Answer>> = before.iter().map(|b| first_look(b.as_ref())).collect();
    let asked: Vec<Vec<u8>> = before
        .iter()
        .zip(&answers)
        .filter(|(_, a)| a.is_none())
        .filter_map(|(b, _)| Some(b.as_ref().ok()?.0.clone()))
        .collect();
    if asked.is_empty() {
        return answers.into_iter().map(|a| a.unwrap_or(Answer::Gone)).collect();
    }
    let hashed = hash_many(&hasher.exec, hasher.algo, &asked, limit_for(bytes));
    let after = storage.look_all(rels);
    for ((answer, b), a) in answers.iter_mut().zip(&before).zip(&after) {
        if answer.is_some() {
            continue;
        }
        let (Ok((path, then)), Ok((_, now))) = (b, a) else {
            *answer = Some(Answer::Keep("the copy could not be looked at again after its hash".into()));
            continue;
        };
        *answer = Some(match &hashed {
            Err(Failed::NotBack(why)) => Answer::Keep(format!("the server's hash did not come back: {why}")),
            Err(Failed::Untrusted(why)) => Answer::ReadBack(why.clone()),
            Ok(_) if now != then => Answer::Keep("the copy changed while the server hashed it".into()),
            Ok(d) => match d.get(path) {
                Some(digest) => Answer::Digest { size: then.ident.size, digest: *digest },
                None => Answer::ReadBack("the server's answer does not name it".into()),
            },
        });
    }
    answers.into_iter().map(|a| a.unwrap_or(Answer::Gone)).collect()
}

/// What the look before the hash already decides: gone, not a regular file, a link on the way.
fn first_look(look: Result<&(Vec<u8>, super::Look), &io::Error>) -> Option<Answer> {
    match look {
        Ok((_, l)) if l.is_file() => None,
        Ok(_) => Some(Answer::Keep("the copy is not a regular file".into())),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Some(Answer::Gone),
        Err(e) => Some(Answer::Keep(format!("destination: {e}"))),
    }
}

#[cfg(all(test, unix))]
/// An `ssh` (tests) that runs the remote command here, for the host `fake` (with `PATH` as given).
pub(crate) fn local_exec(dir: &std::path::Path, path_env: &str) -> Exec {
    let ssh = dir.join("ssh");
    let script =
        format!("#!/bin/sh\nwhile [ \"$1\" != -- ]; do shift; done\nshift 2\nPATH={path_env} exec /bin/sh -c \"$1\"\n");
    std::fs::write(&ssh, script).unwrap();
    std::process::Command::new("chmod").arg("+x").arg(&ssh).status().unwrap();
    let remote = Remote::parse("fake:/x").unwrap();
    Exec::new(remote, Some(ssh.display().to_string()))
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use std::os::unix::ffi::OsStrExt;

    fn digest_of(algo: Algo, bytes: &[u8]) -> Digest {
        algo.digest(bytes).unwrap()
    }

    #[test]
    fn plain_and_escaped_lines_parse_to_names_and_digests() {
        let d = digest_of(Algo::Sha256, b"x");
        let hexd = hex(&d);
        let out = format!("{hexd}  /r/a b\n\\{hexd}  /r/new\\nline\\\\back\\rcr\n{hexd} */r/bin\n");
        let got = parse(out.as_bytes()).unwrap();
        assert_eq!(got.len(), 3);
        assert_eq!(got[b"/r/a b".as_slice()], d);
        assert_eq!(got[b"/r/new\nline\\back\rcr".as_slice()], d);
        assert_eq!(got[b"/r/bin".as_slice()], d);
        // Unescaped, a backslash is part of the name.
        assert!(parse(format!("{hexd}  /r/a\\nb\n").as_bytes()).unwrap().contains_key(b"/r/a\\nb".as_slice()));
    }

    #[test]
    fn an_answer_cut_off_or_out_of_form_proves_nothing() {
        let hexd = hex(&digest_of(Algo::Sha256, b"x"));
        for bad in [
            format!("{hexd}  /r/a"),                 // no final newline: cut off
            format!("{}  /r/a\n", &hexd[..63]),      // a digest too short
            format!("{}g  /r/a\n", &hexd[..63]),     // not hex
            format!("+{}  /r/a\n", &hexd[1..]),      // a sign is not a digit
            format!("{hexd} /r/a\n"),                // one space
            format!("{hexd}  \n"),                   // no name
            format!("\\{hexd}  /r/a\\tb\n"),         // an escape not understood
            format!("{hexd}  /r/a\n{hexd}  /r/a\n"), // a name twice
            format!("{hexd}  /r/a\n\n"),             // an empty line
            "sha256sum: /r/a: No such file or directory\n".to_string(),
        ] {
            assert!(parse(bad.as_bytes()).is_err(), "{bad:?}");
        }
        assert!(parse(b"").unwrap().is_empty());
    }

    #[test]
    fn the_probe_takes_only_a_hasher_that_gives_the_known_digest() {
        let line = |algo: Algo| format!("{}\n{}  -\n", algo.program(), hex(&digest_of(algo, PROBE.as_bytes())));
        assert_eq!(probed(line(Algo::Sha256).as_bytes()), Some(Algo::Sha256));
        let both = line(Algo::Blake3) + &line(Algo::Sha256);
        assert_eq!(probed(both.as_bytes()), Some(Algo::Blake3));
        // A b3sum that prints sha256's digest is not BLAKE3.
        let liar = format!("b3sum\n{}  -\n", hex(&digest_of(Algo::Sha256, PROBE.as_bytes())));
        assert_eq!(probed(liar.as_bytes()), None);
        assert_eq!(probed(b""), None);
    }

    #[test]
    fn the_server_hashes_names_with_newlines_and_backslashes_given_on_stdin() {
        let dir = tempfile::tempdir().unwrap();
        let exec = local_exec(dir.path(), "/usr/bin:/bin");
        assert_eq!(detect(&exec).unwrap(), Some(Algo::Sha256), "this machine has sha256sum, no b3sum");
        let names: [&[u8]; 4] = [b"plain", b"new\nline", b"back\\slash", b"$(touch pwned) 'q\" *"];
        let mut paths = Vec::new();
        for (i, name) in names.iter().enumerate() {
            let p = dir.path().join(std::ffi::OsStr::from_bytes(name));
            std::fs::write(&p, format!("bytes {i}")).unwrap();
            paths.push(p.as_os_str().as_bytes().to_vec());
        }
        let got = hash_many(&exec, Algo::Sha256, &paths, Duration::from_secs(60)).unwrap();
        for (i, p) in paths.iter().enumerate() {
            assert_eq!(got[p], digest_of(Algo::Sha256, format!("bytes {i}").as_bytes()));
        }
        assert!(!dir.path().join("pwned").exists(), "a name is never run");
        // A name that is not there: the command fails, and none of its lines is trusted.
        paths.push(dir.path().join("missing").as_os_str().as_bytes().to_vec());
        let failed = hash_many(&exec, Algo::Sha256, &paths, Duration::from_secs(60));
        assert!(matches!(failed, Err(Failed::Untrusted(_))), "{failed:?}");
    }

    #[test]
    fn a_connection_that_fails_gives_no_hash_at_all() {
        // ssh's own exit (255): whatever it printed before is not trusted, nor read back.
        let dir = tempfile::tempdir().unwrap();
        let ssh = dir.path().join("ssh");
        let hexd = hex(&digest_of(Algo::Sha256, b"x"));
        let script = format!("#!/bin/sh\necho '{hexd}  /r/a'\necho 'Connection closed by 10.0.0.1' >&2\nexit 255\n");
        std::fs::write(&ssh, script).unwrap();
        std::process::Command::new("chmod").arg("+x").arg(&ssh).status().unwrap();
        let exec = Exec::new(Remote::parse("fake:/x").unwrap(), Some(ssh.display().to_string()));
        let got = hash_many(&exec, Algo::Sha256, &[b"/r/a".to_vec()], Duration::from_secs(60));
        assert_eq!(got, Err(Failed::NotBack("the connection failed: Connection closed by 10.0.0.1".into())));
        assert!(detect(&exec).is_err());
    }

    #[test]
    fn a_host_without_a_hasher_has_none_and_one_that_hangs_is_cut_off() {
        let dir = tempfile::tempdir().unwrap();
        // PATH with a shell and xargs, without sha256sum (nor b3sum).
        let bin = dir.path().join("bin");
        std::fs::create_dir(&bin).unwrap();
        for tool in ["/bin/sh", "/usr/bin/xargs"] {
            std::os::unix::fs::symlink(tool, bin.join(std::path::Path::new(tool).file_name().unwrap())).unwrap();
        }
        assert_eq!(detect(&local_exec(dir.path(), &bin.display().to_string())).unwrap(), None);
        let exec = local_exec(dir.path(), "/usr/bin:/bin");
        let hung = exec.run("exec sleep 30", Vec::new(), Duration::from_millis(200));
        assert!(hung.is_err());
        let lost = exec.run("exit 255", Vec::new(), Duration::from_secs(60)).unwrap();
        assert_eq!(lost.code, Some(255));
    }
}
