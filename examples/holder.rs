//! A Windows writer for tests/windows/wine_live.py, run under Wine: `holder PATH SHARE BLOCKS MS`
//! creates PATH with share mode SHARE (`none`, or `read` and `write` joined by `+`), writes
//! BLOCKS blocks of 64 KiB, one every MS milliseconds, then closes it. Prints `open` once the
//! file is open and `closed` after. (Wine's share modes apply between Wine processes only, so
//! the writer has to be one.)

// Its protocol with the test is stdout.
#[allow(clippy::print_stdout)]
#[cfg(windows)]
fn main() {
    use std::io::Write;
    use std::os::windows::fs::OpenOptionsExt;

    let args: Vec<String> = std::env::args().skip(1).collect();
    let [path, share, blocks, ms] = args.as_slice() else {
        eprintln!("usage: holder PATH SHARE BLOCKS MS");
        std::process::exit(2);
    };
    let mode = share.split('+').fold(0u32, |m, s| match s {
        "read" => m | 1,
        "write" => m | 2,
        _ => m,
    });
    let blocks: u32 = blocks.parse().expect("BLOCKS");
    let pause = std::time::Duration::from_millis(ms.parse().expect("MS"));
    let mut f =
        std::fs::OpenOptions::new().write(true).create(true).truncate(true).share_mode(mode).open(path).unwrap();
    println!("open");
    for i in 0..blocks {
        f.write_all(&[b'a' + (i % 26) as u8; 65536]).unwrap();
        f.flush().unwrap();
        std::thread::sleep(pause);
    }
    drop(f);
    println!("closed");
}

#[cfg(not(windows))]
fn main() {
    eprintln!("holder is a Windows program (tests/windows/wine_live.py runs it under Wine)");
    std::process::exit(2);
}
