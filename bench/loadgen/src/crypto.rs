//! `portico-loadgen crypto`: the public-key operations of a handshake, per
//! second on one core, through each rustls crypto provider the workspace
//! can use (ring, aws-lc-rs) — what choosing a provider by figures needs.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context};
use clap::Args;
use rustls::crypto::CryptoProvider;
use rustls::{NamedGroup, SignatureScheme};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

#[derive(Args)]
pub(crate) struct CryptoArgs {
    /// The certificate whose key signs (RSA or ECDSA P-256), PEM
    #[arg(long)]
    cert: PathBuf,
    /// Its private key, PEM
    #[arg(long)]
    key: PathBuf,
    /// Seconds per operation and provider
    #[arg(long, default_value_t = 1.0)]
    seconds: f64,
}

/// The schemes a TLS 1.3 handshake signs with, in rustls's order.
const SCHEMES: [SignatureScheme; 2] = [
    SignatureScheme::ECDSA_NISTP256_SHA256,
    SignatureScheme::RSA_PSS_SHA256,
];

/// How many times `op` runs in `window`, per second.
fn rate(window: Duration, mut op: impl FnMut() -> anyhow::Result<()>) -> anyhow::Result<f64> {
    for _ in 0..20 {
        op()?;
    }
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed() < window {
        op()?;
        n += 1;
    }
    Ok(n as f64 / start.elapsed().as_secs_f64())
}

fn measure(
    provider: &CryptoProvider,
    cert: &CertificateDer<'static>,
    key: &PrivateKeyDer<'static>,
    window: Duration,
) -> anyhow::Result<String> {
    let signing = provider
        .key_provider
        .load_private_key(key.clone_key())
        .map_err(|e| anyhow!("the key: {e}"))?;
    let signer = signing
        .choose_scheme(&SCHEMES)
        .context("the key signs none of ECDSA P-256 SHA-256, RSA-PSS SHA-256")?;
    let scheme = signer.scheme();
    let message = [0x5a_u8; 130];
    let sign = rate(window, || {
        signer.sign(&message).map(drop).map_err(|e| anyhow!("{e}"))
    })?;
    let signature = signer.sign(&message).map_err(|e| anyhow!("{e}"))?;
    let algorithm = provider
        .signature_verification_algorithms
        .mapping
        .iter()
        .find(|(s, _)| *s == scheme)
        .and_then(|(_, algorithms)| algorithms.first())
        .context("the provider verifies no such signature")?;
    // As a handshake does: the certificate parsed, the signature checked.
    let verify = rate(window, || {
        let end_entity = webpki::EndEntityCert::try_from(cert).map_err(|e| anyhow!("{e}"))?;
        end_entity
            .verify_signature(*algorithm, &message, &signature)
            .map_err(|e| anyhow!("{e}"))
    })?;
    let x25519 = provider
        .kx_groups
        .iter()
        .find(|g| g.name() == NamedGroup::X25519)
        .context("no X25519")?;
    let peer = x25519.start().map_err(|e| anyhow!("{e}"))?;
    let peer_key = peer.pub_key().to_vec();
    // One exchange: a key pair made, the shared secret computed.
    let exchange = rate(window, || {
        let ours = x25519.start().map_err(|e| anyhow!("{e}"))?;
        ours.complete(&peer_key)
            .map(drop)
            .map_err(|e| anyhow!("{e}"))
    })?;
    Ok(format!(
        "{{\"scheme\": \"{scheme:?}\", \"sign_per_s\": {sign:.0}, \"verify_per_s\": {verify:.0}, \"x25519_exchange_per_s\": {exchange:.0}}}"
    ))
}

pub(crate) fn run(args: &CryptoArgs) -> anyhow::Result<String> {
    let cert = CertificateDer::from_pem_file(&args.cert)
        .with_context(|| format!("{}", args.cert.display()))?;
    let key = PrivateKeyDer::from_pem_file(&args.key)
        .with_context(|| format!("{}", args.key.display()))?;
    let window = Duration::from_secs_f64(args.seconds.max(0.1));
    let providers = [
        ("ring", rustls::crypto::ring::default_provider()),
        ("aws-lc-rs", rustls::crypto::aws_lc_rs::default_provider()),
    ];
    let mut figures = Vec::new();
    for (name, provider) in &providers {
        let measured = measure(provider, &cert, &key, window)?;
        figures.push(format!("\"{name}\": {measured}"));
    }
    Ok(format!("{{{}}}", figures.join(", ")))
}
