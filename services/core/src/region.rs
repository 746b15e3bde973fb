//! The region tree: district → street/township → community/village → grid, and optionally
//! deeper levels below the grid. Nodes are interned as dense indices so that the hot path
//! compares integers, never strings.

use std::collections::HashMap;

/// Dense index of a region node inside one [`RegionTree`].
pub type RegionId = u32;

/// One node of the region tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegionNode {
    /// Administrative or grid code, unique in the tree.
    pub code: String,
    /// Display name.
    pub name: String,
    /// Level name: `district`, `street`, `community`, `grid`, or deeper.
    pub level: String,
    /// Parent node; `None` for a root (a district).
    pub parent: Option<RegionId>,
    /// Distance from the root (a district has depth 0).
    pub depth: u16,
}

/// A forest of region nodes (usually one district tree per table).
#[derive(Debug, Default, Clone)]
pub struct RegionTree {
    nodes: Vec<RegionNode>,
    by_code: HashMap<String, RegionId>,
}

/// Why a node could not be added.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegionError {
    /// The code is already used by a node with another name, level or parent.
    #[error("region {code} is defined twice with different {what}")]
    Conflict {
        /// The code.
        code: String,
        /// Which attribute differs.
        what: &'static str,
    },
}

impl RegionTree {
    /// An empty tree.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a node, or returns the existing one when the same code is added again with the same
    /// name, level and parent (grids repeat their ancestors, so this is the normal case).
    pub fn insert(
        &mut self,
        code: &str,
        name: &str,
        level: &str,
        parent: Option<RegionId>,
    ) -> Result<RegionId, RegionError> {
        if let Some(&id) = self.by_code.get(code) {
            let node = &self.nodes[id as usize];
            let what = if node.parent != parent {
                Some("parent")
            } else if node.level != level {
                Some("level")
            } else if node.name != name {
                Some("name")
            } else {
                None
            };
            return match what {
                Some(what) => Err(RegionError::Conflict {
                    code: code.to_owned(),
                    what,
                }),
                None => Ok(id),
            };
        }
        let depth = parent.map_or(0, |p| self.nodes[p as usize].depth + 1);
        let id = RegionId::try_from(self.nodes.len()).expect("fewer than 2^32 regions");
        self.nodes.push(RegionNode {
            code: code.to_owned(),
            name: name.to_owned(),
            level: level.to_owned(),
            parent,
            depth,
        });
        self.by_code.insert(code.to_owned(), id);
        Ok(id)
    }

    /// The node with this id.
    pub fn node(&self, id: RegionId) -> &RegionNode {
        &self.nodes[id as usize]
    }

    /// The node with this code.
    pub fn find(&self, code: &str) -> Option<RegionId> {
        self.by_code.get(code).copied()
    }

    /// Number of nodes.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Whether the tree has no node.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// Whether `node` is `ancestor` or lies below it.
    pub fn is_within(&self, mut node: RegionId, ancestor: RegionId) -> bool {
        let target_depth = self.nodes[ancestor as usize].depth;
        loop {
            let n = &self.nodes[node as usize];
            if node == ancestor {
                return true;
            }
            if n.depth <= target_depth {
                return false;
            }
            match n.parent {
                Some(p) => node = p,
                None => return false,
            }
        }
    }

    /// The path from the root down to `node`, both included.
    pub fn path(&self, node: RegionId) -> Vec<RegionId> {
        let mut path = Vec::with_capacity(self.nodes[node as usize].depth as usize + 1);
        let mut cur = Some(node);
        while let Some(id) = cur {
            path.push(id);
            cur = self.nodes[id as usize].parent;
        }
        path.reverse();
        path
    }

    /// Every node, in insertion order.
    pub fn iter(&self) -> impl Iterator<Item = (RegionId, &RegionNode)> {
        (0..).zip(self.nodes.iter())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_and_subtrees() {
        let mut t = RegionTree::new();
        let d = t.insert("640202", "大武口区", "district", None).unwrap();
        let s = t
            .insert("640202001", "长胜街道", "street", Some(d))
            .unwrap();
        let c = t
            .insert("640202001001", "一社区", "community", Some(s))
            .unwrap();
        let g = t
            .insert("640202001001001", "一网格", "grid", Some(c))
            .unwrap();
        let s2 = t
            .insert("640202002", "朝阳街道", "street", Some(d))
            .unwrap();
        assert_eq!(t.path(g), vec![d, s, c, g]);
        assert!(t.is_within(g, d) && t.is_within(g, s) && t.is_within(g, g));
        assert!(!t.is_within(g, s2) && !t.is_within(s, g));
        // Re-inserting the same node is a no-op; a conflicting one is an error.
        assert_eq!(t.insert("640202001", "长胜街道", "street", Some(d)), Ok(s));
        assert!(t.insert("640202001", "别名", "street", Some(d)).is_err());
        assert!(
            t.insert("640202001", "长胜街道", "street", Some(s2))
                .is_err()
        );
    }
}
