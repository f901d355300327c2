//! Packet captures on loopback with tshark, and what tshark reads out of them, decrypted with
//! a key-log file or not. Capturing needs root (or CAP_NET_RAW and CAP_NET_ADMIN); without
//! it, [`Capture::start`] fails the test and says so. tshark is installed by scripts/test.

use std::io::Write;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use super::{require, run, Run, ServeProcess, RUN_LIMIT, SERVE_STEP};

/// A capture stops by itself after this many seconds, should its test not stop it.
pub const CAPTURE_SECONDS: u32 = 120;

/// A running `tshark -i lo -f 'tcp port PORT' -w FILE` (port on 127.0.0.1, where something
/// listens); killed when dropped.
pub struct Capture {
    process: ServeProcess,
    file: PathBuf,
}

impl Capture {
    /// Starts capturing the TCP traffic to and from `port` on loopback into `DIR/NAME.pcapng`,
    /// and waits until tshark says the capture runs.
    pub fn start(dir: &Path, name: &str, port: u16) -> Self {
        require("tshark");
        let file = dir.join(format!("{name}.pcapng"));
        let mut command = Command::new("tshark");
        command
            .args(["-i", "lo", "-f", &format!("tcp port {port}"), "-w"])
            .arg(&file)
            .args(["-a", &format!("duration:{CAPTURE_SECONDS}")])
            .stdin(Stdio::null());
        let mut process = ServeProcess::spawn("tshark", dir, port, command);
        // tshark prints "Capture started." once dumpcap has opened the interface and the file.
        process.wait_until(
            "that the capture started (capturing on lo needs root, or CAP_NET_RAW and \
             CAP_NET_ADMIN; tshark's own message is in its stderr below)",
            SERVE_STEP,
            |_, err| err.contains("Capture started"),
        );
        Capture { process, file }
    }

    /// Stops the capture and returns the file. tshark (dumpcap) writes packets out in
    /// batches and drops what it has not written yet when stopped, so first a marker is sent
    /// on a plain TCP connection to the port (the server sees a failed handshake) and the
    /// file is read until the marker is in it: every packet before it is then in the file too.
    /// Then SIGINT, and tshark ends.
    pub fn stop(mut self) -> PathBuf {
        static MARKERS: AtomicUsize = AtomicUsize::new(0);
        let marker = format!(
            "tlsnet-capture-end-{}-{}",
            std::process::id(),
            MARKERS.fetch_add(1, Ordering::Relaxed)
        );
        let port = self.process.port;
        let sent = TcpStream::connect(("127.0.0.1", port))
            .and_then(|mut stream| stream.write_all(marker.as_bytes()));
        if let Err(e) = sent {
            panic!("cannot send the end-of-capture marker to port {port}: {e}");
        }
        let started = Instant::now();
        while !std::fs::read(&self.file)
            .map(|bytes| bytes.windows(marker.len()).any(|w| w == marker.as_bytes()))
            .unwrap_or(false)
        {
            assert!(
                started.elapsed() < SERVE_STEP,
                "tshark did not write the end-of-capture marker to {} within {SERVE_STEP:?}\n{}",
                self.file.display(),
                self.process.describe()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        if self.process.exited().is_none() {
            self.process.signal("INT");
        }
        let status = self.process.wait_exit(SERVE_STEP);
        assert!(
            status.success(),
            "tshark ended with {status}\n{}",
            self.process.describe()
        );
        self.file.clone()
    }
}

/// The `tshark` command that reads `capture` with `keylog` as its TLS key-log file (`None`:
/// an empty setting, so that no preference of the user's decrypts anything).
pub fn tshark_read(capture: &Path, keylog: Option<&Path>) -> Command {
    let keylog = keylog.map(|k| k.display().to_string()).unwrap_or_default();
    let mut command = Command::new("tshark");
    command
        .arg("-r")
        .arg(capture)
        .args(["-o", &format!("tls.keylog_file:{keylog}")]);
    command
}

/// `tshark -r CAPTURE -o tls.keylog_file:KEYLOG -Y FILTER -T fields -e FIELD...`: one line a
/// packet, the fields separated by tabs, several values of one field by commas.
pub fn tshark_fields(capture: &Path, keylog: Option<&Path>, filter: &str, fields: &[&str]) -> Run {
    let mut command = tshark_read(capture, keylog);
    command.args(["-Y", filter, "-T", "fields"]);
    for field in fields {
        command.args(["-e", field]);
    }
    run(command, None, RUN_LIMIT).ok()
}

/// The values of `tshark_fields` output, split at tabs, commas and line ends.
pub fn field_values(run: &Run) -> Vec<String> {
    run.stdout
        .split(['\t', ',', '\n'])
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .map(str::to_owned)
        .collect()
}

/// The application data tshark decrypts from the TLS records sent to `port` (the client's
/// side of the conversation), in capture order: the values of `data.data` (the field
/// Wireshark 3.6 and 4.0 show decrypted TLS 1.3 application data in, when no protocol is
/// known for it).
pub fn decrypted_to_port(capture: &Path, keylog: Option<&Path>, port: u16) -> Vec<u8> {
    let filter = format!("tls && tcp.dstport == {port}");
    let fields = tshark_fields(capture, keylog, &filter, &["data.data"]);
    let mut bytes = Vec::new();
    for value in field_values(&fields) {
        bytes.extend(from_hex(&value));
    }
    bytes
}

/// Bytes from hexadecimal digits (tshark writes `data.data` as `68656c6c6f`; a `:` between
/// bytes is skipped).
pub fn from_hex(text: &str) -> Vec<u8> {
    let digits: Vec<u8> = text.bytes().filter(u8::is_ascii_hexdigit).collect();
    digits
        .chunks(2)
        .filter(|pair| pair.len() == 2)
        .map(|pair| {
            let text = std::str::from_utf8(pair).expect("ASCII digits");
            u8::from_str_radix(text, 16).expect("hex digits")
        })
        .collect()
}
