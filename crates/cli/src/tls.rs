//! The TLS flags every command that serves or connects takes (docs/security.md): with all
//! three, every connection the process makes or accepts is mutual TLS; with none, plaintext.

use std::path::{Path, PathBuf};

use clap::Args;
use mosaic_client::{Tls, TlsFiles};

/// `--tls-cert`, `--tls-key`, `--tls-ca`: all three or none.
#[derive(Args, Clone, Debug, Default, PartialEq, Eq)]
pub struct TlsArgs {
    /// This process's certificate (PEM), signed by --tls-ca; with --tls-key and --tls-ca every
    /// connection is mutual TLS.
    #[arg(long, requires_all = ["tls_key", "tls_ca"])]
    pub tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert (PEM).
    #[arg(long, requires_all = ["tls_cert", "tls_ca"])]
    pub tls_key: Option<PathBuf>,
    /// The certificate of the CA that signs the cluster's certificates (PEM).
    #[arg(long, requires_all = ["tls_cert", "tls_key"])]
    pub tls_ca: Option<PathBuf>,
}

impl TlsArgs {
    /// The files the flags name; `None` without them.
    #[must_use]
    pub fn files(&self) -> Option<TlsFiles> {
        match (&self.tls_cert, &self.tls_key, &self.tls_ca) {
            (Some(cert), Some(key), Some(ca)) => {
                Some(TlsFiles { cert: cert.clone(), key: key.clone(), ca: ca.clone() })
            }
            // clap requires all three together.
            _ => None,
        }
    }

    /// The flags of the certificate `name` made by `mosaic certs` in `dir`.
    #[must_use]
    pub fn in_dir(dir: &Path, name: &str) -> Self {
        let TlsFiles { cert, key, ca } = crate::certs::files(dir, name);
        Self { tls_cert: Some(cert), tls_key: Some(key), tls_ca: Some(ca) }
    }

    /// The command-line flags that give these files (none without them).
    #[must_use]
    pub fn flags(&self) -> Vec<String> {
        let Some(files) = self.files() else { return Vec::new() };
        [("--tls-cert", &files.cert), ("--tls-key", &files.key), ("--tls-ca", &files.ca)]
            .into_iter()
            .flat_map(|(flag, path)| [flag.to_string(), path.display().to_string()])
            .collect()
    }

    /// The identity the flags name, read and checked; `None` without them.
    ///
    /// # Errors
    /// The file that cannot be used, and why.
    pub fn load(&self) -> anyhow::Result<Option<Tls>> {
        Ok(self.files().map(|files| Tls::load(&files)).transpose()?)
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser, Debug)]
    struct TestCli {
        #[command(flatten)]
        tls: TlsArgs,
    }

    #[test]
    fn the_three_flags_come_together_or_not_at_all() {
        let none = TestCli::try_parse_from(["t"]).unwrap();
        assert_eq!(none.tls.files(), None);
        let all = ["t", "--tls-cert", "c", "--tls-key", "k", "--tls-ca", "a"];
        let files = TestCli::try_parse_from(all).unwrap().tls.files().unwrap();
        assert_eq!(files, TlsFiles { cert: "c".into(), key: "k".into(), ca: "a".into() });
        for partial in [&all[..3], &all[..5], &["t", "--tls-ca", "a"][..]] {
            assert!(TestCli::try_parse_from(partial).is_err(), "{partial:?}");
        }
        let flags = TlsArgs::in_dir(Path::new("certs"), "node").flags();
        let parsed =
            TestCli::try_parse_from(["t"].into_iter().chain(flags.iter().map(String::as_str)));
        assert_eq!(parsed.unwrap().tls, TlsArgs::in_dir(Path::new("certs"), "node"));
        assert!(TlsArgs::default().flags().is_empty());
    }
}
