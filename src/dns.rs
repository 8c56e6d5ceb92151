// SPDX-License-Identifier: GPL-3.0-or-later
//! The DNS as an outside system: the real resolver behind [`crate::rem::dns::MxLookup`]
//! (`hickory-resolver`, on the system's `/etc/resolv.conf` or on one configured server).
//! NXDOMAIN and NODATA are answers; SERVFAIL, REFUSED, time-outs, an unreachable server and
//! malformed replies are temporary failures. The routing decision itself is pure and lives
//! in `rem::dns`.

use std::net::SocketAddr;
use std::time::Duration;

use hickory_resolver::config::{ConnectionConfig, NameServerConfig, ResolverConfig, ResolverOpts};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::net::{DnsError as HickoryDnsError, NetError};
use hickory_resolver::proto::op::ResponseCode;
use hickory_resolver::proto::rr::RData;
use hickory_resolver::TokioResolver;

use crate::rem::dns::{normalize_host, DnsError, MxAnswer, MxHost, MxLookup};
use crate::BoxFuture;

/// The real DNS through `hickory-resolver`: the system's resolver configuration
/// (`/etc/resolv.conf`) or one given server.
pub struct DnsResolver {
    resolver: TokioResolver,
}

impl std::fmt::Debug for DnsResolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DnsResolver").finish_non_exhaustive()
    }
}

/// How long one query may take, and how many times it is sent, by default.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);
pub const DEFAULT_ATTEMPTS: usize = 2;

impl DnsResolver {
    /// The resolvers of `/etc/resolv.conf` (its timeout and attempts options apply).
    pub fn system() -> Result<Self, DnsError> {
        let mut builder = TokioResolver::builder_tokio().map_err(|e| {
            DnsError::Setup(format!(
                "cannot read the system resolver configuration: {e}"
            ))
        })?;
        // Answers name what we check: no caching across calls beyond the TTLs, no search
        // list (names are looked up fully qualified).
        builder.options_mut().ndots = 0;
        let resolver = builder
            .build()
            .map_err(|e| DnsError::Setup(e.to_string()))?;
        Ok(DnsResolver { resolver })
    }

    /// One recursive (or authoritative) server at `server`, over UDP and TCP, each query
    /// within `timeout`, sent `attempts` times at most.
    pub fn at(server: SocketAddr, timeout: Duration, attempts: usize) -> Result<Self, DnsError> {
        let mut udp = ConnectionConfig::udp();
        udp.port = server.port();
        let mut tcp = ConnectionConfig::tcp();
        tcp.port = server.port();
        let ns = NameServerConfig::new(server.ip(), true, vec![udp, tcp]);
        let config = ResolverConfig::from_parts(None, vec![], vec![ns]);
        let mut options = ResolverOpts::default();
        options.timeout = timeout;
        options.attempts = attempts.max(1);
        options.ndots = 0;
        let resolver = TokioResolver::builder_with_config(config, TokioRuntimeProvider::default())
            .with_options(options)
            .build()
            .map_err(|e| DnsError::Setup(format!("{server}: {e}")))?;
        Ok(DnsResolver { resolver })
    }

    async fn lookup(&self, domain: &str) -> Result<MxAnswer, DnsError> {
        let ascii = normalize_host(domain).map_err(|reason| DnsError::InvalidDomain {
            domain: domain.to_string(),
            reason,
        })?;
        if ascii.is_empty() {
            return Err(DnsError::InvalidDomain {
                domain: domain.to_string(),
                reason: "empty".into(),
            });
        }
        let fqdn = format!("{ascii}.");
        match self.resolver.mx_lookup(fqdn.as_str()).await {
            Ok(lookup) => {
                let hosts: Vec<MxHost> = lookup
                    .answers()
                    .iter()
                    .filter_map(|r| match &r.data {
                        RData::MX(mx) => Some(MxHost {
                            preference: mx.preference,
                            exchange: mx
                                .exchange
                                .to_ascii()
                                .trim_end_matches('.')
                                .to_ascii_lowercase(),
                        }),
                        _ => None,
                    })
                    .collect();
                if hosts.is_empty() {
                    Ok(MxAnswer::NoMx)
                } else {
                    Ok(MxAnswer::Hosts(hosts))
                }
            }
            Err(e) => classify(domain, &e),
        }
    }
}

/// NXDOMAIN and NODATA are answers; everything else is a temporary failure.
fn classify(domain: &str, e: &NetError) -> Result<MxAnswer, DnsError> {
    if let NetError::Dns(HickoryDnsError::NoRecordsFound(no)) = e {
        match no.response_code {
            ResponseCode::NXDomain => return Ok(MxAnswer::NxDomain),
            ResponseCode::NoError => return Ok(MxAnswer::NoMx),
            _ => {}
        }
    }
    Err(DnsError::Temporary {
        domain: domain.to_string(),
        reason: e.to_string(),
    })
}

impl MxLookup for DnsResolver {
    fn mx<'a>(&'a self, domain: &'a str) -> BoxFuture<'a, Result<MxAnswer, DnsError>> {
        Box::pin(self.lookup(domain))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rem::dns::{check_domain, NotServed, Routing};

    fn block<T>(f: impl std::future::Future<Output = T>) -> T {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
            .block_on(f)
    }

    #[test]
    fn the_real_resolver_refuses_an_invalid_domain_before_asking() {
        // 127.0.0.1:9 (discard): nothing is sent for a name that is no domain.
        let r = DnsResolver::at("127.0.0.1:9".parse().expect("addr"), DEFAULT_TIMEOUT, 1)
            .expect("resolver");
        for bad in ["", ".", "a..b", "a b.rem"] {
            assert!(
                matches!(block(r.mx(bad)), Err(DnsError::InvalidDomain { .. })),
                "{bad:?}"
            );
        }
    }

    /// A fake DNS server on a loopback UDP port (the real resolver's in-process test): the
    /// answer depends on the name asked. Runs until the runtime ends.
    async fn fake_dns() -> SocketAddr {
        use hickory_resolver::proto::op::{Message, MessageType, OpCode};
        use hickory_resolver::proto::rr::rdata::{MX, SOA};
        use hickory_resolver::proto::rr::{Name, Record};
        let socket = tokio::net::UdpSocket::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = socket.local_addr().expect("addr");
        tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            loop {
                let Ok((n, peer)) = socket.recv_from(&mut buf).await else {
                    return;
                };
                let Ok(query) = Message::from_vec(&buf[..n]) else {
                    continue;
                };
                let Some(q) = query.queries.first().cloned() else {
                    continue;
                };
                let name = q.name().to_ascii().to_ascii_lowercase();
                let mut reply =
                    Message::new(query.metadata.id, MessageType::Response, OpCode::Query);
                reply.metadata.recursion_desired = query.metadata.recursion_desired;
                reply.metadata.recursion_available = true;
                reply.metadata.authoritative = true;
                reply.add_query(q.clone());
                let zone = Name::from_ascii("test.").expect("name");
                let soa = Record::from_rdata(
                    zone.clone(),
                    60,
                    RData::SOA(SOA::new(
                        Name::from_ascii("ns.test.").expect("name"),
                        Name::from_ascii("hostmaster.test.").expect("name"),
                        1,
                        60,
                        60,
                        60,
                        60,
                    )),
                );
                let mx = |pref: u16, host: &str| {
                    Record::from_rdata(
                        q.name().clone(),
                        60,
                        RData::MX(MX::new(pref, Name::from_ascii(host).expect("name"))),
                    )
                };
                match name.as_str() {
                    "served.test." => {
                        reply.add_answer(mx(20, "MX2.A.test."));
                        reply.add_answer(mx(10, "mx1.a.test."));
                    }
                    "null.test." => {
                        reply.add_answer(mx(0, "."));
                    }
                    "nodata.test." => {
                        reply.add_authority(soa);
                    }
                    "nx.test." => {
                        reply.metadata.response_code = ResponseCode::NXDomain;
                        reply.add_authority(soa);
                    }
                    "refused.test." => reply.metadata.response_code = ResponseCode::Refused,
                    "garbage.test." => {
                        let _ = socket.send_to(b"\x00\x01garbage", peer).await;
                        continue;
                    }
                    "silent.test." => continue,
                    _ => reply.metadata.response_code = ResponseCode::ServFail,
                }
                if let Ok(bytes) = reply.to_vec() {
                    let _ = socket.send_to(&bytes, peer).await;
                }
            }
        });
        addr
    }

    #[test]
    fn the_real_resolver_reads_each_answer_of_a_dns_server() {
        block(async {
            let server = fake_dns().await;
            let r = DnsResolver::at(server, Duration::from_millis(300), 1).expect("resolver");
            assert_eq!(
                r.mx("served.test").await,
                Ok(MxAnswer::Hosts(vec![
                    MxHost {
                        preference: 20,
                        exchange: "mx2.a.test".into()
                    },
                    MxHost {
                        preference: 10,
                        exchange: "mx1.a.test".into()
                    },
                ]))
            );
            assert_eq!(
                check_domain(
                    &r,
                    "served.test",
                    &["smtp://mx1.a.test:25", "smtp:MX2.a.test"]
                )
                .await,
                Ok(Routing::Served {
                    exchanges: vec!["mx1.a.test".into(), "mx2.a.test".into()],
                    supply_points: vec!["smtp://mx1.a.test:25".into(), "smtp:MX2.a.test".into()],
                })
            );
            assert_eq!(
                check_domain(&r, "null.test", &["smtp://mx1.a.test"]).await,
                Ok(Routing::NotServed(NotServed::NullMx))
            );
            assert_eq!(r.mx("nodata.test").await, Ok(MxAnswer::NoMx));
            assert_eq!(r.mx("nx.test").await, Ok(MxAnswer::NxDomain));
            for temporary in [
                "servfail.test",
                "refused.test",
                "garbage.test",
                "silent.test",
            ] {
                let e = r.mx(temporary).await.expect_err(temporary);
                assert!(e.is_temporary(), "{temporary}: {e}");
            }
        });
    }

    #[test]
    fn a_dns_server_that_is_down_is_a_temporary_failure() {
        block(async {
            // A port bound and then released: nothing listens there.
            let port = std::net::UdpSocket::bind("127.0.0.1:0")
                .and_then(|s| s.local_addr())
                .expect("port");
            let r = DnsResolver::at(port, Duration::from_millis(300), 1).expect("resolver");
            let e = r.mx("served.test").await.expect_err("down");
            assert!(e.is_temporary(), "{e}");
        });
    }
}
