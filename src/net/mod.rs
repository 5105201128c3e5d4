//! Name resolution for the driver: the system resolver, and for `.local` names that it cannot
//! resolve (a static musl binary has no nss-mdns) a one-shot mDNS query of our own. [`mdns`] is
//! the sans-IO part (the query and the response parser); this module owns the UDP socket.
//!
//! Invariants: every lookup is bounded in time (the system resolver by the connection timeout,
//! mDNS by [`mdns::BUDGET_MS`] or the connection timeout if shorter); every failure is a network
//! fault, retried with the connection, except a name that cannot be put in a query at all.

pub mod mdns;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use log::debug;
use tokio::net::UdpSocket;
use tokio::time::Instant;

use crate::error::{Error, Fault, Result};

/// The addresses of `host`, with `port`. A `.local` name that the system resolver does not
/// resolve is asked for over mDNS.
pub(crate) async fn resolve(host: &str, port: u16, timeout: Duration) -> Result<Vec<SocketAddr>> {
    let system = match tokio::time::timeout(timeout, tokio::net::lookup_host((host, port))).await {
        Ok(Ok(addresses)) => Ok(addresses.collect::<Vec<_>>()),
        Ok(Err(e)) => Err(Error::io(
            Fault::Network,
            format!("cannot resolve {host}"),
            e,
        )),
        Err(_) => Err(Error::network(format!(
            "resolving {host} took longer than {timeout:?}"
        ))),
    };
    if !mdns::is_local_name(host) {
        return system;
    }
    match system {
        Ok(addresses) if !addresses.is_empty() => Ok(addresses),
        Ok(_) => {
            debug!("the system resolver has no address for {host}: asking mDNS");
            resolve_mdns(host, port, timeout).await
        }
        Err(e) => {
            debug!("{e}: asking mDNS");
            resolve_mdns(host, port, timeout).await
        }
    }
}

/// Asks for the A and AAAA records of `host` on 224.0.0.251:5353 from an ephemeral port, sends
/// the query again after a second, and returns the addresses of the first response that has any.
/// Waits [`mdns::BUDGET_MS`] at most, or `timeout` if shorter. IPv6 link-local addresses are left
/// out: a response does not say on which interface they are.
async fn resolve_mdns(host: &str, port: u16, timeout: Duration) -> Result<Vec<SocketAddr>> {
    let mut lookup = mdns::Lookup::new(host)
        .map_err(|e| Error::config(format!("{host} cannot be asked for over mDNS: {e}")))?;
    let budget = timeout.min(Duration::from_millis(mdns::BUDGET_MS));
    let socket = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0))
        .await
        .map_err(|e| Error::io(Fault::Network, "cannot open a socket for mDNS", e))?;
    // RFC 6762 §11: mDNS packets go out with an IP TTL of 255.
    let _ = socket.set_multicast_ttl_v4(255);
    let group = SocketAddr::from((mdns::GROUP_V4, mdns::PORT));
    let start = Instant::now();
    let deadline = start + budget;
    let mut sends = mdns::SEND_AT_MS
        .iter()
        .map(|ms| start + Duration::from_millis(*ms))
        .filter(|at| *at < deadline);
    let mut next_send = sends.next();
    // The largest mDNS packet (§17).
    let mut packet = vec![0u8; 9000];
    loop {
        if next_send.is_some_and(|at| at <= Instant::now()) {
            debug!("mDNS: asking {group} for the A and AAAA records of {host}");
            socket.send_to(lookup.query(), group).await.map_err(|e| {
                Error::io(
                    Fault::Network,
                    format!("cannot send an mDNS query for {host}"),
                    e,
                )
            })?;
            next_send = sends.next();
            continue;
        }
        let wake = next_send.map_or(deadline, |at| at.min(deadline));
        let (size, from) = match tokio::time::timeout_at(wake, socket.recv_from(&mut packet)).await
        {
            Ok(Ok(received)) => received,
            Ok(Err(e)) => {
                return Err(Error::io(
                    Fault::Network,
                    format!("cannot receive mDNS answers for {host}"),
                    e,
                ))
            }
            Err(_) if wake >= deadline => {
                return Err(Error::network(format!(
                    "{host}: no mDNS answer within {}: is the NVR on this network? \
                     (mDNS does not cross routers)",
                    seconds(budget)
                )))
            }
            Err(_) => continue,
        };
        if from.port() != mdns::PORT {
            debug!("mDNS: ignoring a packet from {from}, not from port 5353");
            continue;
        }
        match lookup.handle(&packet[..size]) {
            Ok(0) => continue,
            Ok(_) => {}
            Err(e) => {
                debug!("mDNS: ignoring a packet from {from}: {e}");
                continue;
            }
        }
        let addresses: Vec<SocketAddr> = lookup
            .addresses()
            .into_iter()
            .filter(|address| match address {
                IpAddr::V6(v6) => v6.segments()[0] & 0xffc0 != 0xfe80,
                IpAddr::V4(_) => true,
            })
            .map(|address| SocketAddr::new(address, port))
            .collect();
        debug!("mDNS: {from} answered {host}: {:?}", lookup.addresses());
        if !addresses.is_empty() {
            return Ok(addresses);
        }
    }
}

/// `3 s`, `1.5 s`.
fn seconds(duration: Duration) -> String {
    let ms = duration.as_millis();
    if ms % 1000 == 0 {
        format!("{} s", ms / 1000)
    } else {
        format!("{:.1} s", duration.as_secs_f64())
    }
}
