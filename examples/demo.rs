//! Two providers exchange one PEC message through the protocol core, each signing with its
//! own key on a PKCS#11 token (SoftHSM2), each verifying the other's messages against a
//! provider index that holds both. Run by `scripts/demo.sh`, which prepares the tokens.
//!
//! Provider A (`pec.example.it`) accepts Alice's message, issues the acceptance receipt and
//! the transport envelope; provider B (`pec.example.net`) verifies the envelope, takes it in
//! charge and issues the delivery receipt; A verifies both receipts. Every message is
//! written to `--out` as an `.eml` file.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use pec::crypto::{DigestAlg, Pkcs11Config, Pkcs11Signer, Signer};
use pec::index::{ProviderInfo, TrustSet};
use pec::message::build::{Builder, Certification, Generated, Issuer, OriginalInfo};
use pec::message::classify::{classify, Classification};
use pec::message::ids::IdGenerator;
use pec::message::kind::RecipientType;
use pec::message::time::{Clock, SystemClock};

#[derive(Parser)]
struct Args {
    /// Where to write the messages.
    #[arg(long)]
    out: PathBuf,
    /// The message Alice submits.
    #[arg(long)]
    original: PathBuf,
    /// Provider A's certificate (PEM), also in token `pec-a` with its key under label `signer`.
    #[arg(long)]
    cert_a: PathBuf,
    /// Provider B's certificate (PEM), in token `pec-b`.
    #[arg(long)]
    cert_b: PathBuf,
    /// PKCS#11 module.
    #[arg(long, default_value = "/usr/lib/softhsm/libsofthsm2.so")]
    module: PathBuf,
    /// User PIN of both tokens.
    #[arg(long, default_value = "1234", env = "PEC_DEMO_PIN")]
    pin: String,
}

struct Provider {
    issuer: Issuer,
    signer: Pkcs11Signer,
    ids: IdGenerator,
    record: ProviderInfo,
}

impl Provider {
    fn open(args: &Args, token: &str, name: &str, domain: &str) -> Result<Self, String> {
        let mut cfg = Pkcs11Config::new(&args.module, token, "signer", &args.pin);
        cfg.digest = DigestAlg::Sha256;
        let signer = Pkcs11Signer::open(&cfg).map_err(|e| e.to_string())?;
        Ok(Provider {
            issuer: Issuer {
                provider_name: name.into(),
                service_address: format!("posta-certificata@{domain}"),
                envelope_sender_header: true,
            },
            signer,
            ids: IdGenerator::new(domain, 1),
            record: ProviderInfo {
                name: name.into(),
                mail_receipt: format!("ricevute@{domain}"),
                managed_domains: vec![domain.into()],
            },
        })
    }

    fn builder(&self) -> Builder<'_> {
        Builder {
            issuer: &self.issuer,
            signer: &self.signer,
            ids: &self.ids,
        }
    }
}

fn save(out: &std::path::Path, name: &str, g: &Generated) -> Result<Vec<u8>, String> {
    let bytes = g.to_bytes();
    let path = out.join(name);
    std::fs::write(&path, &bytes).map_err(|e| format!("{}: {e}", path.display()))?;
    println!(
        "  wrote {:<32} {:<28} from {} to {}",
        name,
        g.kind.log_label(),
        g.mail_from,
        g.rcpt_to.join(", ")
    );
    Ok(bytes)
}

fn run(args: Args) -> Result<(), String> {
    std::fs::create_dir_all(&args.out).map_err(|e| e.to_string())?;
    let a = Provider::open(&args, "pec-a", "PEC Example IT S.p.A.", "pec.example.it")?;
    let b = Provider::open(&args, "pec-b", "PEC Example NET S.p.A.", "pec.example.net")?;
    let mut index = TrustSet::new();
    index.add(a.signer.certificate_der().to_vec(), Some(a.record.clone()));
    index.add(b.signer.certificate_der().to_vec(), Some(b.record.clone()));
    let clock = SystemClock;

    // Provider A, access point: Alice submits; every recipient is classified by the index.
    let original = std::fs::read(&args.original).map_err(|e| e.to_string())?;
    let info = OriginalInfo::parse(&original).map_err(|e| e.to_string())?;
    let certified = |addr: &str| {
        let domain = addr.rsplit('@').next().unwrap_or_default();
        if a.record.manages(domain) || b.record.manages(domain) {
            RecipientType::Certificato
        } else {
            RecipientType::Esterno
        }
    };
    let rcpt: Vec<(String, RecipientType)> = info
        .to
        .iter()
        .chain(&info.cc)
        .map(|r| (r.clone(), certified(r)))
        .collect();
    let at = clock.now();
    let pec_id = a.ids.next(at);
    let cert = Certification::for_submission(&info, "alice@pec.example.it", &rcpt, &pec_id);
    println!("provider A accepts the message from alice@pec.example.it as {pec_id}");
    let envelope = a
        .builder()
        .transport_envelope(&original, &cert, at)
        .map_err(|e| e.to_string())?;
    let acceptance = a
        .builder()
        .acceptance(&cert, at)
        .map_err(|e| e.to_string())?;
    let envelope_bytes = save(&args.out, "1-busta-trasporto.eml", &envelope)?;
    save(&args.out, "2-ricevuta-accettazione.eml", &acceptance)?;

    // Provider B, reception and delivery points: verify, take in charge, deliver.
    let at = clock.now();
    let m = match classify(&envelope_bytes, &index, at) {
        Classification::TransportEnvelope(m) => m,
        other => return Err(format!("provider B: the envelope is not valid: {other:?}")),
    };
    let sender_provider = m
        .verified
        .provider
        .clone()
        .ok_or("provider B: signer has no provider record")?;
    println!(
        "provider B verifies the envelope: signed by {} ({})",
        sender_provider.name, m.verified.signer_sha1
    );
    let (b_cert, carried) = Certification::from_verified_envelope(&m.daticert, &m.verified.content)
        .ok_or("provider B: envelope without postacert.eml")?;
    let local: Vec<String> = b_cert
        .destinatari
        .iter()
        .filter(|d| {
            b.record
                .manages(d.address.rsplit('@').next().unwrap_or_default())
        })
        .map(|d| d.address.clone())
        .collect();
    let take_charge = b
        .builder()
        .take_charge(&b_cert, at, &local, &sender_provider.mail_receipt)
        .map_err(|e| e.to_string())?;
    let mut receipts = vec![save(&args.out, "3-presa-in-carico.eml", &take_charge)?];
    for (i, r) in local.iter().enumerate() {
        let at = clock.now();
        let delivery = b
            .builder()
            .delivery(&b_cert, at, r, &carried)
            .map_err(|e| e.to_string())?;
        receipts.push(save(
            &args.out,
            &format!("{}-consegna-{r}.eml", 4 + i),
            &delivery,
        )?);
    }

    // Provider A verifies what came back.
    for bytes in &receipts {
        match classify(bytes, &index, clock.now()) {
            Classification::Receipt(kind, m) => println!(
                "provider A verifies a receipt from {}: {} for {} ({})",
                m.verified
                    .provider
                    .as_ref()
                    .map(|p| p.name.as_str())
                    .unwrap_or("?"),
                kind.as_str(),
                m.daticert.identificativo,
                m.daticert
                    .consegna
                    .clone()
                    .unwrap_or_else(|| m.daticert.ricezione.join(", "))
            ),
            other => return Err(format!("provider A: receipt not valid: {other:?}")),
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    match run(Args::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("demo: {e}");
            ExitCode::FAILURE
        }
    }
}
