//! The msg service on several nodes sharing a NATS JetStream cluster (`--store nats://...`):
//! three real nats-servers on loopback (streams with 3 replicas, mutual TLS from the nodes),
//! two `tlsnet serve` nodes, users with certificates made at test time. Servers are killed
//! with SIGKILL for the durability claims.

mod common;

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use tlsnet::msg::client::{ClientError, MsgClient, To};
use tlsnet::msg::codec::{Accepted, Frame};
use tlsnet::net::client::ClientStream;
use tokio_util::sync::CancellationToken;

type Client = MsgClient<ClientStream>;

/// Sends until the node accepts (the first send of a fresh cluster makes its streams; a
/// cluster that just came back may refuse for a moment), at most 60 s.
async fn send_until_accepted(client: &mut Client, to: To, text: &str) -> Accepted {
    let start = Instant::now();
    loop {
        match client.send(to.clone(), text).await {
            Ok(a) => return a,
            Err(e) if e.code().is_some() && start.elapsed() < Duration::from_secs(60) => {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!(
                "{} cannot send: {}",
                client.user(),
                tlsnet::error::chain(&e)
            ),
        }
    }
}

/// A library client for `stem`, built once, connecting to any of several nodes.
struct Roamer {
    tls: tlsnet::tls::ClientTlsOptions,
    addrs: Vec<String>,
    next: usize,
}

impl Roamer {
    fn new(pki: &TestPki, name: &str, addrs: &[String]) -> Roamer {
        let stem = pki.user(name);
        let mut tls = tlsnet::tls::ClientTlsOptions::with_roots(pki.ca_certs())
            .with_identity(pki.identity(&stem));
        tls.alpn = vec![tlsnet::msg::ALPN.to_vec()];
        Roamer {
            tls,
            addrs: addrs.to_vec(),
            next: 0,
        }
    }

    /// Connects to the next node that answers (the first one first), within 30 s.
    async fn connect(&mut self) -> Client {
        let start = Instant::now();
        loop {
            let addr = self.addrs[self.next % self.addrs.len()].clone();
            if let Ok((stream, _)) = connect(&addr, &self.tls).await {
                if let Ok(c) = MsgClient::start(stream, Duration::from_secs(5)).await {
                    return c;
                }
            }
            self.next += 1;
            assert!(start.elapsed() < STEP, "no node answers");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Sends numbered messages to `sink` until `stop`, moving to the next node when its node
/// goes; returns (id, number) of every acknowledged one.
fn sender(
    mut roamer: Roamer,
    stop: CancellationToken,
    count: Arc<AtomicUsize>,
) -> tokio::task::JoinHandle<Vec<(u64, u64)>> {
    tokio::spawn(async move {
        let mut acked = Vec::new();
        let mut n = 0u64;
        'connect: while !stop.is_cancelled() {
            let mut c = roamer.connect().await;
            while !stop.is_cancelled() {
                n += 1;
                match c.send(To::User("sink".into()), &n.to_string()).await {
                    Ok(a) => {
                        acked.push((a.id, n));
                        count.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(ClientError::Refused(_)) => {
                        // Refused while NATS elects a leader: not stored; the next one goes on.
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                    Err(_) => {
                        roamer.next += 1;
                        continue 'connect;
                    }
                }
            }
        }
        acked
    })
}

/// The load of the kill tests: one message to `sink` through the first node (so that the
/// stream and the sink's queue exist), then two senders `s1` and `s2` that start on different
/// nodes of `addrs` (see [`sender`]) and count their acks into the returned counter.
#[allow(clippy::type_complexity)]
async fn two_senders(
    pki: &TestPki,
    addrs: &[String],
    stop: &CancellationToken,
) -> (
    Arc<AtomicUsize>,
    Vec<tokio::task::JoinHandle<Vec<(u64, u64)>>>,
) {
    let mut warm = msg_user(pki, &addrs[0], "warm").await;
    send_until_accepted(&mut warm, To::User("sink".into()), "0").await;
    drop(warm);
    let count = Arc::new(AtomicUsize::new(0));
    let tasks = ["s1", "s2"]
        .iter()
        .enumerate()
        .map(|(i, name)| {
            let mut list = addrs.to_vec();
            list.rotate_left(i);
            sender(Roamer::new(pki, name, &list), stop.clone(), count.clone())
        })
        .collect();
    (count, tasks)
}

/// Waits until the senders counting into `count` have had `more` acks since `from`, for at most
/// a minute (a loaded machine is slow, a stuck one fails the test's own assertions after).
async fn acks_grow(count: &AtomicUsize, from: usize, more: usize) {
    let start = Instant::now();
    while count.load(Ordering::Relaxed) < from + more && start.elapsed() < Duration::from_secs(60) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// What a sink saw: message ids in arrival order (each once), the numbers per sender, and how
/// many came twice (dropped by id, as a client does).
#[derive(Default)]
struct Sink {
    seen: HashSet<u64>,
    numbers: BTreeMap<String, Vec<u64>>,
    duplicates: usize,
}

impl Sink {
    /// Receives as `sink` through `roamer` until `done` holds and nothing came for `quiet`.
    async fn run(&mut self, roamer: &mut Roamer, quiet: Duration, done: impl Fn(&Sink) -> bool) {
        let start = Instant::now();
        let mut c = roamer.connect().await;
        loop {
            assert!(
                start.elapsed() < Duration::from_secs(120),
                "the sink never finished"
            );
            match c.next_event(quiet).await {
                Ok(Some(Frame::Deliver(m))) => {
                    if self.seen.insert(m.id) {
                        let n: u64 = m.text.parse().unwrap();
                        self.numbers.entry(m.from.clone()).or_default().push(n);
                    } else {
                        self.duplicates += 1;
                    }
                    if c.ack(&[m.id]).await.is_err() {
                        roamer.next += 1;
                        c = roamer.connect().await;
                    }
                }
                Ok(Some(_)) => {}
                Ok(None) if done(self) => return,
                Ok(None) => {}
                Err(_) => {
                    roamer.next += 1;
                    c = roamer.connect().await;
                }
            }
        }
    }

    fn check(&self, acked: &BTreeMap<u64, u64>) {
        let missing: Vec<_> = acked.keys().filter(|id| !self.seen.contains(id)).collect();
        assert!(missing.is_empty(), "acknowledged but lost: {missing:?}");
        for (from, numbers) in &self.numbers {
            assert!(
                numbers.windows(2).all(|w| w[0] < w[1]),
                "{from}'s messages out of order: {numbers:?}"
            );
        }
    }
}

async fn collect(tasks: Vec<tokio::task::JoinHandle<Vec<(u64, u64)>>>) -> BTreeMap<u64, u64> {
    let mut acked = BTreeMap::new();
    for t in tasks {
        for (id, n) in t.await.unwrap() {
            assert!(acked.insert(id, n).is_none(), "id {id} given twice");
        }
    }
    acked
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_on_two_nodes_message_share_rooms_presence_and_offline_queues() {
    bounded(async {
        let pki = TestPki::new();
        let nats = NatsCluster::start(&pki).await;
        let a = nats.tlsnet_node(&pki, &[]).await;
        let b = nats.tlsnet_node(&pki, &[]).await;
        let mut alice = msg_user(&pki, &a.addr(), "alice").await;
        let mut bob = msg_user(&pki, &b.addr(), "bob").await;

        // A direct message from node A to node B, its receipt back, and a reply.
        let sent = send_until_accepted(&mut alice, To::User("bob".into()), "hello bob").await;
        assert_eq!(
            nats.stream_replicas("TLSNET_MSG"),
            3,
            "messages on 3 replicas"
        );
        assert_eq!(nats.stream_replicas("KV_tlsnet-presence"), 3);
        let got = deliver(&mut bob).await;
        assert_eq!(
            (
                got.id,
                got.seq,
                got.from.as_str(),
                got.to.as_deref(),
                got.text.as_str()
            ),
            (sent.id, sent.seq, "alice", Some("bob"), "hello bob")
        );
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
        assert!(
            reply.seq > sent.seq,
            "one conversation, increasing sequence"
        );
        let got = deliver(&mut alice).await;
        assert_eq!((got.from.as_str(), got.text.as_str()), ("bob", "hi alice"));
        alice.ack(&[got.id]).await.unwrap();
        let (page, more) = bob
            .history(To::User("alice".into()), None, 10)
            .await
            .unwrap();
        let texts: Vec<_> = page.iter().map(|m| m.text.as_str()).collect();
        assert_eq!((texts, more), (vec!["hello bob", "hi alice"], false));
        let (page, more) = bob
            .history(To::User("alice".into()), Some(reply.seq), 10)
            .await
            .unwrap();
        assert_eq!((page.len(), page[0].id, more), (1, sent.id, false));

        // A room made on A, joined on B: members and their presence from either node.
        alice.create("ops").await.unwrap();
        bob.join("ops").await.unwrap();
        let members = bob.members("ops").await.unwrap();
        let online: Vec<_> = members
            .iter()
            .map(|p| (p.user.as_str(), p.online))
            .collect();
        assert_eq!(online, [("alice", true), ("bob", true)]);
        let r = alice
            .send(To::Room("ops".into()), "deploy at noon")
            .await
            .unwrap();
        let got = deliver(&mut bob).await;
        assert_eq!((got.id, got.room.as_deref()), (r.id, Some("ops")));
        bob.ack(&[got.id]).await.unwrap();
        let (page, _) = alice
            .history(To::Room("ops".into()), None, 10)
            .await
            .unwrap();
        assert_eq!(page.len(), 1);

        // Presence across nodes: bob goes, alice (on the other node) is told; he comes back
        // on node A.
        bob.close().await;
        let p = expect(&mut alice, "presence", |f| match f {
            Frame::Presence(p) if p.user == "bob" => Some(p),
            _ => None,
        })
        .await;
        assert!(!p.online);
        let members = alice.members("ops").await.unwrap();
        assert!(!members.iter().find(|p| p.user == "bob").unwrap().online);
        let _bob = msg_user(&pki, &a.addr(), "bob").await;
        let p = expect(&mut alice, "presence", |f| match f {
            Frame::Presence(p) if p.user == "bob" => Some(p),
            _ => None,
        })
        .await;
        assert!(p.online);

        // Offline delivery: carol has never connected; she gets everything in order on B.
        let mut ids = Vec::new();
        for i in 0..5 {
            ids.push(
                alice
                    .send(To::User("carol".into()), &format!("c{i}"))
                    .await
                    .unwrap()
                    .id,
            );
        }
        let mut carol = msg_user(&pki, &b.addr(), "carol").await;
        let got = receive(&mut carol, 5).await;
        assert_eq!(got.iter().map(|m| m.id).collect::<Vec<_>>(), ids);
        no_message(&mut alice, Duration::from_millis(1500)).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_of_one_nats_server_of_three_loses_nothing_acked_and_sending_goes_on() {
    bounded(async {
        let pki = TestPki::new();
        let mut nats = NatsCluster::start(&pki).await;
        let a = nats.tlsnet_node(&pki, &["--rate-limit", "0"]).await;
        let b = nats.tlsnet_node(&pki, &["--rate-limit", "0"]).await;
        let addrs = [a.addr(), b.addr()];
        let stop = CancellationToken::new();
        let (count, tasks) = two_senders(&pki, &addrs, &stop).await;
        // Load before, kill -9 of one server, load after: the senders must still be acked.
        acks_grow(&count, 0, 60).await;
        nats.kill9(0).await;
        let mut probe = msg_user(&pki, &b.addr(), "probe").await;
        let after = send_until_accepted(&mut probe, To::User("sink".into()), "1").await;
        acks_grow(&count, count.load(Ordering::Relaxed), 30).await;
        stop.cancel();
        let acked = collect(tasks).await;
        let late = acked.keys().filter(|id| **id > after.id).count();
        assert!(acked.len() > 50, "too little load: {}", acked.len());
        assert!(
            late > 10,
            "sending did not go on after the kill: {late} acked after it"
        );
        let mut sink = Sink::default();
        let mut roamer = Roamer::new(&pki, "sink", &addrs);
        let want: HashSet<u64> = acked.keys().copied().collect();
        sink.run(&mut roamer, Duration::from_secs(2), |s| {
            want.is_subset(&s.seen)
        })
        .await;
        sink.check(&acked);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_whose_node_is_killed_goes_offline_for_their_peers_on_the_other_node() {
    use tlsnet::msg::nats::{HEARTBEAT, PRESENCE_TTL};
    bounded(async {
        let pki = TestPki::new();
        let nats = NatsCluster::start(&pki).await;
        let mut a = nats.tlsnet_node(&pki, &[]).await;
        let b = nats.tlsnet_node(&pki, &[]).await;
        let mut alice = msg_user(&pki, &a.addr(), "alice").await;
        let mut bob = msg_user(&pki, &b.addr(), "bob").await;
        alice.create("ops").await.unwrap();
        bob.join("ops").await.unwrap();
        let members = bob.members("ops").await.unwrap();
        assert!(members.iter().any(|p| p.user == "alice" && p.online));
        // Node A dies with alice on it: it says nothing, her entry expires, node B tells bob.
        a.kill9().await;
        let killed = Instant::now();
        let limit = PRESENCE_TTL + 3 * HEARTBEAT + Duration::from_secs(10);
        let gone = loop {
            let left = limit.saturating_sub(killed.elapsed());
            match bob.next_event(left).await {
                Ok(Some(Frame::Presence(p))) if p.user == "alice" && !p.online => break p,
                Ok(Some(_)) => continue,
                Ok(None) => panic!("bob was not told within {limit:?} that alice's node went"),
                Err(e) => panic!("bob: {}", tlsnet::error::chain(&e)),
            }
        };
        let waited = killed.elapsed();
        println!("told after {waited:?}: {gone:?}");
        assert!(gone.last_seen > 0, "{gone:?}");
        // The room's member list agrees (at once, or after the replicas that answer direct
        // reads have expired the entry too).
        let start = Instant::now();
        loop {
            let members = bob.members("ops").await.unwrap();
            if members.iter().any(|p| p.user == "alice" && !p.online) {
                break;
            }
            assert!(start.elapsed() < Duration::from_secs(10), "{members:?}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        drop(alice);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_nats_servers_down_refuses_sends_with_the_cause_and_recovers() {
    bounded(async {
        let pki = TestPki::new();
        let mut nats = NatsCluster::start(&pki).await;
        let a = nats.tlsnet_node(&pki, &[]).await;
        let mut alice = msg_user(&pki, &a.addr(), "alice").await;
        send_until_accepted(&mut alice, To::User("bob".into()), "before").await;
        for i in 0..3 {
            nats.kill9(i).await;
        }
        let start = Instant::now();
        let refusal = loop {
            match alice.send(To::User("bob".into()), "during").await {
                Ok(a) => {
                    assert!(
                        start.elapsed() < Duration::from_secs(20),
                        "still acked {a:?} with no NATS"
                    );
                }
                Err(ClientError::Refused(e)) => break (e.code, e.message),
                Err(e) => panic!("not a refusal: {}", tlsnet::error::chain(&e)),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        assert_eq!(refusal.0, "nats_unavailable", "{}", refusal.1);
        assert!(refusal.1.contains("NATS cluster"), "{}", refusal.1);
        for i in 0..3 {
            nats.start_node(i).await;
        }
        nats.wait_ready().await;
        let back = send_until_accepted(&mut alice, To::User("bob".into()), "after").await;
        let mut bob = msg_user(&pki, &a.addr(), "bob").await;
        let got = receive(&mut bob, 2).await;
        assert_eq!(got[0].text, "before");
        assert_eq!((got[1].id, got[1].text.as_str()), (back.id, "after"));
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_of_a_node_under_load_moves_its_clients_and_delivers_every_acked_message_once_in_order(
) {
    bounded(async {
        let pki = TestPki::new();
        let nats = NatsCluster::start(&pki).await;
        let mut a = nats.tlsnet_node(&pki, &["--rate-limit", "0"]).await;
        let b = nats.tlsnet_node(&pki, &["--rate-limit", "0"]).await;
        let addrs = [a.addr(), b.addr()];
        let stop = CancellationToken::new();
        let (count, tasks) = two_senders(&pki, &addrs, &stop).await;
        // The sink reads on node A while it is killed, and goes on on node B.
        let sink_stop = CancellationToken::new();
        let sink_task = {
            let mut roamer = Roamer::new(&pki, "sink", &addrs);
            let done = sink_stop.clone();
            tokio::spawn(async move {
                let mut sink = Sink::default();
                sink.run(&mut roamer, Duration::from_millis(500), |_| {
                    done.is_cancelled()
                })
                .await;
                sink
            })
        };
        acks_grow(&count, 0, 60).await;
        a.kill9().await;
        let killed_at = count.load(Ordering::Relaxed);
        acks_grow(&count, killed_at, 30).await;
        stop.cancel();
        let acked = collect(tasks).await;
        assert!(acked.len() > 50, "too little load: {}", acked.len());
        // Everything acknowledged reaches the sink (on node B now), within the bound.
        let start = Instant::now();
        sink_stop.cancel();
        let mut sink = sink_task.await.unwrap();
        let want: HashSet<u64> = acked.keys().copied().collect();
        if !want.is_subset(&sink.seen) {
            let mut roamer = Roamer::new(&pki, "sink", &[b.addr()]);
            sink.run(&mut roamer, Duration::from_secs(2), |s| {
                want.is_subset(&s.seen)
            })
            .await;
        }
        assert!(start.elapsed() < Duration::from_secs(60));
        sink.check(&acked);
        eprintln!(
            "{} acked, {} received, {} duplicates dropped by id",
            acked.len(),
            sink.seen.len(),
            sink.duplicates
        );
    })
    .await;
}

/// `tlsnet chat` given both nodes: a send goes to the node that answers; a receiver on a node
/// that is killed goes on on the other, where it was, printing every message once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tlsnet_chat_with_several_servers_moves_to_the_next_when_its_node_dies() {
    bounded(async {
        let pki = TestPki::new();
        let nats = NatsCluster::start(&pki).await;
        let mut a = nats.tlsnet_node(&pki, &["--rate-limit", "0"]).await;
        let b = nats.tlsnet_node(&pki, &["--rate-limit", "0"]).await;
        let (alice, bob) = (pki.user("alice"), pki.user("bob"));
        let chat = |stem: &str, servers: &str, args: &[&str]| {
            let mut command = tlsnet_cmd();
            command
                .arg("chat")
                .arg(servers)
                .args(["--servername", "localhost", "--ca"])
                .arg(pki.path("ca.pem"))
                .arg("--cert")
                .arg(pki.path(&format!("{stem}.pem")))
                .arg("--key")
                .arg(pki.path(&format!("{stem}-key.pem")))
                .args(args);
            command
        };
        // Warm the cluster (the first send makes the streams).
        let mut warm = msg_user(&pki, &b.addr(), "alice").await;
        let first = send_until_accepted(&mut warm, To::User("bob".into()), "m0").await;
        let mut ids = vec![first.id];

        // Nothing listens on the first address: --send goes to the second.
        let dead = format!("127.0.0.1:{}", free_port());
        let sent = run(
            chat(
                &alice,
                &format!("{dead},{}", b.addr()),
                &["--to", "bob", "--send", "m1", "--timeout", "2s"],
            ),
            None,
            RUN_LIMIT,
        )
        .ok();
        ids.push(sent.stdout.trim().parse().expect("an id"));

        let servers = format!("{},{}", a.addr(), b.addr());
        let mut receiver = Proc::spawn(
            "tlsnet chat --receive",
            tokio::process::Command::from(chat(
                &bob,
                &servers,
                &["--receive", "--json", "--count", "20", "--wait", "30s"],
            )),
        );
        receiver
            .wait_until("2 messages", STEP, |out, _| out.lines().count() >= 2)
            .await;
        for i in 2..10 {
            ids.push(
                warm.send(To::User("bob".into()), &format!("m{i}"))
                    .await
                    .unwrap()
                    .id,
            );
        }
        receiver
            .wait_until("10 messages", STEP, |out, _| out.lines().count() >= 10)
            .await;
        a.kill9().await;
        for i in 10..20 {
            ids.push(
                warm.send(To::User("bob".into()), &format!("m{i}"))
                    .await
                    .unwrap()
                    .id,
            );
        }
        let status = receiver.wait_exit(STEP).await;
        assert!(status.success(), "{}", receiver.describe());
        assert!(
            receiver.stderr().contains("now on"),
            "{}",
            receiver.describe()
        );
        let got: Vec<u64> = receiver
            .stdout()
            .lines()
            .map(|l| {
                serde_json::from_str::<serde_json::Value>(l).unwrap()["id"]
                    .as_u64()
                    .unwrap()
            })
            .collect();
        assert_eq!(got, ids, "every message once, in order, across the move");
    })
    .await;
}

/// CPU time (user + system) a process has used so far, from /proc/PID/stat.
fn cpu_of(proc: &Proc) -> Duration {
    let pid = proc.pid().expect("running");
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // After the command name in parentheses: state is field 3; utime and stime are 14 and 15.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = rest.split(' ').collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    // USER_HZ is 100 on Linux.
    Duration::from_millis(ticks * 10)
}

/// `senders` users on the first node each send `each` direct messages, one at a time (the
/// next after the ack), to their own receiver on the last node, who acks each; returns the
/// wall time.
async fn load(pki: &TestPki, nodes: &[&MsgServer], senders: usize, each: usize) -> Duration {
    let (first, last) = (nodes[0].addr(), nodes[nodes.len() - 1].addr());
    let mut receivers = Vec::new();
    for i in 0..senders {
        let mut r = msg_user(pki, &last, &format!("r{i}")).await;
        receivers.push(tokio::spawn(async move {
            let mut got = 0;
            while got < each {
                match r.next_event(Duration::from_secs(30)).await.unwrap() {
                    Some(Frame::Deliver(m)) => {
                        got += 1;
                        r.ack(&[m.id]).await.unwrap();
                    }
                    Some(_) => {}
                    None => panic!("r{i} got {got} of {each}"),
                }
            }
        }));
    }
    let mut clients = Vec::new();
    for i in 0..senders {
        let mut c = msg_user(pki, &first, &format!("w{i}")).await;
        send_until_accepted(&mut c, To::User(format!("r{i}")), "warm").await;
        clients.push(c);
    }
    let start = Instant::now();
    let tasks: Vec<_> = clients
        .into_iter()
        .enumerate()
        .map(|(i, mut c)| {
            tokio::spawn(async move {
                let text = "x".repeat(100);
                for _ in 1..each {
                    c.send(To::User(format!("r{i}")), &text).await.unwrap();
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    for r in receivers {
        r.await.unwrap();
    }
    start.elapsed()
}

/// The capacity model's figures (docs/SCALING.md): CPU per 100-byte direct message on a
/// tlsnet node and in NATS, for 1 node on the embedded store and for 2 nodes on the 3-server
/// cluster. A measurement, not a test of speed:
/// `cargo test --release --test msg_cluster -- --ignored --nocapture cpu_per_message`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement: run it by name with --ignored --nocapture"]
async fn cpu_per_message_on_a_node_and_in_nats() {
    let (senders, each) = (20, 500);
    let messages = (senders * each) as f64;
    let per = |d: Duration| d.as_secs_f64() * 1e6 / messages;

    let pki = TestPki::new();
    let node = MsgServer::start(&pki, &["--rate-limit", "0"]).await;
    let before = cpu_of(&node.proc);
    let wall = load(&pki, &[&node], senders, each).await;
    let cpu = cpu_of(&node.proc) - before;
    println!(
        "embedded, 1 node: {messages} messages in {wall:?} ({:.0}/s); node CPU {:.1} us/message",
        messages / wall.as_secs_f64(),
        per(cpu)
    );

    let pki = TestPki::new();
    let nats = NatsCluster::start(&pki).await;
    let a = nats.tlsnet_node(&pki, &["--rate-limit", "0"]).await;
    let b = nats.tlsnet_node(&pki, &["--rate-limit", "0"]).await;
    let nats_cpu = |c: &NatsCluster| {
        c.nodes
            .iter()
            .map(|n| cpu_of(n.proc.as_ref().unwrap()))
            .sum::<Duration>()
    };
    let (a0, b0, n0) = (cpu_of(&a.proc), cpu_of(&b.proc), nats_cpu(&nats));
    let wall = load(&pki, &[&a, &b], senders, each).await;
    let (da, db, dn) = (
        cpu_of(&a.proc) - a0,
        cpu_of(&b.proc) - b0,
        nats_cpu(&nats) - n0,
    );
    println!(
        "NATS, 2 nodes, 3 servers R3: {messages} messages in {wall:?} ({:.0}/s); sending node {:.1} us/message, receiving node {:.1} us/message, NATS (3 servers) {:.1} us/message",
        messages / wall.as_secs_f64(),
        per(da),
        per(db),
        per(dn)
    );
}
