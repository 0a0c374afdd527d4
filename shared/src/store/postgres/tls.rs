//! TLS to the server, asked for in the URL with libpq's own parameters: `sslmode=require`,
//! `verify-ca` or `verify-full` encrypt every connection and verify the server's certificate
//! (its chain and its name) against the certificates in `sslrootcert` (a PEM file) or, without
//! one, the system's roots; `disable`, `allow` and `prefer` (libpq's default) connect over
//! plain TCP. Verification is never skipped: where libpq's `require` without a root file takes
//! any certificate, Tasker refuses one it cannot verify, saying why.

use std::sync::Arc;

use percent_encoding::percent_decode_str;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use tokio_postgres::config::SslMode;
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::store::StoreError;

/// Where to connect and how: tokio-postgres' settings and the TLS connector they use.
pub(crate) struct Target {
    /// Everything the URL says but its TLS parameters, with `sslmode` as asked.
    pub config: tokio_postgres::Config,
    /// Used only when `config` asks for TLS.
    pub tls: MakeRustlsConnect,
}

/// The connection settings of `url` (`postgres://…` or `key=value` pairs).
pub(crate) fn target(url: &str) -> Result<Target, StoreError> {
    let (rest, asked) = split_tls(url);
    let mut config: tokio_postgres::Config = rest.parse().map_err(|err| {
        StoreError::backend_from(
            "TASKER_DATABASE_URL is not a PostgreSQL connection URL",
            err,
        )
    })?;
    let roots = if asked.encrypt {
        config.ssl_mode(SslMode::Require);
        roots(asked.root_file.as_deref())?
    } else {
        config.ssl_mode(SslMode::Disable);
        rustls::RootCertStore::empty()
    };
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let client = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|err| StoreError::backend_from("setting up TLS for PostgreSQL", err))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Target {
        config,
        tls: MakeRustlsConnect::new(client),
    })
}

/// What a URL's TLS parameters ask for.
#[derive(Debug, Default, PartialEq, Eq)]
struct Asked {
    encrypt: bool,
    root_file: Option<String>,
}

/// Takes `sslmode` and `sslrootcert` out of `url` (tokio-postgres knows neither `verify-ca`,
/// `verify-full` nor a root file): the rest of the URL, and what they asked.
fn split_tls(url: &str) -> (String, Asked) {
    let mut asked = Asked::default();
    let is_url = url.starts_with("postgres://") || url.starts_with("postgresql://");
    if is_url {
        let Some((base, query)) = url.split_once('?') else {
            return (url.to_owned(), asked);
        };
        let kept: Vec<&str> = query
            .split('&')
            .filter(|pair| {
                let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
                !take(
                    &mut asked,
                    key,
                    &percent_decode_str(value).decode_utf8_lossy(),
                )
            })
            .collect();
        let rest = if kept.is_empty() {
            base.to_owned()
        } else {
            format!("{base}?{}", kept.join("&"))
        };
        (rest, asked)
    } else {
        let kept: Vec<&str> = url
            .split_whitespace()
            .filter(|pair| {
                let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
                !take(&mut asked, key, value.trim_matches('\''))
            })
            .collect();
        (kept.join(" "), asked)
    }
}

/// Records a TLS parameter in `asked`; whether `key` was one.
fn take(asked: &mut Asked, key: &str, value: &str) -> bool {
    match key {
        "sslmode" => {
            asked.encrypt = matches!(value, "require" | "verify-ca" | "verify-full");
            true
        }
        "sslrootcert" => {
            asked.root_file = Some(value.to_owned());
            true
        }
        _ => false,
    }
}

/// The certificates a server's chain must end in: those of `file`, or the system's.
fn roots(file: Option<&str>) -> Result<rustls::RootCertStore, StoreError> {
    let mut roots = rustls::RootCertStore::empty();
    match file {
        Some(path) => {
            let read = |err: rustls::pki_types::pem::Error| {
                StoreError::backend_from(format!("reading sslrootcert {path}"), err)
            };
            let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
                .map_err(read)?
                .collect::<Result<_, _>>()
                .map_err(read)?;
            for cert in certs {
                roots.add(cert).map_err(|err| {
                    StoreError::backend_from(format!("a certificate of sslrootcert {path}"), err)
                })?;
            }
            if roots.is_empty() {
                return Err(StoreError::backend(format!(
                    "sslrootcert {path} holds no certificate"
                )));
            }
        }
        None => {
            // Certificates the platform lists but rustls cannot use are left out, as
            // browsers do; none at all is an error.
            for cert in rustls_native_certs::load_native_certs().certs {
                let _ = roots.add(cert);
            }
            if roots.is_empty() {
                return Err(StoreError::backend(
                    "sslmode asks for TLS, but the system has no root certificates: name \
                     the server's in sslrootcert",
                ));
            }
        }
    }
    Ok(roots)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_parameters_leave_a_url_and_say_what_they_asked() {
        let (rest, asked) = split_tls(
            "postgres://app@db:5432/app?sslmode=verify-full&sslrootcert=%2Fetc%2Fca.pem&application_name=x",
        );
        assert_eq!(rest, "postgres://app@db:5432/app?application_name=x");
        let expected = Asked {
            encrypt: true,
            root_file: Some("/etc/ca.pem".to_owned()),
        };
        assert_eq!(asked, expected);

        let (rest, asked) = split_tls("postgres://app@db/app?sslmode=prefer");
        assert_eq!(rest, "postgres://app@db/app");
        assert!(!asked.encrypt);

        let (rest, asked) = split_tls("host=db user=app sslmode=require sslrootcert='/etc/ca.pem'");
        assert_eq!(rest, "host=db user=app");
        assert_eq!(asked.root_file.as_deref(), Some("/etc/ca.pem"));
        assert!(asked.encrypt);
    }

    #[test]
    fn without_tls_asked_connections_are_plain_and_with_it_required() {
        let plain = target("postgres://app@db/app").expect("a target");
        assert_eq!(plain.config.get_ssl_mode(), SslMode::Disable);
        let Err(missing) = target("postgres://app@db/app?sslmode=require&sslrootcert=/nowhere.pem")
        else {
            panic!("no such file, but a target");
        };
        assert!(missing.to_string().contains("/nowhere.pem"), "{missing}");
    }
}
