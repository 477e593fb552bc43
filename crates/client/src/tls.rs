//! Mutual TLS for every connection of a cluster (docs/security.md): a process loads its
//! certificate, its private key and the cluster's CA certificate once ([`Tls::load`]), and
//! every channel it opens and every port it serves uses them. A connection is made only when
//! both sides present a certificate the other's CA signed; the client also checks that the
//! server's certificate names the host it dialled.
//!
//! The files are PEM. They are read and checked when the process starts, so a missing file, a
//! key that is not a key or a certificate file without a certificate is an error at start, not
//! a failed handshake later.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tonic::transport::{Certificate, ClientTlsConfig, Identity};

/// What a certificate's owner may do in a cluster: the certificate's organizational unit (OU),
/// written by `mosaic certs` and read by every node that authorizes a request
/// (docs/security.md "Authorization").
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    /// A storage node or controller replica: serves, sends Raft traffic, pulls shards,
    /// registers with the controller.
    Node,
    /// An operator: changes the configuration and the groups' members, reads and writes keys.
    Admin,
    /// An application: reads and writes keys, reads the configuration.
    Client,
}

impl Role {
    /// Every role.
    pub const ALL: [Self; 3] = [Self::Node, Self::Admin, Self::Client];

    /// The role's name, as the certificate's OU carries it.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Self::Node => "node",
            Self::Admin => "admin",
            Self::Client => "client",
        }
    }

    /// The role an OU names, if it names one.
    #[must_use]
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|role| role.name() == name)
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Where a process's TLS identity and the CA it trusts are.
#[derive(Clone, Debug, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsFiles {
    /// The process's certificate chain (PEM), its own certificate first.
    pub cert: PathBuf,
    /// The private key of that certificate (PEM: PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// The certificate of the CA that signs every certificate of the cluster (PEM).
    pub ca: PathBuf,
}

/// Why TLS files cannot be used.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{what} {}: {reason}", path.display())]
pub struct TlsError {
    /// Which file: "certificate", "private key" or "CA certificate".
    pub what: &'static str,
    /// The file.
    pub path: PathBuf,
    /// What is wrong with it.
    pub reason: String,
}

/// A process's TLS identity and the CA it trusts, loaded and checked.
#[derive(Clone)]
pub struct Tls {
    identity: Identity,
    ca: Certificate,
    files: TlsFiles,
    /// The same, parsed, for a server's own TLS acceptor.
    chain: Vec<CertificateDer<'static>>,
    key: Arc<PrivateKeyDer<'static>>,
    ca_chain: Vec<CertificateDer<'static>>,
}

/// Two loads of the same files are the same identity.
impl PartialEq for Tls {
    fn eq(&self, other: &Self) -> bool {
        self.files == other.files
    }
}

impl Eq for Tls {}

impl fmt::Debug for Tls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tls").field("files", &self.files).finish_non_exhaustive()
    }
}

impl Tls {
    /// Reads and checks the three files.
    ///
    /// # Errors
    /// [`TlsError`] naming the file that cannot be read, or holds no certificate (or no
    /// private key).
    pub fn load(files: &TlsFiles) -> Result<Self, TlsError> {
        let (cert, chain) = read_certificates(&files.cert, "certificate")?;
        let key = std::fs::read(&files.key).map_err(|error| TlsError {
            what: "private key",
            path: files.key.clone(),
            reason: error.to_string(),
        })?;
        let parsed = PrivateKeyDer::from_pem_slice(&key).map_err(|error| TlsError {
            what: "private key",
            path: files.key.clone(),
            reason: format!("no PEM private key in it ({error})"),
        })?;
        let (ca, ca_chain) = read_certificates(&files.ca, "CA certificate")?;
        Ok(Self {
            identity: Identity::from_pem(cert, key),
            ca: Certificate::from_pem(ca),
            files: files.clone(),
            chain,
            key: Arc::new(parsed),
            ca_chain,
        })
    }

    /// The files it was loaded from.
    #[must_use]
    pub fn files(&self) -> &TlsFiles {
        &self.files
    }

    /// The configuration of a channel to a server: present this identity, accept only a
    /// server certificate signed by the CA.
    #[must_use]
    pub fn client_config(&self) -> ClientTlsConfig {
        ClientTlsConfig::new().identity(self.identity.clone()).ca_certificate(self.ca.clone())
    }

    /// The process's certificate chain, its own certificate first.
    #[must_use]
    pub fn certificate_chain(&self) -> &[CertificateDer<'static>] {
        &self.chain
    }

    /// The private key of the certificate.
    #[must_use]
    pub fn private_key(&self) -> PrivateKeyDer<'static> {
        self.key.clone_key()
    }

    /// The CA's certificates.
    #[must_use]
    pub fn ca_certificates(&self) -> &[CertificateDer<'static>] {
        &self.ca_chain
    }
}

/// Reads a PEM file that must hold at least one certificate; returns its bytes and the
/// certificates.
fn read_certificates(
    path: &Path,
    what: &'static str,
) -> Result<(Vec<u8>, Vec<CertificateDer<'static>>), TlsError> {
    let error = |reason: String| TlsError { what, path: path.to_path_buf(), reason };
    let bytes = std::fs::read(path).map_err(|io| error(io.to_string()))?;
    let certificates = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|pem| error(format!("not a PEM certificate file ({pem})")))?;
    if certificates.is_empty() {
        return Err(error("no PEM certificate in it".to_string()));
    }
    Ok((bytes, certificates))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A CA and a certificate it signs, in `dir`: `ca.pem`, `node.pem`, `node.key`.
    fn write_identity(dir: &Path) -> TlsFiles {
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca_params = rcgen::CertificateParams::new(Vec::new()).unwrap();
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca = ca_params.self_signed(&ca_key).unwrap();
        let issuer = rcgen::Issuer::new(ca_params, ca_key);
        let key = rcgen::KeyPair::generate().unwrap();
        let params = rcgen::CertificateParams::new(vec!["localhost".to_string()]).unwrap();
        let cert = params.signed_by(&key, &issuer).unwrap();
        let files = TlsFiles {
            cert: dir.join("node.pem"),
            key: dir.join("node.key"),
            ca: dir.join("ca.pem"),
        };
        std::fs::write(&files.cert, cert.pem()).unwrap();
        std::fs::write(&files.key, key.serialize_pem()).unwrap();
        std::fs::write(&files.ca, ca.pem()).unwrap();
        files
    }

    #[test]
    fn an_identity_signed_by_its_ca_loads() {
        let dir = tempfile::tempdir().unwrap();
        let files = write_identity(dir.path());
        let tls = Tls::load(&files).unwrap();
        assert_eq!(tls.files(), &files);
        assert_eq!(tls, Tls::load(&files).unwrap());
    }

    #[test]
    fn files_without_a_certificate_or_a_key_are_refused_at_load_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let good = write_identity(dir.path());
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "").unwrap();
        let junk = dir.path().join("junk.pem");
        std::fs::write(&junk, "-----BEGIN CERTIFICATE-----\n!!\n").unwrap();
        let missing = dir.path().join("missing.pem");
        for (files, what, path) in [
            (TlsFiles { cert: empty.clone(), ..good.clone() }, "certificate", &empty),
            (TlsFiles { cert: junk.clone(), ..good.clone() }, "certificate", &junk),
            (TlsFiles { cert: missing.clone(), ..good.clone() }, "certificate", &missing),
            // A certificate where the key should be.
            (TlsFiles { key: good.cert.clone(), ..good.clone() }, "private key", &good.cert),
            (TlsFiles { key: missing.clone(), ..good.clone() }, "private key", &missing),
            (TlsFiles { ca: empty.clone(), ..good.clone() }, "CA certificate", &empty),
        ] {
            let error = Tls::load(&files).unwrap_err();
            assert_eq!((error.what, &error.path), (what, path), "{error}");
            assert!(error.to_string().contains(&path.display().to_string()), "{error}");
        }
    }
}
