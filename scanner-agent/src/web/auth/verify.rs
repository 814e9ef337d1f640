//! Credential checks that stall no one. bcrypt is slow on purpose, so:
//! it runs on blocking threads, a few at a time; a credential verified once
//! is remembered for [`CACHE_TTL`] (keyed by a keyed hash of the
//! credentials, never the password itself), so Prometheus's scrapes never
//! queue behind a flood of wrong passwords; and when [`Verifier::admitted`]
//! is exhausted an unknown credential is told "busy" at once instead of
//! waiting without bound. A credential whose time is up is verified again,
//! but past that limit: it waits behind the few queued verifications rather
//! than being turned away, so a long flood cannot lock Prometheus out
//! either. An unknown user name (or a wrong plain-text
//! password) costs one bcrypt verification like a wrong password does, so
//! timing does not tell which names exist.

use std::{
    collections::HashMap,
    hash::Hasher as _,
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use siphasher::sip128::{Hasher128 as _, SipHasher13};
use subtle::ConstantTimeEq as _;
use tokio::sync::Semaphore;

use crate::config::{Account, Auth, Password};

/// How long a verified credential is remembered. A reload (SIGHUP) forgets
/// every credential at once, so a changed password stops working then.
pub(crate) const CACHE_TTL: Duration = Duration::from_secs(60);

/// Most credentials remembered; more verified ones are not cached (only
/// correct passwords are, so this is reached only by many real users).
const MAX_CACHED: usize = 1024;

/// Verifications that may wait for a thread, per verification thread.
const QUEUED_PER_THREAD: usize = 8;

/// The outcome of a check of a basic-auth credential.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Checked<'a> {
    Valid(Account<'a>),
    Invalid,
    /// Too many verifications are waiting already: retry later.
    Busy,
}

struct Remembered {
    username: String,
    /// The configured hash it was verified against: a credential verified
    /// against an older configuration never counts for a newer one.
    hash: String,
    expires: Instant,
}

/// What the cache knows of a credential.
enum Memory<'a> {
    /// Verified less than [`CACHE_TTL`] ago, for this account.
    Fresh(Account<'a>),
    /// Verified before, for the same configured hash: verify again, first in line.
    Stale,
    Unknown,
}

pub(crate) struct Verifier {
    /// The key of the cache's hash, random for each process.
    key: [u8; 16],
    cache: Mutex<HashMap<u128, Remembered>>,
    /// Bumped by [`Verifier::flush`]: verifications started before it are
    /// not remembered.
    generation: AtomicU64,
    /// Verifications running at once (each on a blocking thread).
    running: Arc<Semaphore>,
    /// Verifications running or waiting to run.
    admitted: Arc<Semaphore>,
    /// A valid bcrypt hash at cost 4 of a random password no one sends:
    /// with its cost changed, what an unknown user name is checked against.
    dummy: String,
    /// bcrypt verifications done, for the tests.
    runs: AtomicU64,
}

impl Verifier {
    /// Half the CPUs verify at once (at least one), so the other half
    /// keeps serving.
    pub(crate) fn new() -> Self {
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get().div_ceil(2));
        Self::with_threads(threads)
    }

    pub(crate) fn with_threads(threads: usize) -> Self {
        let dummy = bcrypt::hash_with_salt(rand::random::<[u8; 16]>(), 4, rand::random())
            .expect("cost 4 and a short password are valid")
            .to_string();
        Self {
            key: rand::random(),
            cache: Mutex::new(HashMap::new()),
            generation: AtomicU64::new(0),
            running: Arc::new(Semaphore::new(threads)),
            admitted: Arc::new(Semaphore::new(threads * (1 + QUEUED_PER_THREAD))),
            dummy,
            runs: AtomicU64::new(0),
        }
    }

    /// Forgets every remembered credential (on reload).
    pub(crate) fn flush(&self) {
        self.generation.fetch_add(1, Ordering::SeqCst);
        self.cache
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
    }

    /// bcrypt verifications done so far.
    #[cfg(test)]
    pub(crate) fn runs(&self) -> u64 {
        self.runs.load(Ordering::Relaxed)
    }

    /// Checks `username` and `password` against every basic-auth account of `auth`.
    pub(crate) async fn check<'a>(
        &self,
        auth: &'a Auth,
        username: &str,
        password: &str,
    ) -> Checked<'a> {
        // No account has an empty name or password (refused at load).
        if username.is_empty() || password.is_empty() {
            return Checked::Invalid;
        }
        let key = self.cache_key(username, password);
        let known = match self.remembered(auth, key) {
            Memory::Fresh(account) => return Checked::Valid(account),
            Memory::Stale => true,
            Memory::Unknown => false,
        };
        // Every name is compared, so timing tells nothing of which matched.
        let account = auth.accounts().fold(None, |found, a| {
            let same: bool = a.username.as_bytes().ct_eq(username.as_bytes()).into();
            if same { Some(a) } else { found }
        });
        let (own, hash) = match account {
            Some(a) => match a.password {
                Password::Bcrypt { hash, .. } => (Some(a), hash.clone()),
                Password::Plain(plain)
                    if bool::from(plain.as_bytes().ct_eq(password.as_bytes())) =>
                {
                    return Checked::Valid(a);
                }
                Password::Plain(_) => (None, self.dummy_for(auth).unwrap_or_default()),
            },
            None => (None, self.dummy_for(auth).unwrap_or_default()),
        };
        // A wrong plain password and an unknown name cost what a wrong
        // bcrypt password costs (nothing when no account has a hash).
        if hash.is_empty() {
            return Checked::Invalid;
        }
        let generation = self.generation.load(Ordering::SeqCst);
        match (self.verify(password, hash.clone(), known).await, own) {
            (None, _) => Checked::Busy,
            (Some(true), Some(a)) => {
                self.remember(key, a.username, hash, generation);
                Checked::Valid(a)
            }
            (Some(_), _) => Checked::Invalid,
        }
    }

    /// A bcrypt hash no one knows the password of, at the highest cost of
    /// the configured ones (None without bcrypt accounts).
    fn dummy_for(&self, auth: &Auth) -> Option<String> {
        let cost = auth
            .accounts()
            .filter_map(|a| match a.password {
                Password::Bcrypt { cost, .. } => Some(*cost),
                Password::Plain(_) => None,
            })
            .max()?;
        // "$2b$04$...": the cost is the two digits after the second '$'.
        Some(format!("{}{cost:02}{}", &self.dummy[..4], &self.dummy[6..]))
    }

    /// One bcrypt verification on a blocking thread; None when too many
    /// are waiting already (a `known` credential waits all the same: only
    /// correct passwords become known, so they are few).
    async fn verify(&self, password: &str, hash: String, known: bool) -> Option<bool> {
        let admitted = match Arc::clone(&self.admitted).try_acquire_owned() {
            Ok(permit) => Some(permit),
            Err(_) if known => None,
            Err(_) => return None,
        };
        let running = Arc::clone(&self.running)
            .acquire_owned()
            .await
            .expect("the semaphore is never closed");
        self.runs.fetch_add(1, Ordering::Relaxed);
        let password = password.to_owned();
        // The permits go with the work: a client that hangs up does not
        // free a thread that is still busy with its password.
        let outcome = tokio::task::spawn_blocking(move || {
            let _permits = (admitted, running);
            bcrypt::verify(password, &hash).unwrap_or(false)
        })
        .await;
        Some(outcome.unwrap_or(false))
    }

    fn cache_key(&self, username: &str, password: &str) -> u128 {
        let mut h = SipHasher13::new_with_key(&self.key);
        h.write_usize(username.len());
        h.write(username.as_bytes());
        h.write(password.as_bytes());
        h.finish128().as_u128()
    }

    /// What the cache knows of a credential: only what still holds for
    /// an account configured with the same hash.
    fn remembered<'a>(&self, auth: &'a Auth, key: u128) -> Memory<'a> {
        let cache = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(r) = cache.get(&key) else {
            return Memory::Unknown;
        };
        let account = auth.accounts().find(|a| {
            a.username == r.username
                && matches!(a.password, Password::Bcrypt { hash, .. } if *hash == r.hash)
        });
        match account {
            Some(a) if r.expires > Instant::now() => Memory::Fresh(a),
            Some(_) => Memory::Stale,
            None => Memory::Unknown,
        }
    }

    fn remember(&self, key: u128, username: &str, hash: String, generation: u64) {
        let mut cache = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
        // Checked under the lock flush takes: a flush either came before
        // (and this is dropped) or comes after (and clears it).
        if self.generation.load(Ordering::SeqCst) != generation {
            return;
        }
        let now = Instant::now();
        if cache.len() >= MAX_CACHED {
            cache.retain(|_, r| r.expires > now);
        }
        if cache.len() < MAX_CACHED {
            cache.insert(
                key,
                Remembered {
                    username: username.to_owned(),
                    hash,
                    expires: now + CACHE_TTL,
                },
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use std::str::FromStr as _;

    use super::*;
    use crate::config::Config;

    fn parse(yaml: &str) -> Auth {
        Config::parse(yaml).unwrap().auth
    }

    fn bcrypt_auth(password: &str) -> Auth {
        let hash = bcrypt::hash(password, 4).unwrap();
        parse(&format!(
            "auth:\n  basic: {{username: admin, password: \"{hash}\"}}\n  users:\n    \
             - {{username: prom, password: plain-pw, scopes: [metrics]}}\n"
        ))
    }

    fn valid(c: Checked<'_>) -> Option<&str> {
        match c {
            Checked::Valid(a) => Some(a.username),
            _ => None,
        }
    }

    #[tokio::test]
    async fn bcrypt_and_plain_passwords() {
        let auth = bcrypt_auth("s3cret");
        let v = Verifier::with_threads(1);
        assert_eq!(
            valid(v.check(&auth, "admin", "s3cret").await),
            Some("admin")
        );
        assert_eq!(v.check(&auth, "admin", "s3cre").await, Checked::Invalid);
        assert_eq!(
            valid(v.check(&auth, "prom", "plain-pw").await),
            Some("prom")
        );
        assert_eq!(v.check(&auth, "prom", "plain-p").await, Checked::Invalid);
        assert_eq!(v.check(&auth, "prom", "s3cret").await, Checked::Invalid);
        assert_eq!(v.check(&auth, "", "").await, Checked::Invalid);
        assert_eq!(v.check(&auth, "admin", "").await, Checked::Invalid);
    }

    #[tokio::test]
    async fn verified_credentials_are_remembered_until_a_flush() {
        let auth = bcrypt_auth("s3cret");
        let v = Verifier::with_threads(1);
        assert!(valid(v.check(&auth, "admin", "s3cret").await).is_some());
        assert_eq!(v.runs(), 1);
        assert!(valid(v.check(&auth, "admin", "s3cret").await).is_some());
        assert_eq!(v.runs(), 1, "the second check was answered from the cache");
        // Wrong passwords are never remembered.
        for _ in 0..2 {
            assert_eq!(v.check(&auth, "admin", "wrong").await, Checked::Invalid);
        }
        assert_eq!(v.runs(), 3);
        v.flush();
        assert!(valid(v.check(&auth, "admin", "s3cret").await).is_some());
        assert_eq!(v.runs(), 4, "a flush forgets");
    }

    #[tokio::test]
    async fn a_remembered_credential_is_not_valid_for_a_changed_password() {
        let v = Verifier::with_threads(1);
        let old = bcrypt_auth("s3cret");
        assert!(valid(v.check(&old, "admin", "s3cret").await).is_some());
        let new = bcrypt_auth("other");
        assert_eq!(v.check(&new, "admin", "s3cret").await, Checked::Invalid);
        assert!(valid(v.check(&new, "admin", "other").await).is_some());
    }

    #[tokio::test]
    async fn an_unknown_user_costs_one_verification_like_a_wrong_password() {
        let auth = bcrypt_auth("s3cret");
        let v = Verifier::with_threads(1);
        assert_eq!(v.check(&auth, "admin", "wrong").await, Checked::Invalid);
        assert_eq!(v.runs(), 1);
        assert_eq!(v.check(&auth, "nobody", "wrong").await, Checked::Invalid);
        assert_eq!(
            v.runs(),
            2,
            "the unknown user was checked against a dummy hash"
        );
        // At the configured cost, not the dummy's own.
        let hash = bcrypt::hash("x", 5).unwrap();
        let costly = parse(&format!(
            "auth:\n  basic: {{username: admin, password: \"{hash}\"}}\n"
        ));
        let dummy = v.dummy_for(&costly).unwrap();
        assert_eq!(bcrypt::HashParts::from_str(&dummy).unwrap().get_cost(), 5);
        // A wrong plain password costs the same, when other accounts have hashes.
        assert_eq!(v.check(&auth, "prom", "wrong").await, Checked::Invalid);
        assert_eq!(v.runs(), 3);
        assert!(valid(v.check(&auth, "prom", "plain-pw").await).is_some());
        assert_eq!(v.runs(), 3, "a right plain password needs no bcrypt");
        // Without bcrypt accounts there is nothing slow to imitate.
        let plain = parse("auth:\n  basic: {username: admin, password: pw}\n");
        assert_eq!(v.dummy_for(&plain), None);
        assert_eq!(v.check(&plain, "nobody", "pw").await, Checked::Invalid);
        assert_eq!(v.check(&plain, "admin", "wrong").await, Checked::Invalid);
        assert_eq!(v.runs(), 3);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_full_queue_answers_busy_at_once_and_remembered_credentials_are_never_turned_away() {
        // Cost 9 keeps the one thread busy while the queue fills.
        let hash = bcrypt::hash("s3cret", 9).unwrap();
        let auth = Arc::new(parse(&format!(
            "auth:\n  basic: {{username: admin, password: \"{hash}\"}}\n"
        )));
        let v = Arc::new(Verifier::with_threads(1));
        // Remembered before the flood, as Prometheus's credential is.
        let key = v.cache_key("admin", "s3cret");
        v.remember(key, "admin", hash.clone(), 0);
        let capacity = 1 + QUEUED_PER_THREAD;
        let mut flood = Vec::new();
        for _ in 0..capacity {
            let (v, auth) = (Arc::clone(&v), Arc::clone(&auth));
            flood.push(tokio::spawn(async move {
                v.check(&auth, "admin", "wrong").await == Checked::Invalid
            }));
        }
        // Wait until every slot is taken.
        while v.admitted.available_permits() > 0 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        assert_eq!(v.check(&auth, "admin", "guess").await, Checked::Busy);
        assert_eq!(v.check(&auth, "nobody", "guess").await, Checked::Busy);
        assert!(
            valid(v.check(&auth, "admin", "s3cret").await).is_some(),
            "a remembered credential does not wait behind the flood"
        );
        assert_eq!(
            v.admitted.available_permits(),
            0,
            "the flood is still queued"
        );
        // Once its time is up it is verified again, waiting behind the
        // queue (still full) instead of being turned away.
        v.cache.lock().unwrap().get_mut(&key).unwrap().expires = Instant::now();
        assert!(valid(v.check(&auth, "admin", "s3cret").await).is_some());
        // The flood's, and this one: the fresh check verified nothing.
        assert_eq!(v.runs(), capacity as u64 + 1);
        assert!(
            v.cache.lock().unwrap()[&key].expires > Instant::now(),
            "remembered anew"
        );
        for f in flood {
            assert!(f.await.unwrap());
        }
    }

    #[tokio::test]
    async fn a_verification_that_began_before_a_flush_is_not_remembered() {
        let auth = bcrypt_auth("s3cret");
        let v = Verifier::with_threads(1);
        let generation = v.generation.load(Ordering::SeqCst);
        v.flush();
        let key = v.cache_key("admin", "s3cret");
        v.remember(key, "admin", "hash".into(), generation);
        assert!(v.cache.lock().unwrap().is_empty());
        assert!(matches!(v.remembered(&auth, key), Memory::Unknown));
    }
}
