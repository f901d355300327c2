//! `tlsnet pki`: a private certificate authority in a directory (see `tlsnet::pki::store`).

use std::net::IpAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Args, Subcommand, ValueEnum};
use tlsnet::pki::dev::DevPki;
use tlsnet::pki::store::REASONS;
use tlsnet::pki::{Constraints, InitOptions, KeyType, LeafSpec, PkiDir, Purpose};

use crate::UsageError;

#[derive(Args, Debug)]
pub struct PkiArgs {
    #[command(subcommand)]
    command: PkiCommand,
}

#[derive(Args, Debug, Clone)]
struct DirArg {
    /// The PKI directory [default: the development PKI of `tlsnet serve`, so that what you
    /// issue there works with `tlsnet serve` and `tlsnet connect` at once].
    #[arg(long, value_name = "DIR", env = "TLSNET_PKI_DIR")]
    dir: Option<PathBuf>,
}

impl DirArg {
    fn pki(&self) -> Result<PkiDir> {
        let dir = match &self.dir {
            Some(d) => d.clone(),
            None => DevPki::default_dir().ok_or_else(|| {
                UsageError("no HOME: give the PKI directory with --dir DIR".into())
            })?,
        };
        Ok(PkiDir::at(dir))
    }
}

#[derive(Subcommand, Debug)]
enum PkiCommand {
    /// Make a root CA (ca.pem, ca-key.pem), optionally with a name-constrained intermediate.
    Init {
        #[command(flatten)]
        dir: DirArg,
        /// Common name of the CA.
        #[arg(long, default_value = "tlsnet private CA")]
        name: String,
        /// Key type.
        #[arg(long, value_enum, default_value = "ecdsa-p256")]
        key: KeyArg,
        /// Lifetime of the root in days.
        #[arg(long, default_value_t = 3650)]
        days: u64,
        /// Also make an issuing intermediate, so the root key can be kept offline.
        #[arg(long)]
        intermediate: bool,
        /// Limit the intermediate to this DNS name and its subdomains (repeatable).
        #[arg(long, value_name = "DOMAIN", requires = "intermediate")]
        permit_dns: Vec<String>,
        /// Limit the intermediate to this IP range, CIDR (repeatable), e.g. 10.0.0.0/8.
        #[arg(long, value_name = "CIDR", requires = "intermediate", value_parser = parse_cidr)]
        permit_ip: Vec<(IpAddr, u8)>,
    },
    /// Issue a server or client certificate: NAME.pem (leaf + chain) and NAME-key.pem (0600).
    Issue {
        /// What the certificate is for.
        #[arg(value_enum)]
        purpose: PurposeArg,
        /// File name and common name. For a server, NAME is also one of its DNS names (or IP
        /// addresses), next to those of --dns and --ip.
        name: String,
        /// DNS subject alternative name (repeatable).
        #[arg(long, value_name = "NAME")]
        dns: Vec<String>,
        /// IP subject alternative name (repeatable).
        #[arg(long, value_name = "ADDR")]
        ip: Vec<IpAddr>,
        /// URI subject alternative name, e.g. a SPIFFE ID (repeatable).
        #[arg(long, value_name = "URI")]
        uri: Vec<String>,
        /// Lifetime in days.
        #[arg(long, default_value_t = 90)]
        days: u64,
        /// Key type.
        #[arg(long, value_enum, default_value = "ecdsa-p256")]
        key: KeyArg,
        #[command(flatten)]
        dir: DirArg,
        /// Also write a PKCS#12 file (for browsers, Java, Windows).
        #[arg(long, value_name = "FILE", requires = "p12_password_file")]
        p12: Option<PathBuf>,
        /// File whose first line is the PKCS#12 password.
        #[arg(long, value_name = "FILE", requires = "p12")]
        p12_password_file: Option<PathBuf>,
    },
    /// List issued certificates with their state and days left.
    List {
        #[command(flatten)]
        dir: DirArg,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Re-issue a certificate with the same names (new key and serial; the old one is
    /// superseded in the CRL).
    Renew {
        /// Name of the certificate.
        name: String,
        /// New lifetime in days [default: the previous lifetime].
        #[arg(long)]
        days: Option<u64>,
        #[command(flatten)]
        dir: DirArg,
    },
    /// Revoke a certificate by name or serial and write a new CRL (crl.pem).
    Revoke {
        /// Name or serial (hex).
        name_or_serial: String,
        /// RFC 5280 reason.
        #[arg(long, default_value = "unspecified", value_parser = clap::builder::PossibleValuesParser::new(REASONS))]
        reason: String,
        #[command(flatten)]
        dir: DirArg,
    },
    /// Sign a fresh CRL (crl.pem) with every revoked certificate.
    Crl {
        /// Days until the CRL's nextUpdate.
        #[arg(long, default_value_t = 30)]
        days: u64,
        #[command(flatten)]
        dir: DirArg,
    },
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum PurposeArg {
    Server,
    Client,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum KeyArg {
    EcdsaP256,
    EcdsaP384,
    Ed25519,
    #[value(name = "rsa-2048")]
    Rsa2048,
    #[value(name = "rsa-3072")]
    Rsa3072,
    #[value(name = "rsa-4096")]
    Rsa4096,
}

impl From<KeyArg> for KeyType {
    fn from(k: KeyArg) -> Self {
        match k {
            KeyArg::EcdsaP256 => KeyType::EcdsaP256,
            KeyArg::EcdsaP384 => KeyType::EcdsaP384,
            KeyArg::Ed25519 => KeyType::Ed25519,
            KeyArg::Rsa2048 => KeyType::Rsa2048,
            KeyArg::Rsa3072 => KeyType::Rsa3072,
            KeyArg::Rsa4096 => KeyType::Rsa4096,
        }
    }
}

fn parse_cidr(text: &str) -> Result<(IpAddr, u8), String> {
    let (addr, prefix) = text
        .split_once('/')
        .ok_or_else(|| format!("'{text}' is not CIDR (e.g. 10.0.0.0/8)"))?;
    let addr: IpAddr = addr
        .parse()
        .map_err(|_| format!("'{addr}' is not an IP address"))?;
    let max = if addr.is_ipv4() { 32 } else { 128 };
    let prefix: u8 = prefix
        .parse()
        .ok()
        .filter(|p| *p <= max)
        .ok_or_else(|| format!("'{prefix}' is not a prefix length 0..={max}"))?;
    Ok((addr, prefix))
}

fn days(n: u64) -> Result<Duration> {
    if n == 0 || n > 100 * 365 {
        return Err(UsageError(format!("--days {n}: use 1 to 36500")).into());
    }
    Ok(Duration::from_secs(n * 86400))
}

pub async fn run(args: PkiArgs) -> Result<ExitCode> {
    match args.command {
        PkiCommand::Init {
            dir,
            name,
            key,
            days: d,
            intermediate,
            permit_dns,
            permit_ip,
        } => {
            let pki = dir.pki()?;
            let options = InitOptions {
                name,
                key_type: key.into(),
                validity: days(d)?,
                intermediate: intermediate.then_some(Constraints {
                    permit_dns,
                    permit_ips: permit_ip,
                }),
            };
            pki.init(&options)?;
            let d = pki.dir().display();
            println!("CA created in {d}: ca.pem (give it to clients and servers), ca-key.pem (keep it secret)");
            if intermediate {
                println!(
                    "Issuing intermediate: intermediate.pem, intermediate-key.pem. Issuing no longer needs \
                     ca-key.pem: move it offline."
                );
            }
            println!("Next: tlsnet pki issue server NAME --dir {d}    tlsnet pki issue client NAME --dir {d}");
        }
        PkiCommand::Issue {
            purpose,
            name,
            mut dns,
            ip,
            uri,
            days: d,
            key,
            dir,
            p12,
            p12_password_file,
        } => {
            let pki = dir.pki()?;
            let purpose = match purpose {
                PurposeArg::Server => Purpose::Server,
                PurposeArg::Client => Purpose::Client,
            };
            let mut ips = ip;
            if purpose == Purpose::Server {
                // Like mkcert: the name a server is issued for is one of its names.
                match name.parse::<IpAddr>() {
                    Ok(addr) if !ips.contains(&addr) => ips.push(addr),
                    Ok(_) => {}
                    Err(_) if !dns.contains(&name) => dns.insert(0, name.clone()),
                    Err(_) => {}
                }
            }
            let mut spec = LeafSpec::new(purpose, name.clone());
            spec.dns = dns;
            spec.ips = ips;
            spec.uris = uri;
            spec.validity = days(d)?;
            spec.key_type = key.into();
            // Read the password first: a bad password file must not leave a half-done issue.
            let p12_password = match &p12_password_file {
                Some(file) => Some(read_password(file)?),
                None => None,
            };
            let entry = pki.issue(&name, &spec)?;
            println!(
                "issued {} certificate '{}' (serial {}, valid until {}):\n  {}\n  {}",
                entry.purpose,
                entry.name,
                entry.serial,
                entry.not_after,
                pki.cert_path(&name).display(),
                pki.key_path(&name).display()
            );
            if let (Some(p12), Some(password)) = (p12, p12_password) {
                write_p12(&pki, &name, &p12, &password)?;
                println!("  {}", p12.display());
            }
        }
        PkiCommand::List { dir, json } => {
            let pki = dir.pki()?;
            let listed = pki.list()?;
            if json {
                println!("{}", serde_json::to_string_pretty(&listed)?);
            } else if listed.is_empty() {
                println!("no certificates issued in {}", pki.dir().display());
            } else {
                println!(
                    "{:<20} {:<7} {:<8} {:>9}  {:<34} names",
                    "NAME", "PURPOSE", "STATE", "DAYS LEFT", "SERIAL"
                );
                for l in listed {
                    let mut names: Vec<String> = l.entry.dns.clone();
                    names.extend(l.entry.ips.iter().map(|i| i.to_string()));
                    names.extend(l.entry.uris.iter().cloned());
                    println!(
                        "{:<20} {:<7} {:<8} {:>9}  {:<34} {}",
                        l.entry.name,
                        l.entry.purpose,
                        l.state,
                        l.days_left,
                        l.entry.serial,
                        names.join(",")
                    );
                }
            }
        }
        PkiCommand::Renew { name, days: d, dir } => {
            let pki = dir.pki()?;
            if let Some(n) = d {
                days(n)?;
            }
            let entry = pki.renew(&name, d)?;
            println!(
                "renewed '{}': serial {}, valid until {}",
                entry.name, entry.serial, entry.not_after
            );
        }
        PkiCommand::Revoke {
            name_or_serial,
            reason,
            dir,
        } => {
            let pki = dir.pki()?;
            let entry = pki.revoke(&name_or_serial, &reason)?;
            println!(
                "revoked '{}' (serial {}, {reason}); CRL written to {}",
                entry.name,
                entry.serial,
                pki.path("crl.pem").display()
            );
        }
        PkiCommand::Crl { days: d, dir } => {
            let pki = dir.pki()?;
            let path = pki.write_crl(days(d)?)?;
            println!("CRL written to {}", path.display());
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn read_password(password_file: &std::path::Path) -> Result<String> {
    let password = std::fs::read_to_string(password_file)
        .with_context(|| format!("cannot read {}", password_file.display()))?;
    let password = password.lines().next().unwrap_or("").to_owned();
    if password.is_empty() {
        return Err(UsageError(format!(
            "{} is empty: a PKCS#12 file needs a password",
            password_file.display()
        ))
        .into());
    }
    Ok(password)
}

fn write_p12(pki: &PkiDir, name: &str, out: &std::path::Path, password: &str) -> Result<()> {
    let mut chain = tlsnet::tls::load_certs(&pki.cert_path(name))?;
    chain.extend(tlsnet::tls::load_certs(&pki.path("ca.pem"))?);
    let key = tlsnet::tls::load_key(&pki.key_path(name))?;
    let p12 = tlsnet::pkcs12::write(&chain, key.secret_der(), password, name)?;
    tlsnet::pki::files::write_file(out, &p12, tlsnet::pki::files::Access::Private)?;
    Ok(())
}
