//! Per-user and per-IP limits, shared by every shard of a node.
//!
//! Owns: the keyed governor limiters (chat messages and typing state
//! changes per user, rejections per user for abuse detection, handshakes per client IP),
//! the count of open sockets per user ([`ConnectionPermit`]), pruning of idle
//! keys so memory stays bounded with many distinct users and IPs, and
//! [`client_ip`] (which address a request counts against, honouring
//! `X-Real-IP` / `X-Forwarded-For` only from trusted proxies).
//!
//! Shared as `Arc<Limits>` by all shard threads (a user's sockets can live on
//! several cores): every structure here is `Send + Sync` (governor's
//! DashMap-backed state and a DashMap of counts; both shard their locks and
//! hold them only for the update of one key).
//!
//! Must never: block or wait (every check answers at once; nothing here
//! sleeps or awaits a limiter), do I/O, or keep a key longer than its state
//! matters (call [`Limits::prune`] periodically, e.g. with
//! [`Limits::spawn_pruner`]).

use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use dashmap::mapref::entry::Entry;
use dashmap::DashMap;
use governor::clock::{Clock, DefaultClock};
use governor::middleware::NoOpMiddleware;
use governor::state::keyed::DashMapStateStore;
use governor::{Quota, RateLimiter};

use crate::ids::UserId;

/// How often [`Limits::spawn_pruner`] prunes by default.
pub const PRUNE_INTERVAL: Duration = Duration::from_secs(30);

/// The limit settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LimitsConfig {
    /// Sustained chat messages per user, per second. Default 10.
    pub chat_per_sec: u32,
    /// Chat messages a user may send at once. Default 20.
    pub chat_burst: u32,
    /// Sustained typing state changes forwarded per user, per second; more
    /// are dropped silently (typing never draws an error or counts as
    /// abuse; repeats of one state are coalesced before this, see
    /// `typing_state.rs`). Default 5.
    pub typing_per_sec: u32,
    /// Typing state changes a user may make at once. Default 10.
    pub typing_burst: u32,
    /// Sustained call signals per user, per second (v2; over:
    /// `Rate limit exceeded`). Default 50.
    pub signal_per_sec: u32,
    /// Call signals a user may send at once (ICE candidates come in
    /// bursts). Default 200.
    pub signal_burst: u32,
    /// Chat-limit rejections within [`abuse_window`](Self::abuse_window)
    /// after which the user's socket is closed with 1008. Default 50.
    pub abuse_rejections: u32,
    /// The window of [`abuse_rejections`](Self::abuse_rejections). Default 10 s.
    pub abuse_window: Duration,
    /// Open sockets per user; one more is closed with 1008 at connect. Default 32.
    pub max_conns_per_user: u32,
    /// Sustained handshakes per client IP, per second (IPv6: per /64). Default 50.
    pub handshakes_per_ip_per_sec: u32,
    /// Handshakes a client IP may make at once; more get HTTP 429. Default 100.
    pub handshake_ip_burst: u32,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            chat_per_sec: 10,
            chat_burst: 20,
            typing_per_sec: 5,
            typing_burst: 10,
            signal_per_sec: 50,
            signal_burst: 200,
            abuse_rejections: 50,
            abuse_window: Duration::from_secs(10),
            max_conns_per_user: 32,
            handshakes_per_ip_per_sec: 50,
            handshake_ip_burst: 100,
        }
    }
}

/// A limit setting that cannot work.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum LimitsError {
    /// A count or rate is zero.
    #[error("limit setting {0} must be positive")]
    Zero(&'static str),
    /// The abuse window is shorter than one nanosecond per rejection.
    #[error("the abuse window is too short for {0} rejections")]
    WindowTooShort(u32),
}

impl LimitsConfig {
    /// Checks every value (call before any port is bound).
    pub fn validate(&self) -> Result<(), LimitsError> {
        self.quotas().map(|_| ())
    }

    fn quotas(&self) -> Result<Quotas, LimitsError> {
        let nz = |v: u32, name: &'static str| NonZeroU32::new(v).ok_or(LimitsError::Zero(name));
        let per_sec = |rate, r_name, burst, b_name| -> Result<Quota, LimitsError> {
            Ok(Quota::per_second(nz(rate, r_name)?).allow_burst(nz(burst, b_name)?))
        };
        nz(self.max_conns_per_user, "max_conns_per_user")?;
        Ok(Quotas {
            chat: per_sec(
                self.chat_per_sec,
                "chat_per_sec",
                self.chat_burst,
                "chat_burst",
            )?,
            typing: per_sec(
                self.typing_per_sec,
                "typing_per_sec",
                self.typing_burst,
                "typing_burst",
            )?,
            signal: per_sec(
                self.signal_per_sec,
                "signal_per_sec",
                self.signal_burst,
                "signal_burst",
            )?,
            handshake: per_sec(
                self.handshakes_per_ip_per_sec,
                "handshakes_per_ip_per_sec",
                self.handshake_ip_burst,
                "handshake_ip_burst",
            )?,
            abuse: self.abuse_quota()?,
        })
    }

    /// `abuse_rejections - 1` rejections pass, one more replenished every
    /// `abuse_window / abuse_rejections`: the `abuse_rejections`-th rejection
    /// within the window is not admitted. `None`: every rejection is abusive.
    fn abuse_quota(&self) -> Result<Option<Quota>, LimitsError> {
        let n =
            NonZeroU32::new(self.abuse_rejections).ok_or(LimitsError::Zero("abuse_rejections"))?;
        let period = Quota::with_period(self.abuse_window / n.get())
            .ok_or(LimitsError::WindowTooShort(n.get()))?;
        Ok(NonZeroU32::new(n.get() - 1).map(|burst| period.allow_burst(burst)))
    }
}

struct Quotas {
    chat: Quota,
    typing: Quota,
    signal: Quota,
    handshake: Quota,
    abuse: Option<Quota>,
}

/// The answer to a rate-limit check.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Handle the message.
    Allowed,
    /// Drop the message and answer `Rate limit exceeded`.
    Limited,
    /// Drop the message and close the socket with 1008: the user has hit the
    /// limit `abuse_rejections` times within `abuse_window`.
    Abusive,
}

/// A keyed GCRA limiter on DashMap state (lock-sharded, `Send + Sync`).
type Keyed<K, C> = RateLimiter<K, DashMapStateStore<K>, C, NoOpMiddleware<<C as Clock>::Instant>>;

/// Open sockets per user. Shared with every [`ConnectionPermit`] so a permit
/// can release itself wherever it is dropped.
type ConnTable = Arc<DashMap<UserId, u32>>;

/// The node's limits. Generic over the clock for deterministic tests; the
/// gateway uses [`DefaultClock`] (quanta).
pub struct Limits<C: Clock = DefaultClock> {
    chat: Keyed<UserId, C>,
    typing: Keyed<UserId, C>,
    signal: Keyed<UserId, C>,
    /// Rejections per user; `None` when every rejection is abusive.
    abuse: Option<Keyed<UserId, C>>,
    /// Handshakes per client IP (IPv6 keyed by /64).
    handshakes: Keyed<IpAddr, C>,
    connections: ConnTable,
    max_conns: u32,
}

impl Limits<DefaultClock> {
    /// Limits on the real clock.
    pub fn new(cfg: &LimitsConfig) -> Result<Self, LimitsError> {
        Self::with_clock(cfg, DefaultClock::default())
    }
}

impl<C: Clock + Clone> Limits<C> {
    /// Limits on `clock` (tests pass governor's `FakeRelativeClock`).
    pub fn with_clock(cfg: &LimitsConfig, clock: C) -> Result<Self, LimitsError> {
        let q = cfg.quotas()?;
        Ok(Self {
            chat: RateLimiter::dashmap_with_clock(q.chat, clock.clone()),
            typing: RateLimiter::dashmap_with_clock(q.typing, clock.clone()),
            signal: RateLimiter::dashmap_with_clock(q.signal, clock.clone()),
            abuse: q
                .abuse
                .map(|quota| RateLimiter::dashmap_with_clock(quota, clock.clone())),
            handshakes: RateLimiter::dashmap_with_clock(q.handshake, clock),
            connections: Arc::new(DashMap::new()),
            max_conns: cfg.max_conns_per_user,
        })
    }
}

impl<C: Clock> Limits<C> {
    /// A chat message from `user`.
    pub fn check_chat(&self, user: UserId) -> Verdict {
        self.check(&self.chat, user)
    }

    /// A call signal from `user` (its own quota; rejections count towards
    /// abuse like chat's).
    pub fn check_signal(&self, user: UserId) -> Verdict {
        self.check(&self.signal, user)
    }

    /// Whether a typing state change from `user` may be forwarded. A
    /// refusal is silent: it draws no error and never counts as abuse.
    pub fn allow_typing_change(&self, user: UserId) -> bool {
        self.typing.check_key(&user).is_ok()
    }

    fn check(&self, limiter: &Keyed<UserId, C>, user: UserId) -> Verdict {
        if limiter.check_key(&user).is_ok() {
            return Verdict::Allowed;
        }
        match &self.abuse {
            Some(abuse) if abuse.check_key(&user).is_ok() => Verdict::Limited,
            _ => Verdict::Abusive,
        }
    }

    /// A socket for `user`, or `None` when the user already has
    /// `max_conns_per_user` open. Dropping the permit releases it.
    pub fn try_acquire_connection(&self, user: UserId) -> Option<ConnectionPermit> {
        let mut open = self.connections.entry(user).or_insert(0);
        if *open >= self.max_conns {
            return None;
        }
        *open += 1;
        drop(open);
        Some(ConnectionPermit {
            table: self.connections.clone(),
            user,
        })
    }

    /// Open sockets of `user` (holders of a permit).
    #[cfg(test)]
    pub fn connections_of(&self, user: UserId) -> u32 {
        self.connections.get(&user).map_or(0, |n| *n)
    }

    /// A handshake from client address `ip` (before any JWT work); `false`
    /// means answer HTTP 429.
    pub fn check_handshake(&self, ip: IpAddr) -> bool {
        self.handshakes.check_key(&ip_key(ip)).is_ok()
    }

    /// Forgets every key whose limiter state is back to fresh and every user
    /// without sockets, then shrinks the maps. Takes each map shard's lock
    /// briefly in turn; run it every [`PRUNE_INTERVAL`] off the shards.
    pub fn prune(&self) {
        let limiters = [
            Some(&self.chat),
            Some(&self.typing),
            Some(&self.signal),
            self.abuse.as_ref(),
        ];
        for limiter in limiters.into_iter().flatten() {
            limiter.retain_recent();
            limiter.shrink_to_fit();
        }
        self.handshakes.retain_recent();
        self.handshakes.shrink_to_fit();
        self.connections.retain(|_, open| *open > 0);
        self.connections.shrink_to_fit();
    }

    /// How many keys each structure holds now.
    #[cfg(test)]
    pub fn tracked(&self) -> Tracked {
        Tracked {
            chat_users: self.chat.len(),
            typing_users: self.typing.len(),
            abuse_users: self.abuse.as_ref().map_or(0, |a| a.len()),
            ips: self.handshakes.len(),
            connected_users: self.connections.len(),
        }
    }
}

impl<C> Limits<C>
where
    C: Clock + Send + Sync + 'static,
    C::Instant: Send + Sync,
{
    /// Prunes `limits` every `every` on `handle` (the side runtime) until
    /// the runtime shuts down or the returned task is aborted.
    pub fn spawn_pruner(
        limits: Arc<Self>,
        handle: &tokio::runtime::Handle,
        every: Duration,
    ) -> tokio::task::JoinHandle<()> {
        handle.spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await; // the first tick is immediate
            loop {
                tick.tick().await;
                limits.prune();
            }
        })
    }
}

/// Key counts of [`Limits`], for tests and gauges.
#[cfg(test)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Tracked {
    pub chat_users: usize,
    pub typing_users: usize,
    pub abuse_users: usize,
    pub ips: usize,
    pub connected_users: usize,
}

/// One open socket of a user; dropping it releases the slot.
#[derive(Debug)]
pub struct ConnectionPermit {
    table: ConnTable,
    user: UserId,
}

impl ConnectionPermit {
    /// The user holding the slot.
    #[cfg(test)]
    pub fn user(&self) -> UserId {
        self.user
    }
}

impl Drop for ConnectionPermit {
    fn drop(&mut self) {
        if let Entry::Occupied(mut open) = self.table.entry(self.user) {
            if *open.get() <= 1 {
                open.remove();
            } else {
                *open.get_mut() -= 1;
            }
        }
    }
}

/// The handshake limiter's key: IPv4 (also IPv4-mapped IPv6) as is, IPv6 by
/// its /64 (one subscriber usually holds a whole /64).
fn ip_key(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => IpAddr::V6(Ipv6Addr::from(u128::from(v6) & !u128::from(u64::MAX))),
        v4 => v4,
    }
}

/// The address a request counts against: the peer, unless the peer is one of
/// `trusted_proxies`, in which case `forwarded` (pass `X-Real-IP` if present,
/// else `X-Forwarded-For`; its first entry is used). A missing or unparsable
/// header yields the peer. IPv4-mapped IPv6 addresses are shown as IPv4.
pub fn client_ip(peer: SocketAddr, forwarded: Option<&str>, trusted_proxies: &[IpAddr]) -> IpAddr {
    let peer_ip = peer.ip().to_canonical();
    if !trusted_proxies.iter().any(|t| t.to_canonical() == peer_ip) {
        return peer_ip;
    }
    forwarded.and_then(parse_forwarded).unwrap_or(peer_ip)
}

/// The last entry of a forwarding header — the one the trusted proxy
/// itself appended (earlier entries are whatever the client sent):
/// `ip`, `[v6]`, `ip:port` or `[v6]:port`.
fn parse_forwarded(value: &str) -> Option<IpAddr> {
    let first = value.rsplit(',').next()?.trim();
    let bare = first.trim_start_matches('[').trim_end_matches(']');
    bare.parse::<IpAddr>()
        .or_else(|_| first.parse::<SocketAddr>().map(|s| s.ip()))
        .ok()
        .map(|ip| ip.to_canonical())
}

#[cfg(test)]
mod tests {
    use super::*;
    use governor::clock::FakeRelativeClock;

    fn limits() -> (Limits<FakeRelativeClock>, FakeRelativeClock) {
        let clock = FakeRelativeClock::default();
        let l = Limits::with_clock(&LimitsConfig::default(), clock.clone()).unwrap();
        (l, clock)
    }

    fn count<T>(n: usize, mut f: impl FnMut() -> T) -> Vec<T> {
        (0..n).map(|_| f()).collect()
    }

    #[test]
    fn the_21st_chat_message_in_a_burst_is_limited() {
        let (l, _) = limits();
        let v = count(21, || l.check_chat(1));
        assert!(v[..20].iter().all(|v| *v == Verdict::Allowed), "{v:?}");
        assert_eq!(v[20], Verdict::Limited);
        // Another user has a separate budget.
        assert_eq!(l.check_chat(2), Verdict::Allowed);
    }

    #[test]
    fn chat_refills_at_the_sustained_rate() {
        let (l, clock) = limits();
        count(21, || l.check_chat(1));
        clock.advance(Duration::from_millis(100));
        assert_eq!(l.check_chat(1), Verdict::Allowed);
        assert_eq!(l.check_chat(1), Verdict::Limited);
    }

    #[test]
    fn the_11th_typing_change_is_dropped_separately_from_chat() {
        let (l, _) = limits();
        let v = count(11, || l.allow_typing_change(1));
        assert!(v[..10].iter().all(|v| *v), "{v:?}");
        assert!(!v[10]);
        assert_eq!(l.check_chat(1), Verdict::Allowed);
    }

    #[test]
    fn typing_refusals_never_count_as_abuse() {
        let (l, _) = limits();
        count(500, || l.allow_typing_change(7));
        assert_eq!(l.check_chat(7), Verdict::Allowed);
    }

    #[test]
    fn fifty_rejections_within_the_window_are_abusive() {
        let (l, _) = limits();
        count(20, || l.check_chat(7));
        // 49 are limited, the 50th is abusive.
        assert!(count(49, || l.check_chat(7))
            .iter()
            .all(|v| *v == Verdict::Limited));
        assert_eq!(l.check_chat(7), Verdict::Abusive);
        assert_eq!(l.check_chat(8), Verdict::Allowed);
    }

    #[test]
    fn rejections_spread_beyond_the_window_are_not_abusive() {
        let (l, clock) = limits();
        // 10 rejections per 5 s for a minute: 20 per 10 s window, under 50.
        for _ in 0..12 {
            count(20, || l.check_chat(3));
            assert!(count(10, || l.check_chat(3))
                .iter()
                .all(|v| *v == Verdict::Limited));
            clock.advance(Duration::from_secs(5));
        }
    }

    #[test]
    fn one_rejection_allowed_means_every_rejection_is_abusive() {
        let cfg = LimitsConfig {
            abuse_rejections: 1,
            chat_burst: 1,
            ..LimitsConfig::default()
        };
        let l = Limits::with_clock(&cfg, FakeRelativeClock::default()).unwrap();
        assert_eq!(l.check_chat(1), Verdict::Allowed);
        assert_eq!(l.check_chat(1), Verdict::Abusive);
    }

    #[test]
    fn the_33rd_connection_is_refused_and_released_on_drop() {
        let (l, _) = limits();
        let mut permits: Vec<_> = (0..32)
            .map(|_| l.try_acquire_connection(5).unwrap())
            .collect();
        assert_eq!(l.connections_of(5), 32);
        assert!(l.try_acquire_connection(5).is_none());
        assert!(l.try_acquire_connection(6).is_some());
        permits.pop();
        let again = l.try_acquire_connection(5).expect("a slot was released");
        assert_eq!(again.user(), 5);
        drop(permits);
        drop(again);
        assert_eq!(l.connections_of(5), 0);
        assert_eq!(
            l.tracked().connected_users,
            0,
            "released users leave the table"
        );
    }

    #[test]
    fn permits_release_from_other_threads() {
        let (l, _) = limits();
        let l = Arc::new(l);
        let handles: Vec<_> = (0..4)
            .map(|_| {
                let l = l.clone();
                std::thread::spawn(move || {
                    for _ in 0..1000 {
                        let p = l.try_acquire_connection(9);
                        drop(p);
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
        assert_eq!(l.connections_of(9), 0);
    }

    #[test]
    fn a_handshake_flood_from_one_ip_leaves_others_alone() {
        let (l, _) = limits();
        let flood: IpAddr = "203.0.113.9".parse().unwrap();
        let other: IpAddr = "203.0.113.10".parse().unwrap();
        assert!((0..100).all(|_| l.check_handshake(flood)));
        assert!(!l.check_handshake(flood));
        assert!(l.check_handshake(other));
        // The IPv4-mapped form is the same client.
        assert!(!l.check_handshake("::ffff:203.0.113.9".parse().unwrap()));
    }

    #[test]
    fn ipv6_is_limited_per_64() {
        let (l, _) = limits();
        for i in 0..100u16 {
            let ip = format!("2001:db8:1:2::{i:x}").parse().unwrap();
            assert!(l.check_handshake(ip));
        }
        assert!(!l.check_handshake("2001:db8:1:2:ffff::1".parse().unwrap()));
        assert!(l.check_handshake("2001:db8:1:3::1".parse().unwrap()));
    }

    #[test]
    fn prune_keeps_memory_bounded() {
        let (l, clock) = limits();
        const N: i64 = 100_000;
        let mut permits = Vec::new();
        for u in 0..N {
            l.check_chat(u);
            l.allow_typing_change(u);
            l.check_handshake(IpAddr::from((u as u32).to_be_bytes()));
            if u % 1000 == 0 {
                count(21, || l.check_chat(u)); // one rejection each: abuse state
                permits.push(l.try_acquire_connection(u).unwrap());
            } else {
                drop(l.try_acquire_connection(u));
            }
        }
        let t = l.tracked();
        assert_eq!(
            (t.chat_users, t.typing_users, t.ips),
            (100_000, 100_000, 100_000)
        );
        assert_eq!((t.abuse_users, t.connected_users), (100, 100));
        l.prune();
        assert_eq!(l.tracked().chat_users, 100_000, "recent keys stay");
        // After the longest refill (abuse: 10 s), only users with sockets remain.
        clock.advance(Duration::from_secs(11));
        l.prune();
        assert_eq!(
            l.tracked(),
            Tracked {
                connected_users: 100,
                ..Tracked::default()
            }
        );
        drop(permits);
        l.prune();
        assert_eq!(l.tracked(), Tracked::default());
        // A pruned user starts with a fresh budget.
        assert_eq!(count(20, || l.check_chat(0)), vec![Verdict::Allowed; 20]);
    }

    #[test]
    fn client_ip_trusts_headers_only_from_trusted_proxies() {
        let proxy: SocketAddr = "10.0.0.1:4000".parse().unwrap();
        let stranger: SocketAddr = "198.51.100.7:5000".parse().unwrap();
        let trusted = ["10.0.0.1".parse().unwrap()];
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(
            client_ip(proxy, Some("203.0.113.5"), &trusted),
            ip("203.0.113.5")
        );
        assert_eq!(
            client_ip(proxy, Some(" 10.0.0.1 , 203.0.113.5"), &trusted),
            ip("203.0.113.5")
        );
        assert_eq!(
            client_ip(proxy, Some("[2001:db8::1]:443"), &trusted),
            ip("2001:db8::1")
        );
        assert_eq!(
            client_ip(proxy, Some("2001:db8::2"), &trusted),
            ip("2001:db8::2")
        );
        assert_eq!(
            client_ip(proxy, Some("203.0.113.5:80"), &trusted),
            ip("203.0.113.5")
        );
        assert_eq!(client_ip(proxy, Some("unknown"), &trusted), ip("10.0.0.1"));
        assert_eq!(client_ip(proxy, Some(""), &trusted), ip("10.0.0.1"));
        assert_eq!(client_ip(proxy, None, &trusted), ip("10.0.0.1"));
        // An untrusted peer cannot choose its address.
        assert_eq!(
            client_ip(stranger, Some("203.0.113.5"), &trusted),
            ip("198.51.100.7")
        );
        assert_eq!(
            client_ip(stranger, Some("203.0.113.5"), &[]),
            ip("198.51.100.7")
        );
        // A dual-stack listener sees IPv4 peers as IPv4-mapped IPv6.
        let mapped: SocketAddr = "[::ffff:10.0.0.1]:4000".parse().unwrap();
        assert_eq!(
            client_ip(mapped, Some("203.0.113.5"), &trusted),
            ip("203.0.113.5")
        );
        assert_eq!(client_ip(mapped, None, &[]), ip("10.0.0.1"));
    }

    #[test]
    fn config_is_validated() {
        assert_eq!(LimitsConfig::default().validate(), Ok(()));
        let zero = |f: fn(&mut LimitsConfig)| {
            let mut c = LimitsConfig::default();
            f(&mut c);
            c.validate()
        };
        assert_eq!(
            zero(|c| c.chat_burst = 0),
            Err(LimitsError::Zero("chat_burst"))
        );
        assert_eq!(
            zero(|c| c.typing_per_sec = 0),
            Err(LimitsError::Zero("typing_per_sec"))
        );
        assert_eq!(
            zero(|c| c.max_conns_per_user = 0),
            Err(LimitsError::Zero("max_conns_per_user"))
        );
        assert_eq!(
            zero(|c| c.abuse_rejections = 0),
            Err(LimitsError::Zero("abuse_rejections"))
        );
        assert_eq!(
            zero(|c| c.abuse_window = Duration::ZERO),
            Err(LimitsError::WindowTooShort(50))
        );
        assert!(Limits::new(&LimitsConfig::default()).is_ok());
    }

    #[test]
    fn limits_are_shareable_across_threads() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<Limits>();
        assert_send_sync::<ConnectionPermit>();
    }
}
