//! The access policy (`--allow-*`): each rule kind admits the client it names and refuses the
//! others with the alert access_denied, which a TLS 1.3 client sees on its first read; the
//! server counts the refusal by cause and keeps serving good clients.

mod common;

use common::*;
use tlsnet::pki::{LeafSpec, Purpose};
use tlsnet::service::Echo;
use tlsnet::tls::{AccessPolicy, Pattern, Rule, SpkiPin};

/// Client certificates, each with one distinguishing name.
fn issue_clients(pki: &TestPki) {
    let mut ops = LeafSpec::new(Purpose::Client, "olivia");
    ops.organizational_unit = Some("ops".into());
    pki.issue("ops", &ops);
    let mut web = LeafSpec::new(Purpose::Client, "web");
    web.dns = vec!["web.acme.internal".into()];
    pki.issue("web", &web);
    let mut deep = LeafSpec::new(Purpose::Client, "deep");
    deep.dns = vec!["a.b.acme.internal".into()];
    pki.issue("deep", &deep);
    let mut spiffe = LeafSpec::new(Purpose::Client, "svc");
    spiffe.uris = vec!["spiffe://acme/ns/web".into()];
    pki.issue("spiffe", &spiffe);
    let mut other = LeafSpec::new(Purpose::Client, "other-svc");
    other.uris = vec!["spiffe://other/ns/web".into()];
    pki.issue("other-spiffe", &other);
    pki.issue("mallory", &LeafSpec::new(Purpose::Client, "mallory"));
}

const CLIENTS: [&str; 7] = [
    "client", // CN=alice
    "ops",
    "web",
    "deep",
    "spiffe",
    "other-spiffe",
    "mallory",
];

/// Starts a server with `rules`, tries every client, and returns which ones were served.
async fn admitted(pki: &TestPki, rules: Vec<Rule>) -> Vec<&'static str> {
    let mut tls = pki.server_tls();
    tls.policy = AccessPolicy::new(rules);
    let server = TestServer::start_with(tls, Echo, test_options()).await;
    let mut served = Vec::new();
    let mut refused = 0;
    for name in CLIENTS {
        let options = pki.client_tls().with_identity(pki.identity(name));
        // TLS 1.3: the client's handshake completes before the server has checked its
        // certificate; a refusal arrives as an alert on the first read.
        let (mut stream, _) = connect(&server.addr_string(), &options)
            .await
            .expect("client side of the handshake");
        match echo_round_trip(&mut stream, b"hello").await {
            Ok(got) => {
                assert_eq!(got, b"hello");
                served.push(name);
            }
            Err(e) => {
                let cause = tlsnet::net::client::read_error_cause(&e);
                assert!(
                    cause.contains("access_denied") && cause.contains("access policy"),
                    "{name}: {cause}"
                );
                refused += 1;
            }
        }
    }
    // Every refusal is counted with its cause, and good clients are still served after them.
    wait_for_failure(&server.stats, "access_denied").await;
    assert_eq!(server.stats.failures("access_denied"), refused);
    if served.contains(&"client") {
        good_client_is_served(pki, &server.addr_string()).await;
    }
    served
}

#[tokio::test]
async fn each_rule_kind_admits_its_match_and_refuses_the_rest() {
    let pki = TestPki::new();
    issue_clients(&pki);
    let dns = |p: &str| Rule::Dns(Pattern::dns(p).unwrap());
    let uri = |p: &str| Rule::Uri(Pattern::uri(p).unwrap());

    let cn = admitted(&pki, vec![Rule::CommonName("alice".into())]).await;
    assert_eq!(cn, ["client"]);

    let ou = admitted(&pki, vec![Rule::OrganizationalUnit("ops".into())]).await;
    assert_eq!(ou, ["ops"]);

    // `*` is one label: a.b.acme.internal is not admitted by *.acme.internal.
    let one_label = admitted(&pki, vec![dns("*.acme.internal")]).await;
    assert_eq!(one_label, ["web"]);
    let many_labels = admitted(&pki, vec![dns("**.acme.internal")]).await;
    assert_eq!(many_labels, ["web", "deep"]);

    // `**` is one or more path segments; another trust domain is refused.
    let spiffe = admitted(&pki, vec![uri("spiffe://acme/**")]).await;
    assert_eq!(spiffe, ["spiffe"]);
    let exact = admitted(&pki, vec![uri("spiffe://acme/*/web")]).await;
    assert_eq!(exact, ["spiffe"]);

    let mallory_key = SpkiPin::of_certificate(&pki.identity("mallory").chain[0]).unwrap();
    let pinned = admitted(&pki, vec![Rule::SpkiPin(mallory_key)]).await;
    assert_eq!(pinned, ["mallory"]);

    // Any rule admits: the union.
    let either = admitted(
        &pki,
        vec![Rule::CommonName("alice".into()), uri("spiffe://acme/**")],
    )
    .await;
    assert_eq!(either, ["client", "spiffe"]);
}

/// The flags, through the binary: a refused client is told why, exits 1, and the server's log
/// names its identity and the rules.
#[test]
fn allow_flags_on_the_command_line() {
    let pki = TestPki::new();
    issue_clients(&pki);
    let ca = pki.path("ca.pem");
    let ca = ca.to_str().unwrap();
    let metrics = format!("127.0.0.1:{}", free_port());
    let server = ServeProcess::start_pki(
        &pki,
        &[
            "--metrics",
            &metrics,
            "--client-ca",
            ca,
            "--allow-cn",
            "alice",
            "--allow-uri",
            "spiffe://acme/**",
        ],
    );
    let as_client = |name: &str| {
        let cert = pki.path(&format!("{name}.pem"));
        let key = pki.path(&format!("{name}-key.pem"));
        connect_cmd(
            &[
                &server.addr(),
                "--ca",
                ca,
                "--cert",
                cert.to_str().unwrap(),
                "--key",
                key.to_str().unwrap(),
                "-q",
            ],
            b"ping\n",
        )
    };
    let alice = as_client("client");
    assert_eq!(alice.code, 0, "{}", alice.stderr);
    assert_eq!(alice.stdout, "ping\n");
    let svc = as_client("spiffe");
    assert_eq!(svc.code, 0, "{}", svc.stderr);
    let mallory = as_client("mallory");
    assert_eq!(mallory.code, 1, "{}", mallory.stderr);
    assert!(
        mallory.stderr.contains("access_denied"),
        "{}",
        mallory.stderr
    );
    let line = server.wait_for_log("access denied");
    assert!(line.contains("CN=mallory"), "{line}");
    assert!(line.contains("cn=alice, uri=spiffe://acme/**"), "{line}");
    server.wait_for_log("reason=\"access_denied\"");

    // The refusal is in the metrics, by cause, next to the two clients served.
    let text = http_get(&metrics, "/metrics");
    assert!(
        text.contains("tlsnet_handshake_failures_total{cause=\"access_denied\"} 1"),
        "{text}"
    );
    assert!(text.contains("tlsnet_handshakes_total 2"), "{text}");
    assert!(text.contains("tlsnet_bytes_received_total 10"), "{text}");
}

#[test]
fn allow_rules_need_required_client_certificates() {
    let pki = TestPki::new();
    let cert = pki.path("server.pem");
    let key = pki.path("server-key.pem");
    let out = tlsnet(&[
        "serve",
        "--cert",
        cert.to_str().unwrap(),
        "--key",
        key.to_str().unwrap(),
        "--allow-cn",
        "alice",
        "--listen",
        "127.0.0.1:0",
    ]);
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(out.stderr.contains("--allow-*"), "{}", out.stderr);
    let out = tlsnet(&[
        "serve",
        "--allow-dns",
        "w*b.acme",
        "--listen",
        "127.0.0.1:0",
    ]);
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(out.stderr.contains("whole segment"), "{}", out.stderr);
}
