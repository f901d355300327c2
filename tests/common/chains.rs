//! Certificate chains as servers present them, made with the library's CA at test time: a
//! root, an intermediate signed by it, and leaves of chosen validity signed by the
//! intermediate. For the tests of `tlsnet inspect`.

use std::net::Ipv4Addr;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use time::OffsetDateTime;
use tlsnet::pki::{CertificateAuthority, Constraints, IssuedCert, KeyType, LeafSpec, Purpose};

/// A chain PKI in a temporary directory:
///
/// - `root.pem`: root CA; `int.pem`: intermediate CA signed by it;
/// - `leaf.pem` + `leaf.key`: server certificate for localhost / 127.0.0.1, signed by the
///   intermediate, valid 10 days; `chain.pem` = leaf + intermediate; `full.pem` = + root;
///   `leaf.der`: the leaf in DER;
/// - `expired.pem` / `expired-chain.pem` + `expired.key`: like leaf, expired yesterday;
/// - `future.pem`: valid from tomorrow;
/// - `other-root.pem`: an unrelated root;
/// - `client-ca.pem`, `client.pem` + `client.key`: client CA and a client certificate.
pub struct ChainPki {
    pub dir: tempfile::TempDir,
    pub leaf_der: CertificateDer<'static>,
    pub int_der: CertificateDer<'static>,
    pub root_der: CertificateDer<'static>,
    /// The leaf's private key, PKCS#8 DER.
    pub leaf_key_der: Vec<u8>,
}

/// A leaf valid from `from_days` to `to_days` days from now; a server leaf is for localhost
/// and 127.0.0.1.
fn leaf_spec(purpose: Purpose, cn: &str, from_days: i64, to_days: i64) -> LeafSpec {
    let mut spec = LeafSpec::new(purpose, cn);
    if purpose == Purpose::Server {
        spec.dns = vec!["localhost".into()];
        spec.ips = vec![Ipv4Addr::LOCALHOST.into()];
    }
    spec.valid_from = Some(OffsetDateTime::now_utc() + time::Duration::days(from_days));
    spec.validity = Duration::from_secs(((to_days - from_days) * 86400) as u64);
    spec
}

fn new_root(cn: &str) -> CertificateAuthority {
    let year = Duration::from_secs(365 * 86400);
    CertificateAuthority::generate(cn, KeyType::EcdsaP256, year).expect("root CA")
}

/// The leaf of an issued chain, as PEM.
fn leaf_pem(issued: &IssuedCert, issuer: &CertificateAuthority) -> String {
    let pem = &issued.chain_pem;
    pem.strip_suffix(issuer.cert_pem())
        .unwrap_or(pem)
        .to_owned()
}

fn cert_der(pem: &str) -> CertificateDer<'static> {
    CertificateDer::from_pem_slice(pem.as_bytes()).expect("certificate PEM")
}

impl ChainPki {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let write = |name: &str, text: &str| std::fs::write(dir.path().join(name), text).unwrap();

        let root = new_root("inspect test root");
        let year = Duration::from_secs(365 * 86400);
        let int = root
            .generate_intermediate(
                "inspect test intermediate",
                KeyType::EcdsaP256,
                year,
                &Constraints::default(),
            )
            .expect("intermediate CA");
        let issue = |ca: &CertificateAuthority, spec: LeafSpec| ca.issue(&spec).expect("leaf");
        let leaf = issue(&int, leaf_spec(Purpose::Server, "localhost", -1, 10));
        let expired = issue(&int, leaf_spec(Purpose::Server, "localhost", -30, -1));
        let future = issue(&int, leaf_spec(Purpose::Server, "not yet", 1, 30));
        let other = new_root("some other root");
        let client_ca = new_root("inspect client CA");
        let client = issue(
            &client_ca,
            leaf_spec(Purpose::Client, "inspect client", -1, 10),
        );

        write("root.pem", root.cert_pem());
        write("int.pem", int.cert_pem());
        write("leaf.pem", &leaf_pem(&leaf, &int));
        write("leaf.key", &leaf.key_pem);
        write("chain.pem", &leaf.chain_pem);
        write(
            "full.pem",
            &format!("{}{}", leaf.chain_pem, root.cert_pem()),
        );
        write("expired.pem", &leaf_pem(&expired, &int));
        write("expired-chain.pem", &expired.chain_pem);
        write("expired.key", &expired.key_pem);
        write("future.pem", &leaf_pem(&future, &int));
        write("other-root.pem", other.cert_pem());
        write("client-ca.pem", client_ca.cert_pem());
        write("client.pem", &leaf_pem(&client, &client_ca));
        write("client.key", &client.key_pem);
        std::fs::write(dir.path().join("leaf.der"), &leaf.cert_der).unwrap();

        let leaf_key = PrivateKeyDer::from_pem_slice(leaf.key_pem.as_bytes()).expect("key PEM");
        ChainPki {
            leaf_der: CertificateDer::from(leaf.cert_der.clone()),
            int_der: cert_der(int.cert_pem()),
            root_der: cert_der(root.cert_pem()),
            leaf_key_der: leaf_key.secret_der().to_vec(),
            dir,
        }
    }

    /// A file in the directory, as a string for command lines.
    pub fn path(&self, name: &str) -> String {
        self.dir.path().join(name).to_string_lossy().into_owned()
    }
}
