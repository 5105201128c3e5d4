//! `.local` names resolved over mDNS, end to end.
//!
//! Network tests talk only to 127.0.0.1 or to network namespaces they create, and mDNS is
//! multicast: so each end-to-end test creates a network namespace of its own (`ip netns add`),
//! brings its loopback up with multicast on and routes 224.0.0.0/4 through it (source 127.0.0.1),
//! and runs itself again inside it (`ip netns exec NS <this test binary> <test> --exact`). There,
//! with the usual helpers, it starts nginx-rtmp on 127.0.0.1, the small mDNS responder below (a
//! UDP socket on 0.0.0.0:5353 in group 224.0.0.251 that answers A queries for `testnvr.local`
//! with 127.0.0.1) and v4l2rtmp. The namespace is deleted afterwards. Creating one needs root and
//! `ip` (iproute2): without them these tests say so and skip.
//!
//! The responder's logic is also tested without a network against v4l2rtmp's query and parser.

mod common;

use std::net::{Ipv4Addr, UdpSocket};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use v4l2rtmp::net::mdns::Lookup;

/// Set in the copy of the test binary that runs inside the namespace: its name.
const NETNS_ENV: &str = "V4L2RTMP_TEST_NETNS";
const PREFIX: &str = "v4l2rtmp-mdns-";
const NAME: &str = "testnvr.local";
const NOT_THERE: &str = "nothere.local";

// ---- The responder ------------------------------------------------------------------------

/// The name at `pos` in dotted form (lowercase), and the offset past it in place; follows
/// compression pointers (at most 16). Written apart from v4l2rtmp's parser, to check it.
fn read_name(packet: &[u8], mut pos: usize) -> Option<(String, usize)> {
    let mut labels = Vec::new();
    let mut end = None;
    for _ in 0..128 {
        let size = *packet.get(pos)? as usize;
        if size & 0xc0 == 0xc0 {
            end.get_or_insert(pos + 2);
            pos = ((size & 0x3f) << 8) | *packet.get(pos + 1)? as usize;
            continue;
        }
        if size == 0 {
            let name = labels.join(".").to_ascii_lowercase();
            return Some((name, end.unwrap_or(pos + 1)));
        }
        labels.push(String::from_utf8_lossy(packet.get(pos + 1..pos + 1 + size)?).into_owned());
        pos += 1 + size;
    }
    None
}

/// What the responder says to `query`, received from port `from_port`: if one of its questions
/// asks for the A record (or any record) of `name`, a legacy unicast response (RFC 6762 §6.7:
/// the ID and the questions echoed, TTL 10, no cache-flush) with the A record, and in the
/// additional section an A record of another name (which must be ignored). Also the names the
/// query asked for.
fn answer(query: &[u8], name: &str, address: Ipv4Addr) -> (Option<Vec<u8>>, Vec<String>) {
    let mut asked = Vec::new();
    if query.len() < 12 || query[2] & 0x80 != 0 {
        return (None, asked);
    }
    let questions = u16::from_be_bytes([query[4], query[5]]);
    let mut pos = 12;
    let mut matched = None;
    for _ in 0..questions {
        let Some((qname, after)) = read_name(query, pos) else {
            return (None, asked);
        };
        let Some(fixed) = query.get(after..after + 4) else {
            return (None, asked);
        };
        let qtype = u16::from_be_bytes([fixed[0], fixed[1]]);
        let qclass = u16::from_be_bytes([fixed[2], fixed[3]]) & 0x7fff;
        if qname == name && (qtype == 1 || qtype == 255) && qclass == 1 {
            matched.get_or_insert(pos);
        }
        asked.push(qname);
        pos = after + 4;
    }
    let Some(name_at) = matched else {
        return (None, asked);
    };
    let mut response = query[..2].to_vec();
    response.extend_from_slice(&[0x84, 0x00]);
    response.extend_from_slice(&questions.to_be_bytes());
    response.extend_from_slice(&[0, 1, 0, 0, 0, 1]);
    response.extend_from_slice(&query[12..pos]);
    // The answer names the question's name by a pointer.
    response.extend_from_slice(&[0xc0 | (name_at >> 8) as u8, name_at as u8]);
    response.extend_from_slice(&[0, 1, 0, 1, 0, 0, 0, 10, 0, 4]);
    response.extend_from_slice(&address.octets());
    response.extend_from_slice(b"\x05other\x05local\x00");
    response.extend_from_slice(&[0, 1, 0x80, 1, 0, 0, 0, 120, 0, 4, 10, 9, 9, 9]);
    (Some(response), asked)
}

/// The responder: a thread answering A queries for one name, and recording every name asked.
struct Responder {
    asked: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Responder {
    fn start(name: &'static str, address: Ipv4Addr) -> Responder {
        let socket = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 5353)).expect("bind port 5353");
        socket
            .join_multicast_v4(&Ipv4Addr::new(224, 0, 0, 251), &Ipv4Addr::UNSPECIFIED)
            .expect("join 224.0.0.251");
        socket
            .set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        let asked = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (asked, stop) = (asked.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut packet = [0u8; 9000];
                while !stop.load(Ordering::Relaxed) {
                    let Ok((size, from)) = socket.recv_from(&mut packet) else {
                        continue;
                    };
                    let (response, names) = answer(&packet[..size], name, address);
                    eprintln!("  responder: {from} asked for {names:?}");
                    asked.lock().unwrap().extend(names);
                    if let Some(response) = response {
                        socket.send_to(&response, from).unwrap();
                    }
                }
            })
        };
        Responder {
            asked,
            stop,
            thread: Some(thread),
        }
    }

    /// How many questions asked for `name`.
    fn asked_for(&self, name: &str) -> usize {
        self.asked
            .lock()
            .unwrap()
            .iter()
            .filter(|n| *n == name)
            .count()
    }
}

impl Drop for Responder {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

// ---- The namespace ------------------------------------------------------------------------

fn ip(args: &[&str]) -> Result<(), String> {
    let output = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("ip {}: {e}", args.join(" ")))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        ))
    }
}

/// A network namespace of this test's, deleted when dropped.
struct Namespace(String);

impl Namespace {
    /// `None` (after saying why) when this process cannot create one: not root, or no `ip`.
    fn create(test: &str) -> Option<Namespace> {
        let uid = Command::new("id").arg("-u").output().ok();
        let root = uid.is_some_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0");
        if !root {
            eprintln!("SKIP: {test} creates a network namespace, which needs root");
            return None;
        }
        if Command::new("ip").arg("-V").output().is_err() {
            eprintln!("SKIP: {test} needs `ip` (apt-get install iproute2) for a network namespace");
            return None;
        }
        remove_stale_namespaces();
        let name = format!("{PREFIX}{}-{test}", std::process::id());
        // Interface names are limited to 15 bytes, namespace names are not.
        ip(&["netns", "add", &name]).unwrap_or_else(|e| panic!("{e}"));
        let namespace = Namespace(name);
        let n = namespace.0.as_str();
        for step in [
            &["-n", n, "link", "set", "lo", "up"][..],
            &["-n", n, "link", "set", "lo", "multicast", "on"],
            &[
                "-n",
                n,
                "route",
                "add",
                "224.0.0.0/4",
                "dev",
                "lo",
                "src",
                "127.0.0.1",
            ],
        ] {
            ip(step).unwrap_or_else(|e| panic!("{e}"));
        }
        Some(namespace)
    }
}

impl Drop for Namespace {
    fn drop(&mut self) {
        if let Err(e) = ip(&["netns", "delete", &self.0]) {
            eprintln!("{e}");
        }
    }
}

/// Deletes the namespaces that earlier runs, killed before they could, left behind.
fn remove_stale_namespaces() {
    let Ok(entries) = std::fs::read_dir("/run/netns") else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .strip_prefix(PREFIX)
            .and_then(|rest| rest.split('-').next())
        else {
            continue;
        };
        if !std::path::Path::new("/proc").join(pid).exists() {
            let _ = ip(&["netns", "delete", &name]);
        }
    }
}

/// Whether this process runs `test`'s body: true inside the namespace. Outside, it creates the
/// namespace, runs this test binary there with only `test`, checks that it passed, and returns
/// false.
fn in_namespace(test: &str) -> bool {
    if std::env::var_os(NETNS_ENV).is_some() {
        return true;
    }
    let Some(namespace) = Namespace::create(test) else {
        return false;
    };
    let output = Command::new("ip")
        .args(["netns", "exec", &namespace.0])
        .arg(std::env::current_exe().unwrap())
        .args([test, "--exact", "--nocapture", "--test-threads=1"])
        .env(NETNS_ENV, &namespace.0)
        .stdin(Stdio::null())
        .output()
        .expect("run ip netns exec");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    eprintln!("{stdout}{stderr}");
    assert!(
        output.status.success(),
        "{test} failed in network namespace {}",
        namespace.0
    );
    assert!(stdout.contains("1 passed"), "{test} did not run");
    false
}

// ---- The tests ----------------------------------------------------------------------------

#[test]
fn the_responder_answers_our_query_and_we_read_its_answer() {
    let mut lookup = Lookup::new("TestNVR.local").unwrap();
    let (response, asked) = answer(lookup.query(), NAME, Ipv4Addr::new(192, 168, 7, 9));
    // A and AAAA, the second through a pointer.
    assert_eq!(asked, [NAME, NAME]);
    let response = response.expect("an answer");
    assert_eq!(lookup.handle(&response), Ok(1));
    assert_eq!(lookup.addresses(), [Ipv4Addr::new(192, 168, 7, 9)]);

    let mut other = Lookup::new(NOT_THERE).unwrap();
    let (response, asked) = answer(other.query(), NAME, Ipv4Addr::LOCALHOST);
    assert_eq!(asked, [NOT_THERE, NOT_THERE]);
    assert!(response.is_none());
    // Someone else's answer is not ours.
    let (response, _) = answer(lookup.query(), NAME, Ipv4Addr::LOCALHOST);
    assert_eq!(other.handle(&response.unwrap()), Ok(0));
    assert!(other.addresses().is_empty());
    // Our own query, looped back, is not an answer.
    assert!(lookup.clone().handle(lookup.query()).is_err());
}

/// v4l2rtmp asks for `testnvr.local` before the responder runs: the connection fails with the
/// plain message and is retried, and once the responder answers, the clip is published whole.
#[test]
fn publishes_to_a_local_name_found_on_a_retry() {
    if !in_namespace("publishes_to_a_local_name_found_on_a_retry") {
        return;
    }
    let clip = clip_small();
    let keyframes = source_keyframes(&clip);
    let nginx = Nginx::start();
    let url = format!("rtmp://{NAME}:{}/live/mdns", nginx.port);
    let mut child = Command::new(BIN)
        .args(["--log-level", "debug", "--max-retries", "3", "--input"])
        .arg(&clip)
        .arg(&url)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start v4l2rtmp");
    let lines = log_lines(child.stderr.take().unwrap());
    wait_for_line(
        &lines,
        "testnvr.local: no mDNS answer within 3 s",
        Duration::from_secs(10),
    );
    let responder = Responder::start(NAME, Ipv4Addr::LOCALHOST);
    wait_for_line(
        &lines,
        "answered testnvr.local: [127.0.0.1]",
        Duration::from_secs(15),
    );
    let start = Instant::now();
    while child.try_wait().unwrap().is_none() {
        assert!(start.elapsed() < Duration::from_secs(60), "v4l2rtmp hangs");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(child.wait().unwrap().success());
    assert!(responder.asked_for(NAME) >= 2);
    let recording = nginx.recording("mdns");
    let dir = nginx.stop();
    assert_matches_source(&ffprobe(&recording, &[]), &keyframes, 640, 360, 30.0);
    drop(dir);
}

/// A `.local` name nobody answers for: a network error (exit 75 with --max-retries 0) that says
/// what to check, after the query was sent twice, within the 3 s budget.
#[test]
fn a_local_name_nobody_answers_fails_plainly() {
    if !in_namespace("a_local_name_nobody_answers_fails_plainly") {
        return;
    }
    let responder = Responder::start(NAME, Ipv4Addr::LOCALHOST);
    let clip = clip_small();
    let start = Instant::now();
    let output = run_v4l2rtmp(
        &[
            "--max-retries",
            "0",
            "--input",
            clip.to_str().unwrap(),
            &format!("rtmp://{NOT_THERE}/live/k"),
        ],
        None,
        Duration::from_secs(20),
    );
    let elapsed = start.elapsed();
    let stderr = stderr_of(&output);
    assert_eq!(exit_code(output.status), 75, "{stderr}");
    assert!(
        stderr.contains(
            "network error: nothere.local: no mDNS answer within 3 s: is the NVR on this network? \
             (mDNS does not cross routers)"
        ),
        "{stderr}"
    );
    assert!(
        (Duration::from_millis(2900)..Duration::from_secs(6)).contains(&elapsed),
        "{elapsed:?}"
    );
    // Each query asks for A and AAAA.
    assert_eq!(responder.asked_for(NOT_THERE), 4);
    // --timeout shorter than 3 s bounds the wait.
    let start = Instant::now();
    let output = run_v4l2rtmp(
        &[
            "--max-retries",
            "0",
            "--timeout",
            "1",
            "--input",
            clip.to_str().unwrap(),
            &format!("rtmp://{NOT_THERE}/live/k"),
        ],
        None,
        Duration::from_secs(20),
    );
    assert!(
        stderr_of(&output).contains("no mDNS answer within 1 s"),
        "{}",
        stderr_of(&output)
    );
    assert!(
        start.elapsed() < Duration::from_secs(3),
        "{:?}",
        start.elapsed()
    );
    assert_eq!(responder.asked_for(NOT_THERE), 6);
}
