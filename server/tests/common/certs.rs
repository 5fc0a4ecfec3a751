//! Certificates for the TLS tests of the bus and the store, made in the
//! test with rcgen: a CA, a server certificate it signs for 127.0.0.1 (an
//! IP address name, never "localhost"), a client certificate, and a second
//! CA that signed none of them. Written as PEM files into a directory of
//! the caller's; keys are mode 0600.
#![allow(dead_code)]

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};

pub struct Pki {
    /// The CA that signed the server's and the client's certificates.
    pub ca: PathBuf,
    /// A CA that signed nothing here.
    pub other_ca: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
}

fn ca(name: &str) -> CertifiedIssuer<'static, KeyPair> {
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.distinguished_name.push(DnType::CommonName, name);
    p.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    CertifiedIssuer::self_signed(p, KeyPair::generate().unwrap()).unwrap()
}

fn write(path: &Path, text: &str, mode: u32) {
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// Make the files in `dir` (which must exist).
pub fn make(dir: &Path) -> Pki {
    let ca1 = ca("chinwag test CA");
    let ca2 = ca("some other CA");
    let leaf = |names: Vec<String>, usage: ExtendedKeyUsagePurpose, cn: &str| {
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::new(names).unwrap();
        p.distinguished_name.push(DnType::CommonName, cn);
        p.extended_key_usages = vec![usage];
        let cert = p.signed_by(&key, &ca1).unwrap();
        (cert.pem(), key.serialize_pem())
    };
    let (server_cert, server_key) = leaf(
        vec!["127.0.0.1".into()],
        ExtendedKeyUsagePurpose::ServerAuth,
        "127.0.0.1",
    );
    let (client_cert, client_key) = leaf(
        vec!["node-a".into()],
        ExtendedKeyUsagePurpose::ClientAuth,
        "node-a",
    );
    let pki = Pki {
        ca: dir.join("ca.pem"),
        other_ca: dir.join("other-ca.pem"),
        server_cert: dir.join("server.pem"),
        server_key: dir.join("server.key"),
        client_cert: dir.join("client.pem"),
        client_key: dir.join("client.key"),
    };
    write(&pki.ca, &ca1.pem(), 0o644);
    write(&pki.other_ca, &ca2.pem(), 0o644);
    write(&pki.server_cert, &server_cert, 0o644);
    write(&pki.server_key, &server_key, 0o600);
    write(&pki.client_cert, &client_cert, 0o644);
    write(&pki.client_key, &client_key, 0o600);
    pki
}
