//! What the quic crate's test files share.

/// Loads a fresh self-signed certificate for `localhost` into `config` (the server
/// side), written to `dir`.
pub(crate) fn load_self_signed(config: &mut quiche::Config, dir: &std::path::Path) {
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()]).expect("cert");
    let (crt, key) = (dir.join("c.pem"), dir.join("k.pem"));
    std::fs::write(&crt, cert.cert.pem()).expect("write cert");
    std::fs::write(&key, cert.key_pair.serialize_pem()).expect("write key");
    config
        .load_cert_chain_from_pem_file(crt.to_str().expect("path"))
        .expect("chain");
    config
        .load_priv_key_from_pem_file(key.to_str().expect("path"))
        .expect("key");
}
