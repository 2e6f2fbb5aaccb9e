//! Observe → diff → execute, the shape of every cloud provider: a provider reads the resources
//! it owns, [`diff`] turns them and the desired ones into an ordered list of [`Change`]s, and
//! the provider carries the list out in order, stopping at the first change that fails (the
//! next pass observes again and goes on from there).
//!
//! The kit knows nothing of any cloud. A provider tells it, through [`Model`], what its keys
//! are, how an observed resource compares with a desired one, and which resource a deletion
//! takes others along with; the API calls of each change stay in the provider.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

/// A kind of resource of one provider. Kinds are ordered in creation order: a kind may refer
/// only to kinds before it.
pub trait ResourceKind: Copy + Ord {
    /// The kind in plan lines: `route`, `operation-policy`.
    fn name(self) -> &'static str;
}

/// Identifies a resource within what one Gateway owns. Keys are ordered in creation order
/// (parents before the resources in them); plan lines show a key as its kind and name.
pub trait Key: Ord + Clone {
    /// The name of the key's kind: `route`.
    fn kind(&self) -> &str;
    /// The resource's name within its kind: a route key, a path.
    fn name(&self) -> &str;
}

/// The usual key: a kind, then a name of the provider's choosing.
impl<K: ResourceKind> Key for (K, String) {
    fn kind(&self) -> &str {
        self.0.name()
    }

    fn name(&self) -> &str {
        &self.1
    }
}

/// What an update or a delete needs of the observed resource it acts on (its provider id, the
/// version it was read at).
pub trait Handle: Clone {
    /// What a plan line shows of it after the key, in parentheses; `None`: nothing.
    fn shown(&self) -> Option<&str>;
}

/// A provider id, shown in plan lines: `- delete route ANY /a (r1)`.
impl Handle for String {
    fn shown(&self) -> Option<&str> {
        Some(self)
    }
}

/// How an observed resource compares with the desired one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// As desired: nothing to do.
    Satisfied,
    /// Not as desired; changed in place.
    Update,
    /// Not as desired and not changeable: a new one is created (the provider decides what
    /// becomes of the observed one; the diff does not delete it).
    Create,
}

/// What the kit needs to know of a provider's resources.
pub trait Model {
    type Key: Key;
    /// What the provider wants a resource to be.
    type Desired: Clone;
    /// A resource as observed.
    type Observed;
    /// What updates and deletes carry of the observed resource.
    type Handle: Handle;

    /// Whether `observed` is as `desired` asks, and if not, how to get there.
    fn compare(key: &Self::Key, desired: &Self::Desired, observed: &Self::Observed) -> Verdict;

    /// What an update or delete of `observed` needs to know of it.
    fn handle(observed: &Self::Observed) -> Self::Handle;

    /// The resource whose deletion takes `key` along with it, if any. It must come before
    /// `key` in key order (it is created first).
    fn parent(key: &Self::Key) -> Option<Self::Key>;
}

/// One step of a plan: a resource of key `K` to create or update to the desired state `D`, or
/// to delete. Updates and deletes carry the observed resource's handle `H`.
#[derive(Clone, Debug, PartialEq)]
pub enum Change<K, D, H> {
    Create { key: K, desired: D },
    Update { key: K, desired: D, handle: H },
    Delete { key: K, handle: H },
}

impl<K, D, H> Change<K, D, H> {
    pub fn key(&self) -> &K {
        match self {
            Change::Create { key, .. } | Change::Update { key, .. } | Change::Delete { key, .. } => key,
        }
    }

    /// `create`, `update` or `delete`.
    pub fn verb(&self) -> &'static str {
        match self {
            Change::Create { .. } => "create",
            Change::Update { .. } => "update",
            Change::Delete { .. } => "delete",
        }
    }

    /// The handle of the observed resource an update or delete acts on.
    pub fn handle(&self) -> Option<&H> {
        match self {
            Change::Create { .. } => None,
            Change::Update { handle, .. } | Change::Delete { handle, .. } => Some(handle),
        }
    }
}

impl<K: Key, D, H> Change<K, D, H> {
    /// What the change does, for error messages: `create domain-name api.example.com`.
    pub fn action(&self) -> String {
        format!("{} {} {}", self.verb(), self.key().kind(), self.key().name())
    }
}

/// A plan line: `+ create route ANY /b`, `~ update integration i1 (x1)`, `- delete api a (a1)`.
impl<K: Key, D, H: Handle> fmt::Display for Change<K, D, H> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sign = match self {
            Change::Create { .. } => '+',
            Change::Update { .. } => '~',
            Change::Delete { .. } => '-',
        };
        write!(f, "{sign} {}", self.action())?;
        match self.handle().and_then(Handle::shown) {
            Some(shown) => write!(f, " ({shown})"),
            None => Ok(()),
        }
    }
}

/// The changes that turn `observed` into `desired`: creates and updates in key order (parents
/// first), then deletes in reverse key order (children first). A resource whose parent (or
/// its parent's parent...) is deleted is not deleted on its own: it goes with the parent.
pub fn diff<M: Model>(
    desired: &BTreeMap<M::Key, M::Desired>,
    observed: &BTreeMap<M::Key, M::Observed>,
) -> Vec<Change<M::Key, M::Desired, M::Handle>> {
    let mut changes = Vec::new();
    for (key, want) in desired {
        let Some(have) = observed.get(key) else {
            changes.push(Change::Create { key: key.clone(), desired: want.clone() });
            continue;
        };
        match M::compare(key, want, have) {
            Verdict::Satisfied => {}
            Verdict::Update => changes.push(Change::Update {
                key: key.clone(),
                desired: want.clone(),
                handle: M::handle(have),
            }),
            Verdict::Create => changes.push(Change::Create { key: key.clone(), desired: want.clone() }),
        }
    }
    let gone: BTreeSet<&M::Key> = observed.keys().filter(|key| !desired.contains_key(*key)).collect();
    let goes_with_parent = |key: &M::Key| {
        let mut parent = M::parent(key);
        while let Some(p) = parent {
            debug_assert!(p < *key, "a parent comes before its children in key order");
            if gone.contains(&p) {
                return true;
            }
            parent = M::parent(&p);
        }
        false
    };
    changes.extend(
        gone.iter()
            .rev()
            .filter(|key| !goes_with_parent(key))
            .map(|key| Change::Delete { key: (*key).clone(), handle: M::handle(&observed[*key]) }),
    );
    changes
}

/// How many changes of each sort a plan makes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Summary {
    pub create: usize,
    pub update: usize,
    pub delete: usize,
}

impl Summary {
    pub fn of<K, D, H>(changes: &[Change<K, D, H>]) -> Summary {
        let mut summary = Summary::default();
        for change in changes {
            match change {
                Change::Create { .. } => summary.create += 1,
                Change::Update { .. } => summary.update += 1,
                Change::Delete { .. } => summary.delete += 1,
            }
        }
        summary
    }
}

/// `2 to create, 0 to update, 1 to delete`.
impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} to create, {} to update, {} to delete", self.create, self.update, self.delete)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A toy provider: servers hold disks, disks hold snapshots; firewalls stand alone.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
    enum Kind {
        Server,
        Disk,
        Snapshot,
        Firewall,
    }

    impl ResourceKind for Kind {
        fn name(self) -> &'static str {
            match self {
                Kind::Server => "server",
                Kind::Disk => "disk",
                Kind::Snapshot => "snapshot",
                Kind::Firewall => "firewall",
            }
        }
    }

    type ToyKey = (Kind, String);

    /// An observed resource: its id and size.
    #[derive(Debug)]
    struct Live {
        id: String,
        size: u32,
    }

    struct Toy;

    impl Model for Toy {
        type Key = ToyKey;
        type Desired = u32;
        type Observed = Live;
        type Handle = String;

        /// Sizes grow in place; a snapshot of another size is taken anew.
        fn compare(key: &ToyKey, desired: &u32, observed: &Live) -> Verdict {
            match (key.0, observed.size) {
                (_, size) if size == *desired => Verdict::Satisfied,
                (Kind::Snapshot, _) => Verdict::Create,
                _ => Verdict::Update,
            }
        }

        fn handle(observed: &Live) -> String {
            observed.id.clone()
        }

        /// Names are paths: `s1/d1/n1` is a snapshot of disk `s1/d1` of server `s1`.
        fn parent((kind, name): &ToyKey) -> Option<ToyKey> {
            let parent = match kind {
                Kind::Disk => Kind::Server,
                Kind::Snapshot => Kind::Disk,
                Kind::Server | Kind::Firewall => return None,
            };
            let (path, _) = name.rsplit_once('/')?;
            Some((parent, path.to_string()))
        }
    }

    fn key(kind: Kind, name: &str) -> ToyKey {
        (kind, name.to_string())
    }

    fn desired(entries: &[(Kind, &str, u32)]) -> BTreeMap<ToyKey, u32> {
        entries.iter().map(|(kind, name, size)| (key(*kind, name), *size)).collect()
    }

    fn observed(entries: &[(Kind, &str, &str, u32)]) -> BTreeMap<ToyKey, Live> {
        entries
            .iter()
            .map(|(kind, name, id, size)| (key(*kind, name), Live { id: id.to_string(), size: *size }))
            .collect()
    }

    fn lines(changes: &[Change<ToyKey, u32, String>]) -> Vec<String> {
        changes.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn creates_and_updates_parents_first_then_deletes_children_first() {
        let want = desired(&[
            (Kind::Snapshot, "s2/d1/n1", 1),
            (Kind::Disk, "s2/d1", 10),
            (Kind::Disk, "s1/d1", 10),
            (Kind::Server, "s2", 1),
            (Kind::Server, "s1", 2),
        ]);
        let have = observed(&[
            (Kind::Server, "s1", "i-1", 1),
            (Kind::Disk, "s1/d1", "vol-1", 10),
            (Kind::Disk, "s1/d2", "vol-2", 10),
            (Kind::Disk, "s1/d3", "vol-3", 10),
            (Kind::Snapshot, "s1/d1/n1", "snap-1", 10),
            (Kind::Firewall, "fw", "sg-1", 0),
        ]);
        assert_eq!(
            lines(&diff::<Toy>(&want, &have)),
            [
                "~ update server s1 (i-1)",
                "+ create server s2",
                "+ create disk s2/d1",
                "+ create snapshot s2/d1/n1",
                "- delete firewall fw (sg-1)",
                "- delete snapshot s1/d1/n1 (snap-1)",
                "- delete disk s1/d3 (vol-3)",
                "- delete disk s1/d2 (vol-2)",
            ]
        );
    }

    #[test]
    fn children_of_a_deleted_parent_go_with_it_at_any_depth() {
        let have = observed(&[
            (Kind::Server, "s1", "i-1", 1),
            (Kind::Disk, "s1/d1", "vol-1", 10),
            (Kind::Snapshot, "s1/d1/n1", "snap-1", 10),
            (Kind::Server, "s2", "i-2", 1),
            (Kind::Disk, "s2/d1", "vol-2", 10),
            (Kind::Snapshot, "s2/d1/n1", "snap-2", 10),
            (Kind::Server, "s3", "i-3", 1),
            (Kind::Snapshot, "s3/d1/n1", "snap-3", 10),
        ]);
        // s1 goes entirely; s2 stays but its disk goes, taking its snapshot; s3 takes a
        // snapshot whose disk was not observed.
        let want = desired(&[(Kind::Server, "s2", 1)]);
        assert_eq!(
            lines(&diff::<Toy>(&want, &have)),
            ["- delete disk s2/d1 (vol-2)", "- delete server s3 (i-3)", "- delete server s1 (i-1)"]
        );
    }

    #[test]
    fn a_kept_parent_does_not_shield_its_children() {
        let have = observed(&[(Kind::Server, "s1", "i-1", 1), (Kind::Disk, "s1/d1", "vol-1", 10)]);
        let want = desired(&[(Kind::Server, "s1", 1)]);
        assert_eq!(lines(&diff::<Toy>(&want, &have)), ["- delete disk s1/d1 (vol-1)"]);
    }

    #[test]
    fn a_verdict_of_create_makes_a_new_resource_beside_the_observed_one() {
        let want = desired(&[(Kind::Snapshot, "s1/d1/n1", 20)]);
        let have = observed(&[(Kind::Snapshot, "s1/d1/n1", "snap-1", 10)]);
        assert_eq!(
            diff::<Toy>(&want, &have),
            [Change::Create { key: key(Kind::Snapshot, "s1/d1/n1"), desired: 20 }]
        );
    }

    #[test]
    fn nothing_to_do_when_everything_is_as_desired() {
        let want = desired(&[(Kind::Server, "s1", 1), (Kind::Disk, "s1/d1", 10)]);
        let have = observed(&[(Kind::Server, "s1", "i-1", 1), (Kind::Disk, "s1/d1", "vol-1", 10)]);
        let changes = diff::<Toy>(&want, &have);
        assert!(changes.is_empty(), "{changes:?}");
        assert_eq!(Summary::of(&changes).to_string(), "0 to create, 0 to update, 0 to delete");
    }

    #[test]
    fn summary_counts_each_sort_of_change() {
        let want = desired(&[(Kind::Server, "s1", 2), (Kind::Server, "s2", 1), (Kind::Server, "s3", 1)]);
        let have = observed(&[(Kind::Server, "s1", "i-1", 1), (Kind::Firewall, "fw", "sg-1", 0)]);
        let summary = Summary::of(&diff::<Toy>(&want, &have));
        assert_eq!(summary, Summary { create: 2, update: 1, delete: 1 });
        assert_eq!(summary.to_string(), "2 to create, 1 to update, 1 to delete");
    }

    #[test]
    fn actions_name_the_verb_kind_and_key() {
        let change: Change<ToyKey, u32, String> =
            Change::Delete { key: key(Kind::Disk, "s1/d1"), handle: "vol-1".into() };
        assert_eq!(change.action(), "delete disk s1/d1");
        assert_eq!(change.to_string(), "- delete disk s1/d1 (vol-1)");
    }

    /// A handle that plan lines do not show (a version tag).
    #[derive(Clone, Debug, PartialEq)]
    struct Version(u32);

    impl Handle for Version {
        fn shown(&self) -> Option<&str> {
            None
        }
    }

    #[test]
    fn a_handle_may_stay_out_of_plan_lines() {
        let change: Change<ToyKey, u32, Version> =
            Change::Update { key: key(Kind::Server, "s1"), desired: 2, handle: Version(7) };
        assert_eq!(change.to_string(), "~ update server s1");
    }
}
