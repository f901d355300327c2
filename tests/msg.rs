//! The msg service (ALPN tlsnet-msg/1) end to end: `tlsnet serve` as a real process on
//! loopback, users with certificates made at test time, the library client, `tlsnet chat` and
//! a Python client with only the standard library.

mod common;

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use common::*;
use tlsnet::msg::client::{ClientError, MsgClient, To};
use tlsnet::msg::codec::{self, Frame};

fn code(e: ClientError) -> String {
    e.code()
        .unwrap_or_else(|| panic!("not a refusal: {e}"))
        .to_owned()
}

#[tokio::test]
async fn two_users_message_both_ways_with_receipts_and_presence() {
    bounded(async {
        let pki = TestPki::new();
        let server = MsgServer::start(&pki, &[]).await;
        let mut alice = msg_user(&pki, &server.addr(), "alice").await;
        let mut bob = msg_user(&pki, &server.addr(), "bob").await;
        assert_eq!(alice.user(), "alice");
        assert_eq!(alice.welcome.max_message_size, 64 * 1024);

        let sent = alice
            .send(To::User("bob".into()), "hello bob")
            .await
            .unwrap();
        let got = deliver(&mut bob).await;
        assert_eq!(
            (got.id, got.seq, got.from.as_str(), got.to.as_deref()),
            (sent.id, 1, "alice", Some("bob"))
        );
        assert_eq!(got.text, "hello bob");
        bob.ack(&[got.id]).await.unwrap();
        let receipt = expect(&mut alice, "receipt", |f| match f {
            Frame::Receipt(r) => Some(r),
            _ => None,
        })
        .await;
        assert_eq!((receipt.id, &*receipt.by), (sent.id, "bob"));

        let reply = bob
            .send(To::User("alice".into()), "hi alice")
            .await
            .unwrap();
        assert_eq!(reply.seq, 2, "one conversation, one sequence");
        let got = deliver(&mut alice).await;
        assert_eq!((got.from.as_str(), got.text.as_str()), ("bob", "hi alice"));
        alice.ack(&[got.id]).await.unwrap();

        // Presence: they share a conversation now; bob leaves, alice is told.
        bob.close().await;
        let p = expect(&mut alice, "presence", |f| match f {
            Frame::Presence(p) if p.user == "bob" => Some(p),
            _ => None,
        })
        .await;
        assert!(!p.online);
        assert!(p.last_seen > 0);
        let _bob = msg_user(&pki, &server.addr(), "bob").await;
        let p = expect(&mut alice, "presence", |f| match f {
            Frame::Presence(p) if p.user == "bob" => Some(p),
            _ => None,
        })
        .await;
        assert!(p.online);
    })
    .await;
}

#[tokio::test]
async fn rooms_members_and_history_in_pages() {
    bounded(async {
        let pki = TestPki::new();
        let server = MsgServer::start(&pki, &[]).await;
        let mut alice = msg_user(&pki, &server.addr(), "alice").await;
        let mut bob = msg_user(&pki, &server.addr(), "bob").await;
        alice.create("ops").await.unwrap();
        assert_eq!(code(alice.create("ops").await.unwrap_err()), "room_exists");
        assert_eq!(code(bob.join("nope").await.unwrap_err()), "no_such_room");
        assert_eq!(
            code(bob.send(To::Room("ops".into()), "early").await.unwrap_err()),
            "not_a_member"
        );
        bob.join("ops").await.unwrap();
        let members = alice.members("ops").await.unwrap();
        let names: Vec<_> = members
            .iter()
            .map(|m| (m.user.as_str(), m.online))
            .collect();
        assert_eq!(names, [("alice", true), ("bob", true)]);

        for i in 1..=25 {
            alice
                .send(To::Room("ops".into()), &format!("m{i}"))
                .await
                .unwrap();
        }
        let got = receive(&mut bob, 25).await;
        let texts: Vec<_> = got.iter().map(|m| m.text.clone()).collect();
        assert_eq!(texts, (1..=25).map(|i| format!("m{i}")).collect::<Vec<_>>());
        assert!(got.iter().all(|m| m.room.as_deref() == Some("ops")));
        assert_eq!(
            got.iter().map(|m| m.seq).collect::<Vec<_>>(),
            (1..=25).collect::<Vec<_>>()
        );

        // History, newest page first, 10 at a time.
        let room = || To::Room("ops".into());
        let (page, more) = bob.history(room(), None, 10).await.unwrap();
        assert!(more);
        assert_eq!(
            page.iter().map(|m| m.seq).collect::<Vec<_>>(),
            (16..=25).collect::<Vec<_>>()
        );
        let (page, more) = bob.history(room(), Some(16), 10).await.unwrap();
        assert!(more);
        assert_eq!(page.first().map(|m| m.seq), Some(6));
        let (page, more) = bob.history(room(), Some(6), 10).await.unwrap();
        assert!(!more);
        assert_eq!(
            page.iter().map(|m| m.seq).collect::<Vec<_>>(),
            (1..=5).collect::<Vec<_>>()
        );

        bob.leave("ops").await.unwrap();
        assert_eq!(
            code(bob.send(To::Room("ops".into()), "gone").await.unwrap_err()),
            "not_a_member"
        );
        assert_eq!(
            code(bob.history(room(), None, 5).await.unwrap_err()),
            "not_a_member"
        );
        let members = alice.members("ops").await.unwrap();
        assert_eq!(members.len(), 1);
    })
    .await;
}

fn python_client(pki: &TestPki, port: u16, stem: &str) -> tokio::process::Command {
    require("python3");
    let mut command = tokio::process::Command::new("python3");
    command
        .arg(peer_script("msg_client.py"))
        .args(["127.0.0.1", &port.to_string()])
        .arg("--ca")
        .arg(pki.path("ca.pem"))
        .arg("--cert")
        .arg(pki.path(&format!("{stem}.pem")))
        .arg("--key")
        .arg(pki.path(&format!("{stem}-key.pem")))
        .env("PYTHONDONTWRITEBYTECODE", "1");
    command
}

#[tokio::test]
async fn a_python_stdlib_client_is_one_of_the_two_users() {
    bounded(async {
        let pki = TestPki::new();
        let server = MsgServer::start(&pki, &[]).await;
        let stem = pki.user("pyuser");
        let mut alice = msg_user(&pki, &server.addr(), "alice").await;

        let mut command = python_client(&pki, server.port, &stem);
        command.args(["send", "--to", "alice", "from python, with ümlauts"]);
        let mut py = Proc::spawn("msg_client.py send", command);
        assert!(py.wait_exit(STEP).await.success(), "{}", py.describe());
        assert!(py.stdout().contains("user: pyuser"), "{}", py.describe());
        let got = deliver(&mut alice).await;
        assert_eq!(
            (got.from.as_str(), got.text.as_str()),
            ("pyuser", "from python, with ümlauts")
        );
        assert!(py.stdout().contains(&format!("id: {}", got.id)));
        alice.ack(&[got.id]).await.unwrap();

        // And back: queued while python is offline, delivered when it connects.
        alice.send(To::User("pyuser".into()), "one").await.unwrap();
        alice.send(To::User("pyuser".into()), "two").await.unwrap();
        let mut command = python_client(&pki, server.port, &stem);
        command.args(["receive", "--count", "2"]);
        let mut py = Proc::spawn("msg_client.py receive", command);
        assert!(py.wait_exit(STEP).await.success(), "{}", py.describe());
        let lines: Vec<serde_json::Value> = py
            .stdout()
            .lines()
            .filter(|l| l.starts_with('{'))
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 2, "{}", py.describe());
        assert_eq!(lines[0]["text"], "one");
        assert_eq!(lines[1]["text"], "two");
        assert_eq!(lines[1]["from"], "alice");
        // Python acked them: alice gets the receipts.
        for _ in 0..2 {
            expect(&mut alice, "receipt", |f| match f {
                Frame::Receipt(r) if &*r.by == "pyuser" => Some(()),
                _ => None,
            })
            .await;
        }
    })
    .await;
}

#[tokio::test]
async fn offline_recipient_gets_everything_in_order_after_a_server_restart() {
    bounded(async {
        let pki = TestPki::new();
        let mut server = MsgServer::start(&pki, &[]).await;
        let mut alice = msg_user(&pki, &server.addr(), "alice").await;
        let mut ids = Vec::new();
        for i in 0..20 {
            ids.push(
                alice
                    .send(To::User("bob".into()), &format!("n{i}"))
                    .await
                    .unwrap()
                    .id,
            );
        }
        alice.close().await;
        server.stop().await;
        server.restart(&pki).await;
        let mut bob = msg_user(&pki, &server.addr(), "bob").await;
        let got = receive(&mut bob, 20).await;
        assert_eq!(got.iter().map(|m| m.id).collect::<Vec<_>>(), ids);
        assert_eq!(
            got.iter().map(|m| m.seq).collect::<Vec<_>>(),
            (1..=20).collect::<Vec<_>>()
        );
        no_message(&mut bob, Duration::from_millis(500)).await;
        // Acked: a new session gets nothing again.
        bob.close().await;
        let mut bob = msg_user(&pki, &server.addr(), "bob").await;
        no_message(&mut bob, Duration::from_millis(500)).await;
    })
    .await;
}

/// A room member who was away gets the room's messages after a restart, in order; what they
/// did not acknowledge (here every other one) comes again on their next connection, and only
/// that; once all is acknowledged, nothing comes.
#[tokio::test]
async fn a_room_member_gets_again_only_what_they_did_not_acknowledge() {
    bounded(async {
        let pki = TestPki::new();
        let mut server = MsgServer::start(&pki, &[]).await;
        let mut alice = msg_user(&pki, &server.addr(), "alice").await;
        alice.create("ops").await.unwrap();
        let mut bob = msg_user(&pki, &server.addr(), "bob").await;
        bob.join("ops").await.unwrap();
        bob.close().await;
        let mut ids = Vec::new();
        for i in 0..20 {
            let room = To::Room("ops".into());
            ids.push(alice.send(room, &format!("r{i}")).await.unwrap().id);
        }
        alice.close().await;
        server.stop().await;
        server.restart(&pki).await;
        let addr = server.addr();
        let (mut bob, got) = take(&pki, &addr, 20).await;
        assert_eq!(got.iter().map(|m| m.id).collect::<Vec<_>>(), ids);
        assert_eq!(
            got.iter().map(|m| m.seq).collect::<Vec<_>>(),
            (1..=20).collect::<Vec<_>>()
        );
        let every_other: Vec<u64> = ids.iter().copied().step_by(2).collect();
        bob.ack(&every_other).await.unwrap();
        // Answered after the ACK's commit (requests are answered in order).
        bob.members("ops").await.unwrap();
        bob.close().await;
        let (mut bob, again) = take(&pki, &addr, 10).await;
        let rest: Vec<u64> = ids.iter().copied().skip(1).step_by(2).collect();
        assert_eq!(again.iter().map(|m| m.id).collect::<Vec<_>>(), rest);
        no_message(&mut bob, Duration::from_millis(300)).await;
        bob.ack(&rest).await.unwrap();
        bob.members("ops").await.unwrap();
        bob.close().await;
        let (mut bob, _) = take(&pki, &addr, 0).await;
        no_message(&mut bob, Duration::from_millis(500)).await;
    })
    .await;
}

/// Connects as bob and takes `n` messages, unacknowledged.
async fn take(
    pki: &TestPki,
    addr: &str,
    n: usize,
) -> (
    MsgClient<tlsnet::net::client::ClientStream>,
    Vec<codec::Message>,
) {
    let mut bob = msg_user(pki, addr, "bob").await;
    let mut got = Vec::new();
    for _ in 0..n {
        got.push(deliver(&mut bob).await);
    }
    (bob, got)
}

/// Senders send to `sink` while the server is killed with SIGKILL at random moments and
/// restarted; every message whose acknowledgement a sender saw reaches the sink exactly once,
/// in each sender's order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_under_load_loses_no_acknowledged_message() {
    kill_9_under_load(false).await;
}

/// The same with the senders and the sink in one room: what the sink has not acknowledged is
/// past its cursor, and comes whole and once after the kills (the senders never acknowledge
/// each other's messages, hence the large `--max-queue`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_under_load_loses_no_acknowledged_room_message() {
    kill_9_under_load(true).await;
}

async fn kill_9_under_load(room: bool) {
    bounded(async {
        let pki = TestPki::new();
        let mut server =
            MsgServer::start(&pki, &["--rate-limit", "0", "--max-queue", "1000000"]).await;
        let addr = server.addr();
        let senders = ["s1", "s2", "s3"];
        let to = move || {
            if room {
                To::Room("load".into())
            } else {
                To::User("sink".into())
            }
        };
        if room {
            let mut first = msg_user(&pki, &addr, "sink").await;
            first.create("load").await.unwrap();
            first.close().await;
            for name in senders {
                let mut c = msg_user(&pki, &addr, name).await;
                c.join("load").await.unwrap();
                c.close().await;
            }
        }
        let stop = tokio_util::sync::CancellationToken::new();
        let mut tasks = Vec::new();
        for name in senders {
            let stem = pki.user(name);
            let pki_dir = pki.path("");
            let (addr, stop) = (addr.clone(), stop.clone());
            let ca = pki.ca_certs();
            tasks.push(tokio::spawn(async move {
                let mut tls = tlsnet::tls::ClientTlsOptions::with_roots(ca).with_identity(
                    tlsnet::tls::Identity::from_files(
                        &pki_dir.join(format!("{stem}.pem")),
                        &pki_dir.join(format!("{stem}-key.pem")),
                    )
                    .unwrap(),
                );
                tls.alpn = vec![tlsnet::msg::ALPN.to_vec()];
                let mut acked = Vec::new();
                let mut n = 0u64;
                while !stop.is_cancelled() {
                    let Ok((stream, _)) = connect(&addr, &tls).await else {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    };
                    let Ok(mut c) = MsgClient::start(stream, Duration::from_secs(5)).await else {
                        continue;
                    };
                    while !stop.is_cancelled() {
                        n += 1;
                        match c.send(to(), &format!("{n}")).await {
                            Ok(a) => acked.push((a.id, n)),
                            Err(_) => break, // killed: reconnect; this one may or may not be stored
                        }
                    }
                }
                acked
            }));
        }
        let mut rng = std::collections::hash_map::RandomState::new();
        for round in 0..4 {
            use std::hash::BuildHasher;
            rng = if round == 0 {
                rng
            } else {
                std::collections::hash_map::RandomState::new()
            };
            let ms = 200 + rng.hash_one(round) % 600;
            tokio::time::sleep(Duration::from_millis(ms)).await;
            server.kill9().await;
            server.restart(&pki).await;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        stop.cancel();
        let mut acked: BTreeMap<u64, (usize, u64)> = BTreeMap::new();
        for (i, t) in tasks.into_iter().enumerate() {
            for (id, n) in t.await.unwrap() {
                acked.insert(id, (i, n));
            }
        }
        assert!(acked.len() > 50, "too little load: {} acked", acked.len());
        // Let the store settle, then read everything as the sink.
        let mut sink = msg_user(&pki, &server.addr(), "sink").await;
        let mut seen = HashSet::new();
        let mut order: BTreeMap<String, Vec<u64>> = BTreeMap::new();
        loop {
            match sink.next_event(Duration::from_secs(2)).await.unwrap() {
                Some(Frame::Deliver(m)) => {
                    assert!(seen.insert(m.id), "message {} delivered twice", m.id);
                    order.entry(m.from.clone()).or_default().push(m.seq);
                    sink.ack(&[m.id]).await.unwrap();
                }
                Some(_) => {}
                None => break,
            }
        }
        let missing: Vec<_> = acked.keys().filter(|id| !seen.contains(id)).collect();
        assert!(missing.is_empty(), "acknowledged but lost: {missing:?}");
        for (from, seqs) in order {
            assert!(
                seqs.windows(2).all(|w| w[0] < w[1]),
                "{from}'s messages out of order"
            );
        }
        // Each direct conversation's history holds every acknowledged message once, in
        // order, sequences unique: the entries a kill lost before the writer wrote them
        // were made again from the messages at the restart.
        if !room {
            for (i, name) in senders.iter().enumerate() {
                let (mut ids, mut seqs, mut before) = (Vec::new(), Vec::new(), None);
                loop {
                    let (page, more) = sink
                        .history(To::User((*name).into()), before, 500)
                        .await
                        .unwrap();
                    before = page.first().map(|m| m.seq);
                    for m in page.iter().rev() {
                        ids.push(m.id);
                        seqs.push(m.seq);
                    }
                    if !more {
                        break;
                    }
                }
                ids.reverse();
                seqs.reverse();
                assert!(
                    seqs.windows(2).all(|w| w[0] < w[1]) && ids.windows(2).all(|w| w[0] < w[1]),
                    "{name}'s history out of order or repeated"
                );
                let mine = acked.iter().filter(|(_, &(who, _))| who == i);
                let have: HashSet<u64> = ids.iter().copied().collect();
                let lost: Vec<_> = mine
                    .map(|(id, _)| *id)
                    .filter(|id| !have.contains(id))
                    .collect();
                assert!(
                    lost.is_empty(),
                    "acknowledged but not in {name}'s history: {lost:?}"
                );
            }
        }
    })
    .await;
}

#[tokio::test]
async fn bad_input_gets_its_own_error_each() {
    bounded(async {
        let pki = TestPki::new();
        let server = MsgServer::start(
            &pki,
            &[
                "--max-message-size",
                "1024",
                "--max-queue",
                "3",
                "--rate-limit",
                "1",
                "--rate-burst",
                "5",
            ],
        )
        .await;
        let addr = server.addr();
        let mut alice = msg_user(&pki, &addr, "alice").await;

        // A message over --max-message-size: refused, the session goes on.
        let big = "x".repeat(1025);
        assert_eq!(
            code(alice.send(To::User("bob".into()), &big).await.unwrap_err()),
            "message_too_large"
        );
        // An invalid recipient.
        assert_eq!(
            code(
                alice
                    .send(To::User("b\u{1}b".into()), "hi")
                    .await
                    .unwrap_err()
            ),
            "invalid_user_id"
        );
        // An unknown frame type: skipped, said so, the session goes on.
        alice
            .write_raw(&codec::encode_raw(0x42, b"{}"))
            .await
            .unwrap();
        let e = expect(&mut alice, "error", |f| match f {
            Frame::Error(e) => Some(e),
            _ => None,
        })
        .await;
        assert_eq!((e.code.as_str(), e.fatal), ("unknown_frame_type", false));
        // The recipient's queue holds 3.
        for i in 0..3 {
            alice
                .send(To::User("bob".into()), &format!("{i}"))
                .await
                .unwrap();
        }
        let full = alice
            .send(To::User("bob".into()), "one too many")
            .await
            .unwrap_err();
        assert_eq!(code(full), "queue_full");
        // 5 tokens used (2 of the refusals above came before the rate check): the rate limit.
        alice.send(To::User("carol".into()), "ok").await.unwrap();
        let limited = alice
            .send(To::User("carol".into()), "too fast")
            .await
            .unwrap_err();
        assert_eq!(code(limited), "rate_limited");

        // A frame over the limit: fatal, the connection is closed.
        let mut mallory = msg_user(&pki, &addr, "mallory").await;
        mallory
            .write_raw(&[1, codec::kind::SEND, 0x7f, 0xff, 0xff, 0xff])
            .await
            .unwrap();
        match mallory.next_event(Duration::from_secs(10)).await {
            Err(ClientError::Refused(e)) => {
                assert_eq!((e.code.as_str(), e.fatal), ("frame_too_large", true))
            }
            other => panic!("expected frame_too_large, got {other:?}"),
        }
        // Still serving the others.
        alice.send(To::User("dave".into()), "still here").await.ok();
        let _ = msg_user(&pki, &addr, "erin").await;
    })
    .await;
}

#[tokio::test]
async fn a_certificate_without_the_user_id_field_is_refused_with_the_cause() {
    bounded(async {
        let pki = TestPki::new();
        let mut server = MsgServer::start(&pki, &["--user-id", "email"]).await;
        let stem = pki.user("alice"); // a CN, no email address
        let err = msg_connect_as(&pki, &server.addr(), &stem)
            .await
            .err()
            .expect("refused");
        assert_eq!(code(err), "no_user_id");
        server.proc.wait_for_stderr("has no email address").await;
    })
    .await;
}

#[tokio::test]
async fn a_client_that_never_acks_and_a_slow_reader_do_not_hold_the_others() {
    bounded(async {
        let pki = TestPki::new();
        let server = MsgServer::start(&pki, &["--rate-limit", "0"]).await;
        let addr = server.addr();
        let mut alice = msg_user(&pki, &addr, "alice").await;

        // Never acks: gets the window (256) and no more, the rest stays queued.
        let mut lazy = msg_user(&pki, &addr, "lazy").await;
        for i in 0..300 {
            alice
                .send(To::User("lazy".into()), &format!("{i}"))
                .await
                .unwrap();
        }
        let mut got = 0;
        while let Some(f) = lazy.next_event(Duration::from_millis(700)).await.unwrap() {
            if matches!(f, Frame::Deliver(_)) {
                got += 1;
            }
        }
        assert_eq!(got, 256, "the unacknowledged window");
        lazy.close().await;
        let mut lazy = msg_user(&pki, &addr, "lazy").await;
        let all = receive(&mut lazy, 300).await;
        assert_eq!(
            all.iter().map(|m| m.text.clone()).collect::<Vec<_>>(),
            (0..300).map(|i| i.to_string()).collect::<Vec<_>>()
        );

        // A slow reader: connects and never reads while big messages pile up for it.
        let pid = server.proc.pid().expect("server pid");
        let before = rss_kib(pid);
        let slow = msg_user(&pki, &addr, "slow").await;
        let text = "y".repeat(60 * 1024);
        for _ in 0..300 {
            alice.send(To::User("slow".into()), &text).await.unwrap();
        }
        // Others are served meanwhile.
        let mut bob = msg_user(&pki, &addr, "bob").await;
        bob.send(To::User("alice".into()), "served").await.unwrap();
        let m = deliver(&mut alice).await;
        assert_eq!(m.text, "served");
        let grew = rss_kib(pid).saturating_sub(before);
        assert!(
            grew < 96 * 1024,
            "server grew by {grew} KiB for a slow reader"
        );
        drop(slow);
    })
    .await;
}

#[tokio::test]
async fn tlsnet_chat_sends_receives_and_reads_history() {
    bounded(async {
        let pki = TestPki::new();
        let server = MsgServer::start(&pki, &[]).await;
        let alice = pki.user("alice");
        let bob = pki.user("bob");
        let chat = |stem: &str, args: &[&str]| {
            let mut command = tlsnet_cmd();
            command
                .arg("chat")
                .arg(server.addr())
                .args(["--servername", "localhost", "--ca"])
                .arg(pki.path("ca.pem"))
                .arg("--cert")
                .arg(pki.path(&format!("{stem}.pem")))
                .arg("--key")
                .arg(pki.path(&format!("{stem}-key.pem")))
                .args(args);
            command
        };
        let sent = run(
            chat(&alice, &["--to", "bob", "--send", "hello from chat"]),
            None,
            RUN_LIMIT,
        )
        .ok();
        let id: u64 = sent.stdout.trim().parse().expect("an id");
        let got = run(
            chat(&bob, &["--receive", "--json", "--wait", "1s"]),
            None,
            RUN_LIMIT,
        )
        .ok();
        let line: serde_json::Value = serde_json::from_str(got.stdout.trim()).unwrap();
        assert_eq!(line["id"], id);
        assert_eq!(line["from"], "alice");
        assert_eq!(line["to"], "bob");
        assert_eq!(line["text"], "hello from chat");
        assert!(line["time"].as_str().unwrap().ends_with('Z'));
        // Acked after printing: not again.
        let again = run(
            chat(&bob, &["--receive", "--json", "--wait", "500ms"]),
            None,
            RUN_LIMIT,
        )
        .ok();
        assert_eq!(again.stdout, "");
        let history = run(
            chat(&bob, &["--to", "alice", "--history", "5", "--json"]),
            None,
            RUN_LIMIT,
        )
        .ok();
        assert!(history.stdout.contains("hello from chat"));
        // Rooms from the command line, and a refusal is exit 1 with the cause.
        run(chat(&alice, &["--create", "ops"]), None, RUN_LIMIT).ok();
        let refused = run(
            chat(&bob, &["--room", "ops", "--send", "x"]),
            None,
            RUN_LIMIT,
        );
        assert_eq!(refused.code, 1);
        assert!(
            refused.stderr.contains("not_a_member"),
            "{}",
            refused.stderr
        );
        run(
            chat(
                &bob,
                &["--join", "ops", "--room", "ops", "--send", "in ops"],
            ),
            None,
            RUN_LIMIT,
        )
        .ok();
        // Interactive, in a pipe.
        let interactive = run(
            chat(&alice, &[]),
            Some(b"/join ops\n/history 5\n/who\n/quit\n"),
            RUN_LIMIT,
        )
        .ok();
        assert!(
            interactive.stdout.contains("[ops] bob: in ops"),
            "{}",
            interactive.stdout
        );
        assert!(
            interactive.stderr.contains("* bob offline"),
            "{}",
            interactive.stderr
        );
    })
    .await;
}

/// The README's two-terminal chat: a server on the development PKI, alice and bob with --as
/// (their certificates issued in that PKI on first use).
#[tokio::test]
async fn chat_as_alice_and_bob_on_the_development_pki() {
    bounded(async {
        let dir = tempfile::tempdir().unwrap();
        let pki_dir = dir.path().join("dev-pki");
        let store = dir.path().join("store");
        let (_server, addr) = start_tlsnet_serve([
            "--pki-dir".as_ref(),
            pki_dir.as_os_str(),
            "--store".as_ref(),
            store.as_os_str(),
        ])
        .await;
        let port = addr.rsplit_once(':').unwrap().1;
        let local = format!("localhost:{port}");
        let chat = |args: &[&str]| {
            let mut command = tlsnet_cmd();
            command
                .arg("chat")
                .arg(&local)
                .arg("--pki-dir")
                .arg(&pki_dir)
                .args(args);
            run(command, None, RUN_LIMIT)
        };
        let sent = chat(&["--as", "alice", "--to", "bob", "--send", "hi bob"]).ok();
        assert!(sent.stdout.trim().parse::<u64>().is_ok(), "{}", sent.stdout);
        assert!(pki_dir.join("user-alice.pem").is_file());
        let got = chat(&["--as", "bob", "--receive", "--count", "1"]).ok();
        assert!(got.stdout.contains("alice: hi bob"), "{}", got.stdout);
        let refused = chat(&["--as", "../evil", "--to", "bob", "--send", "x"]);
        assert_eq!(refused.code, 1, "{}", refused.stderr);
        assert!(
            refused.stderr.contains("cannot be a development user name"),
            "{}",
            refused.stderr
        );
    })
    .await;
}

/// A client may pipeline: many SENDs (and other requests) in one write, before any answer.
/// Each is answered in the order of the requests, by its `ref`, every one only once it is
/// committed; the recipient gets the messages in the order they were sent.
#[tokio::test]
async fn pipelined_requests_are_answered_in_order() {
    bounded(async {
        let pki = TestPki::new();
        let server = MsgServer::start(&pki, &["--rate-limit", "0"]).await;
        let mut alice = msg_user(&pki, &server.addr(), "alice").await;
        let mut bob = msg_user(&pki, &server.addr(), "bob").await;
        let mut bytes = Vec::new();
        for req in 1..=60u64 {
            let frame = match req {
                // A room request and a refused SEND among the messages.
                20 => Frame::Create(codec::RoomRequest {
                    req,
                    room: "pipe".into(),
                }),
                40 => Frame::Send(codec::Send {
                    req,
                    to: Some("bob".into()),
                    room: Some("pipe".into()),
                    text: "both".into(),
                }),
                _ => Frame::Send(codec::Send {
                    req,
                    to: Some("bob".into()),
                    room: None,
                    text: format!("n{req}"),
                }),
            };
            frame.encode_into(&mut bytes);
        }
        alice.write_raw(&bytes).await.unwrap();
        let mut ids = Vec::new();
        for req in 1..=60u64 {
            let answer = expect(&mut alice, "an answer", |f| match f {
                Frame::Accepted(_) | Frame::Result(_) | Frame::Error(_) => Some(f),
                _ => None,
            })
            .await;
            match (req, answer) {
                (20, Frame::Result(r)) => assert_eq!(r.req, 20),
                (40, Frame::Error(e)) => {
                    assert_eq!((e.req, e.code.as_str()), (Some(40), "bad_request"))
                }
                (_, Frame::Accepted(a)) => {
                    assert_eq!(a.req, req, "answers in the order of the requests");
                    ids.push(a.id);
                }
                (_, other) => panic!("request {req} answered with {other:?}"),
            }
        }
        assert_eq!(ids.len(), 58);
        assert!(ids.windows(2).all(|w| w[0] < w[1]), "ids increase: {ids:?}");
        let got = receive(&mut bob, 58).await;
        assert_eq!(got.iter().map(|m| m.id).collect::<Vec<_>>(), ids);
        assert_eq!(
            got.iter().map(|m| m.seq).collect::<Vec<_>>(),
            (1..=58).collect::<Vec<_>>()
        );
        let texts: Vec<String> = (1..=60)
            .filter(|r| *r != 20 && *r != 40)
            .map(|r| format!("n{r}"))
            .collect();
        assert_eq!(got.into_iter().map(|m| m.text).collect::<Vec<_>>(), texts);
    })
    .await;
}

/// An online recipient whose window fills while messages keep coming from two senders (a
/// direct conversation and a room, pipelined): the server hands new messages to the session as
/// they are committed, and past a bound reads them from the store instead; either way each
/// comes exactly once, in its conversation's order, also after the window opens again.
#[tokio::test]
async fn an_online_recipient_gets_everything_once_in_order_through_a_full_window() {
    bounded(async {
        let pki = TestPki::new();
        let server = MsgServer::start(&pki, &["--rate-limit", "0"]).await;
        let addr = server.addr();
        let mut alice = msg_user(&pki, &addr, "alice").await;
        let mut carol = msg_user(&pki, &addr, "carol").await;
        let mut bob = msg_user(&pki, &addr, "bob").await;
        carol.create("busy").await.unwrap();
        bob.join("busy").await.unwrap();
        // 250 direct messages and 150 room messages, pipelined, while bob acknowledges
        // nothing: 256 fill his window, the rest wait.
        let pipelined = |to: Option<&str>, room: Option<&str>, n: u64, tag: &str| {
            let mut bytes = Vec::new();
            for req in 1..=n {
                Frame::Send(codec::Send {
                    req,
                    to: to.map(Into::into),
                    room: room.map(Into::into),
                    text: format!("{tag}{req}"),
                })
                .encode_into(&mut bytes);
            }
            bytes
        };
        alice
            .write_raw(&pipelined(Some("bob"), None, 250, "d"))
            .await
            .unwrap();
        carol
            .write_raw(&pipelined(None, Some("busy"), 150, "r"))
            .await
            .unwrap();
        for (client, n) in [(&mut alice, 250), (&mut carol, 150)] {
            for _ in 0..n {
                expect(client, "ACCEPTED", |f| match f {
                    Frame::Accepted(_) => Some(()),
                    Frame::Error(e) => panic!("refused: {e:?}"),
                    _ => None,
                })
                .await;
            }
        }
        let mut got = Vec::new();
        while got.len() < 256 {
            got.push(deliver(&mut bob).await);
        }
        no_message(&mut bob, Duration::from_millis(300)).await;
        // The window opens: the other 144, then 20 more sent now.
        let ids: Vec<u64> = got.iter().map(|m| m.id).collect();
        bob.ack(&ids).await.unwrap();
        while got.len() < 400 {
            let m = deliver(&mut bob).await;
            bob.ack(&[m.id]).await.unwrap();
            got.push(m);
        }
        for i in 0..20 {
            alice
                .send(To::User("bob".into()), &format!("late{i}"))
                .await
                .unwrap();
        }
        got.extend(receive(&mut bob, 20).await);
        no_message(&mut bob, Duration::from_millis(300)).await;

        let unique: HashSet<u64> = got.iter().map(|m| m.id).collect();
        assert_eq!(unique.len(), 420, "every message once");
        let texts = |room: bool| -> Vec<String> {
            got.iter()
                .filter(|m| m.room.is_some() == room)
                .map(|m| m.text.clone())
                .collect()
        };
        let direct: Vec<String> = (1..=250)
            .map(|i| format!("d{i}"))
            .chain((0..20).map(|i| format!("late{i}")))
            .collect();
        assert_eq!(texts(false), direct, "the direct conversation in order");
        let room: Vec<String> = (1..=150).map(|i| format!("r{i}")).collect();
        assert_eq!(texts(true), room, "the room in order");
    })
    .await;
}
