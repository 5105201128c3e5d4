//! Adobe (authmod=adobe) and Limelight (authmod=llnw) authentication end to end: credentials in
//! the URL drive the challenge-response over the reconnects the schemes need. No packaged server
//! speaks these schemes, so a scripted server (built from the library's chunk and AMF0 code)
//! plays Wowza's part; the response formulas themselves are checked against independent vectors
//! in src/rtmp/auth.rs.

mod common;

use std::net::TcpListener;
use std::time::Duration;

use common::scripted::{error, info, ScriptedPeer};
use common::*;
use v4l2rtmp::rtmp::amf0::{self, Value};
use v4l2rtmp::rtmp::auth::{adobe_response, llnw_response};

/// The app the client sent in connect.
fn connect_app(peer: &mut ScriptedPeer) -> String {
    loop {
        let message = peer.next_message().expect("a connect");
        if message.header.type_id == 20 {
            let values = amf0::decode_all(&message.payload).unwrap();
            if values[0].as_str() == Some("connect") {
                return values[2]
                    .get("app")
                    .and_then(Value::as_str)
                    .unwrap()
                    .to_string();
            }
        }
    }
}

fn refuse(peer: &mut ScriptedPeer, description: &str) {
    peer.send_command(
        0,
        &error(
            1.0,
            info("error", "NetConnection.Connect.Rejected", description),
        ),
    );
}

fn query_value<'a>(app: &'a str, name: &str) -> &'a str {
    app.split(['?', '&'])
        .find_map(|pair| pair.strip_prefix(name).and_then(|v| v.strip_prefix('=')))
        .unwrap_or("")
}

#[test]
fn adobe_challenge_response() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = std::thread::spawn(move || {
        // 1. A plain connect: the server names the scheme.
        let mut peer = ScriptedPeer::accept(&listener);
        assert_eq!(connect_app(&mut peer), "live");
        refuse(
            &mut peer,
            "[ AccessManager.Reject ] : [ code=403 need auth; authmod=adobe ] : ",
        );
        // 2. The scheme and the user: the server sends its challenge.
        let mut peer = ScriptedPeer::accept(&listener);
        assert_eq!(connect_app(&mut peer), "live?authmod=adobe&user=bob");
        refuse(
            &mut peer,
            "[ AccessManager.Reject ] : [ authmod=adobe ] : ?reason=needauth&user=bob&salt=S4lt&challenge=Ch4l&opaque=0paq",
        );
        // 3. The response: checked with the published formula, then the publish is accepted.
        let mut peer = ScriptedPeer::accept(&listener);
        let app = connect_app(&mut peer);
        let client_challenge = query_value(&app, "challenge").to_string();
        let expected = adobe_response(
            "bob",
            "s3cr3t",
            "S4lt",
            Some("0paq"),
            Some("Ch4l"),
            &client_challenge,
        );
        assert_eq!(query_value(&app, "response"), expected, "{app}");
        assert_eq!(query_value(&app, "opaque"), "0paq");
        peer.send_command(
            0,
            &common::scripted::result(1.0, info("status", "NetConnection.Connect.Success", "")),
        );
        let mut frames = 0;
        peer.accept_publish(|_, message| {
            frames += usize::from(message.header.type_id == 9);
            false
        });
        frames
    });
    let clip = clip_small();
    let output = run_v4l2rtmp(
        &[
            "--input",
            clip.to_str().unwrap(),
            "--max-retries",
            "0",
            &format!("rtmp://bob:s3cr3t@127.0.0.1:{port}/live/key"),
        ],
        None,
        Duration::from_secs(60),
    );
    assert_success(&output);
    assert!(
        server.join().unwrap() > 100,
        "the stream flowed after authenticating"
    );
    assert!(
        !stderr_of(&output).contains("s3cr3t"),
        "{}",
        stderr_of(&output)
    );
}

#[test]
fn limelight_challenge_response() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = std::thread::spawn(move || {
        let mut peer = ScriptedPeer::accept(&listener);
        assert_eq!(connect_app(&mut peer), "live");
        refuse(
            &mut peer,
            "[ AccessManager.Reject ] : [ code=403 need auth; authmod=llnw ] : ",
        );
        let mut peer = ScriptedPeer::accept(&listener);
        assert_eq!(connect_app(&mut peer), "live?authmod=llnw&user=bob");
        refuse(
            &mut peer,
            "[ AccessManager.Reject ] : [ authmod=llnw ] : ?reason=needauth&user=bob&nonce=NzQ3NjA2MDg=",
        );
        let mut peer = ScriptedPeer::accept(&listener);
        let app = connect_app(&mut peer);
        let expected = llnw_response(
            "bob",
            "s3cr3t",
            "NzQ3NjA2MDg=",
            "live",
            query_value(&app, "cnonce"),
        );
        assert_eq!(query_value(&app, "response"), expected, "{app}");
        peer.send_command(
            0,
            &common::scripted::result(1.0, info("status", "NetConnection.Connect.Success", "")),
        );
        peer.accept_publish(|_, _| false);
    });
    let clip = clip_small();
    let output = run_v4l2rtmp(
        &[
            "--input",
            clip.to_str().unwrap(),
            "--max-retries",
            "0",
            &format!("rtmp://bob:s3cr3t@127.0.0.1:{port}/live/key"),
        ],
        None,
        Duration::from_secs(60),
    );
    server.join().unwrap();
    assert_success(&output);
}

#[test]
fn a_wrong_password_is_a_clear_refusal() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = std::thread::spawn(move || {
        let mut peer = ScriptedPeer::accept(&listener);
        connect_app(&mut peer);
        refuse(
            &mut peer,
            "[ AccessManager.Reject ] : [ code=403 need auth; authmod=adobe ] : ",
        );
        let mut peer = ScriptedPeer::accept(&listener);
        connect_app(&mut peer);
        refuse(&mut peer, "[ AccessManager.Reject ] : [ authmod=adobe ] : ?reason=needauth&user=bob&salt=S&challenge=C");
        let mut peer = ScriptedPeer::accept(&listener);
        connect_app(&mut peer);
        refuse(
            &mut peer,
            "[ AccessManager.Reject ] : [ authmod=adobe ] : ?reason=authfailed",
        );
    });
    let clip = clip_small();
    let output = run_v4l2rtmp(
        &[
            "--input",
            clip.to_str().unwrap(),
            "--max-retries",
            "0",
            &format!("rtmp://bob:wrong@127.0.0.1:{port}/live/key"),
        ],
        None,
        Duration::from_secs(60),
    );
    server.join().unwrap();
    let stderr = stderr_of(&output);
    assert_eq!(exit_code(output.status), 69, "{stderr}");
    assert!(stderr.contains("authentication failed"), "{stderr}");
    assert!(
        !stderr.contains("wrong@") && !stderr.contains(":wrong"),
        "{stderr}"
    );
}
