//! The engine alone, without Python: `engine SRC DST [--once] [--verbose] [--delete-source]
//! [--quiet=SECONDS]`. Prints one line per status change
//! and message, and the verdict; exits 0 only when verified. It exists so the engine can be run
//! where no CPython is (under Wine, by tests/windows/wine_live.py); the product is `softcopy`.

use std::time::Duration;

use _softcopy::end::verify::Expected;
use _softcopy::run::config::Config;
use _softcopy::run::engine::Engine;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [src, dst, rest @ ..] = args.as_slice() else {
        eprintln!("usage: engine SRC DST [--once] [--verbose] [--delete-source] [--quiet=SECONDS]");
        std::process::exit(2);
    };
    let mut cfg = Config::new(src, dst);
    cfg.once = rest.iter().any(|a| a == "--once");
    cfg.log_events = rest.iter().any(|a| a == "--verbose");
    cfg.delete_source = rest.iter().any(|a| a == "--delete-source");
    // Short enough that a test of the end's wait for open files does not take a minute.
    let quiet = rest.iter().find_map(|a| a.strip_prefix("--quiet=")).and_then(|s| s.parse().ok());
    cfg.quiet = Duration::from_secs_f64(quiet.unwrap_or(5.0));
    let engine = match Engine::start(cfg) {
        Ok(e) => e,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(2);
        }
    };
    let mut last = String::new();
    let mut handed = false;
    loop {
        let ended = engine.wait(Duration::from_millis(20));
        for (level, msg) in engine.messages() {
            eprintln!("{level:?}: {msg}");
        }
        let s = engine.status();
        let line = format!(
            "status phase={:?} copied={} deleted={} errors={} failed={} writing={}",
            s.phase, s.files_copied, s.files_deleted, s.errors, s.failed, s.writing
        );
        if line != last {
            eprintln!("{line}");
            last = line;
        }
        if s.wants_expected && !handed {
            // Plain files, no Zarr metadata: verification compares the two trees.
            engine.expect(Expected::default());
            handed = true;
        }
        if ended {
            break;
        }
    }
    let verified = engine.verdict().is_some_and(|v| v.verified);
    eprintln!("verdict verified={verified}");
    std::process::exit(if verified { 0 } else { 1 });
}
