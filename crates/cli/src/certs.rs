//! `mosaic certs`: certificates for a cluster without a PKI of its own (docs/security.md).
//!
//! `certs init DIR` makes a CA and one certificate per role in DIR: `node` (servers and the
//! connections between them; valid for localhost, 127.0.0.1, ::1 and every `--host`),
//! `admin` and `client` (client certificates only). `certs issue DIR --role ROLE --name NAME`
//! signs one more with DIR's CA: a node certificate per host, a client certificate per
//! application. The role is the certificate's organizational unit (OU); the name its common
//! name (CN). Keys are ECDSA P-256, written readable by their owner only.
//!
//! Nothing is overwritten: a command whose files exist already changes nothing and says so.

use std::fs::OpenOptions;
use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context as _, bail};
use clap::builder::{PossibleValuesParser, TypedValueParser};
use clap::{Args, Subcommand};
use mosaic_client::{Role, TlsFiles};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use time::{Duration, OffsetDateTime};

/// The CA's files in a certificate directory.
pub const CA_CERT: &str = "ca.pem";
const CA_KEY: &str = "ca.key";
/// How long the CA is valid, in days.
const CA_DAYS: i64 = 3650;
/// The names every node certificate is valid for, besides `--host`.
const LOCAL_NAMES: [&str; 3] = ["localhost", "127.0.0.1", "::1"];

/// Flags of `mosaic certs`.
#[derive(Args, Debug)]
pub struct CertsArgs {
    #[command(subcommand)]
    command: CertsCommand,
}

#[derive(Subcommand, Debug)]
enum CertsCommand {
    /// Makes a CA and a node, an admin and a client certificate in DIR (created if missing).
    Init {
        /// The directory.
        dir: PathBuf,
        /// A host name or IP address the node certificate is also valid for (repeat it).
        #[arg(long = "host")]
        hosts: Vec<String>,
        /// How long the certificates are valid, in days.
        #[arg(long, default_value_t = 365, value_parser = clap::value_parser!(u32).range(1..=36500))]
        days: u32,
    },
    /// Signs one more certificate with DIR's CA: DIR/NAME.pem and DIR/NAME.key.
    Issue {
        /// The directory holding ca.pem and ca.key.
        dir: PathBuf,
        /// What the certificate's owner may do.
        #[arg(long, value_parser = role_parser())]
        role: Role,
        /// The certificate's name (its common name, and the files' names).
        #[arg(long)]
        name: String,
        /// A host name or IP address a node certificate is valid for (repeat it; localhost,
        /// 127.0.0.1 and ::1 always are).
        #[arg(long = "host")]
        hosts: Vec<String>,
        /// How long the certificate is valid, in days.
        #[arg(long, default_value_t = 365, value_parser = clap::value_parser!(u32).range(1..=36500))]
        days: u32,
    },
}

/// The roles `--role` takes, by name.
fn role_parser() -> impl TypedValueParser<Value = Role> {
    PossibleValuesParser::new(Role::ALL.map(Role::name))
        .try_map(|name: String| Role::from_name(&name).ok_or("not a role"))
}

/// Runs `mosaic certs`.
pub fn run(args: CertsArgs) -> anyhow::Result<ExitCode> {
    match args.command {
        CertsCommand::Init { dir, hosts, days } => init(&dir, &hosts, days),
        CertsCommand::Issue { dir, role, name, hosts, days } => {
            let issuer = load_issuer(&dir)?;
            let written = issue(&dir, &issuer, role, &name, &hosts, days)?;
            eprintln!("certs: wrote {}", written.display());
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Makes the CA and the three role certificates in `dir`.
///
/// # Errors
/// When `dir` holds a CA already (nothing is changed), or a file cannot be written.
pub fn init(dir: &Path, hosts: &[String], days: u32) -> anyhow::Result<ExitCode> {
    if dir.join(CA_KEY).exists() || dir.join(CA_CERT).exists() {
        bail!(
            "{} holds a CA already; nothing changed (sign more certificates with `mosaic certs \
             issue`, or remove the directory to start over)",
            dir.display()
        );
    }
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    for role in Role::ALL {
        check_absent(dir, role.name())?;
    }
    let key = KeyPair::generate().context("cannot generate the CA's key")?;
    let mut params = CertificateParams::new(Vec::new()).context("CA parameters")?;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    // A name of its own: a certificate of another cluster's CA is then refused as from an
    // unknown issuer, not as a bad signature of this one.
    let made = OffsetDateTime::now_utc().unix_timestamp_nanos();
    params.distinguished_name.push(DnType::CommonName, format!("Mosaic CA {made:x}"));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    set_validity(&mut params, i64::from(days).max(CA_DAYS));
    let ca = params.self_signed(&key).context("cannot sign the CA certificate")?;
    write_new(&dir.join(CA_KEY), key.serialize_pem().as_bytes(), true)?;
    write_new(&dir.join(CA_CERT), ca.pem().as_bytes(), false)?;
    let issuer = Issuer::new(params, key);
    issue(dir, &issuer, Role::Node, Role::Node.name(), hosts, days)?;
    for role in [Role::Admin, Role::Client] {
        issue(dir, &issuer, role, role.name(), &[], days)?;
    }
    eprintln!(
        "certs: wrote a CA and node, admin and client certificates in {}; start every process \
         with --tls-ca {}/ca.pem and its own --tls-cert and --tls-key",
        dir.display(),
        dir.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// Signs a certificate of `role` named `name` with `issuer`; writes `dir/NAME.pem` and
/// `dir/NAME.key` and returns the certificate's path.
fn issue(
    dir: &Path,
    issuer: &Issuer<'_, KeyPair>,
    role: Role,
    name: &str,
    hosts: &[String],
    days: u32,
) -> anyhow::Result<PathBuf> {
    if name.is_empty() || name.contains(['/', '\\']) || name.starts_with('.') || name == "ca" {
        bail!("{name:?} cannot name a certificate: use letters, digits, '-' and '_'");
    }
    check_absent(dir, name)?;
    let names: Vec<String> = match role {
        Role::Node => {
            LOCAL_NAMES.iter().map(ToString::to_string).chain(hosts.iter().cloned()).collect()
        }
        Role::Admin | Role::Client if hosts.is_empty() => Vec::new(),
        Role::Admin | Role::Client => bail!("--host is for node certificates"),
    };
    let mut params = CertificateParams::new(names).context("a --host is not a valid name")?;
    params.distinguished_name.push(DnType::CommonName, name);
    params.distinguished_name.push(DnType::OrganizationalUnitName, role.name());
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = match role {
        Role::Node => {
            vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth]
        }
        Role::Admin | Role::Client => vec![ExtendedKeyUsagePurpose::ClientAuth],
    };
    params.use_authority_key_identifier_extension = true;
    set_validity(&mut params, i64::from(days));
    let key = KeyPair::generate().context("cannot generate a key")?;
    let certificate = params.signed_by(&key, issuer).context("cannot sign the certificate")?;
    let (cert_path, key_path) = paths(dir, name);
    write_new(&key_path, key.serialize_pem().as_bytes(), true)?;
    write_new(&cert_path, certificate.pem().as_bytes(), false)?;
    Ok(cert_path)
}

/// The CA of `dir`, to sign with.
fn load_issuer(dir: &Path) -> anyhow::Result<Issuer<'static, KeyPair>> {
    let read = |name: &str| {
        let path = dir.join(name);
        std::fs::read_to_string(&path).with_context(|| {
            format!("cannot read {} (make a CA with `mosaic certs init`)", path.display())
        })
    };
    let key = KeyPair::from_pem(&read(CA_KEY)?).context("ca.key holds no private key")?;
    Issuer::from_ca_cert_pem(&read(CA_CERT)?, key).context("ca.pem holds no CA certificate")
}

/// The certificate and key files of `name` in `dir`.
fn paths(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    (dir.join(format!("{name}.pem")), dir.join(format!("{name}.key")))
}

/// The TLS files of the certificate `name` made in `dir`, with `dir`'s CA.
#[must_use]
pub fn files(dir: &Path, name: &str) -> TlsFiles {
    let (cert, key) = paths(dir, name);
    TlsFiles { cert, key, ca: dir.join(CA_CERT) }
}

fn check_absent(dir: &Path, name: &str) -> anyhow::Result<()> {
    let (cert, key) = paths(dir, name);
    for path in [cert, key] {
        if path.exists() {
            bail!("{} exists already; nothing changed", path.display());
        }
    }
    Ok(())
}

/// Valid from an hour ago (clocks differ a little) for `days` days.
fn set_validity(params: &mut CertificateParams, days: i64) {
    let now = OffsetDateTime::now_utc();
    params.not_before = now - Duration::hours(1);
    params.not_after = now + Duration::days(days);
}

/// Writes a new file (never replacing one); a private key readable by its owner only.
fn write_new(path: &Path, bytes: &[u8], private: bool) -> anyhow::Result<()> {
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(if private { 0o600 } else { 0o644 })
        .open(path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    file.write_all(bytes).with_context(|| format!("cannot write {}", path.display()))?;
    file.sync_all().with_context(|| format!("cannot sync {}", path.display()))
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use mosaic_client::Tls;

    use super::*;

    #[test]
    fn init_makes_a_ca_and_a_loadable_identity_per_role_and_never_overwrites() {
        let dir = tempfile::tempdir().unwrap();
        let certs = dir.path().join("certs");
        init(&certs, &["node-1.example".to_string()], 30).unwrap();
        for role in ["node", "admin", "client"] {
            Tls::load(&files(&certs, role)).unwrap();
            let mode = std::fs::metadata(certs.join(format!("{role}.key"))).unwrap().permissions();
            assert_eq!(mode.mode() & 0o777, 0o600, "{role}.key");
        }
        let before = std::fs::read(certs.join(CA_KEY)).unwrap();
        let again = init(&certs, &[], 30).unwrap_err();
        assert!(again.to_string().contains("nothing changed"), "{again}");
        assert_eq!(std::fs::read(certs.join(CA_KEY)).unwrap(), before);

        let issuer = load_issuer(&certs).unwrap();
        issue(&certs, &issuer, Role::Node, "node-2", &["10.0.0.2".to_string()], 30).unwrap();
        Tls::load(&files(&certs, "node-2")).unwrap();
        let twice = issue(&certs, &issuer, Role::Node, "node-2", &[], 30).unwrap_err();
        assert!(twice.to_string().contains("exists already"), "{twice}");
        let host = issue(&certs, &issuer, Role::Client, "app", &["h".to_string()], 30);
        assert!(host.unwrap_err().to_string().contains("--host is for node"));
        for bad in ["", "../x", ".hidden", "ca"] {
            assert!(issue(&certs, &issuer, Role::Client, bad, &[], 30).is_err(), "{bad:?}");
        }
    }
}
